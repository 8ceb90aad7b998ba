"""bench/_netlink.py, the link every "through the 0.5 ms link" figure is measured through:
bytes arrive intact and in order both ways, a half-close passes through, and nothing comes
back sooner than the link's round trip (a lower bound: load can only add to it, so the
check cannot fail on a busy machine)."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _netlink import NetLink  # noqa: E402 - bench/ is not a package


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
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

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
    with _echo_server() as port, NetLink("127.0.0.1", port, rtt_ms=rtt_ms, mbit_s=1000) as link, \
            socket.create_connection(("127.0.0.1", link.port)) as sock:
        fastest = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            sock.sendall(b"x" * 100)
            got = 0
            while got < 100:
                got += len(sock.recv(1024))
            fastest = min(fastest, (time.perf_counter() - t0) * 1000)
    assert fastest >= rtt_ms, f"an answer came back in {fastest:.2f} ms through a {rtt_ms} ms link"
