"""bench/_netlink.py, the link every "through the 0.5 ms link" figure is measured through:
bytes arrive intact and in order both ways, a half-close passes through, and nothing comes
back sooner than the link's round trip (a lower bound: load can only add to it, so the
check cannot fail on a busy machine)."""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _netlink import NetLink, _echo_on, measured_rtt_ms  # noqa: E402 - bench/ is not a package


@contextmanager
def _echo_server() -> Iterator[int]:
    """An echo on a free loopback port: answers every connection until it half-closes."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        with conn:  # closed once the client half-closes: that close goes back through
            _echo_on(conn)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def test_bytes_pass_intact_both_ways_and_a_half_close_passes_through() -> None:
    payload = os.urandom(3 * 1024 * 1024 + 7)
    with _echo_server() as port, NetLink("127.0.0.1", port, rtt_ms=0.5, mbit_s=1000) as link, \
            socket.create_connection(("127.0.0.1", link.port), timeout=30) as sock:
        def send() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)  # the echo sees it, closes, and that comes back

        sender = threading.Thread(target=send)
        sender.start()
        got = bytearray()
        while chunk := sock.recv(1 << 20):
            got += chunk
        sender.join()
    assert len(got) == len(payload)
    assert bytes(got) == payload


def test_no_answer_comes_back_sooner_than_the_round_trip() -> None:
    rtt_ms = 20.0
    with _echo_server() as port, NetLink("127.0.0.1", port, rtt_ms=rtt_ms, mbit_s=1000) as link:
        median = measured_rtt_ms(link.port, samples=5)  # every sample is at least the delay
    assert median >= rtt_ms, f"answers came back in {median:.2f} ms through a {rtt_ms} ms link"
