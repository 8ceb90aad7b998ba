"""A realistic network link for the benches: a loopback TCP proxy that adds latency and limits
bandwidth, so a claim measured on loopback can be measured again through what users pay
(the NAS ~0.5 ms / 1 Gb/s away, Firestore ~30 ms away).

Each direction of each connection has its own delay line: a chunk that arrived at time t is
written no earlier than t + rtt/2, and no faster than the bandwidth allows (bytes are paced
after the delay, so a large transfer is bandwidth-bound and a small exchange latency-bound, as
on a real link). t is the kernel's arrival stamp, not the moment the relay woke up to read
it, and the relay sleeps without Linux's 50 us timer slack: before both, the relay added its
own wake-ups to the delay and a "0.5 ms" link measured 0.86 ms a round trip (a Python echo
behind it, 0.09 ms without the link). Now it measures 0.62-0.68 ms: the nominal 0.5 ms, the
echo's own 0.05-0.09 ms and ~0.02 ms of wake-up per hop. One thread relays both directions
of a connection (it was a reader and a writer thread per direction): the relay's own CPU,
which no real link charges the machines at either end, fell from ~245 to ~110-145 us per
round trip (`python bench/_netlink.py` prints the round trips; `hybrid_pipelines_tests/
foundation/test_bench_link.py` checks the bytes, the half-close and the delay's floor). Usage:

    with NetLink("127.0.0.1", smb_port, rtt_ms=0.5, mbit_s=1000) as link:
        connect to ("127.0.0.1", link.port)
"""

from __future__ import annotations

import collections
import ctypes
import select
import socket
import struct
import sys
import threading
import time
from types import TracebackType

NAS_LINK = {"rtt_ms": 0.5, "mbit_s": 1000.0}
FIRESTORE_LINK = {"rtt_ms": 30.0, "mbit_s": 100.0}
CHUNK = 1024 * 1024
_SO_TIMESTAMPNS, _PR_SET_TIMERSLACK = 35, 29  # Linux


def precise_timers() -> None:
    """Linux wakes a sleeping thread up to 50 us late by default (timer slack); 1 ns for the
    calling thread."""
    if sys.platform != "linux":
        return
    try:
        ctypes.CDLL(None).prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _ask_arrival_stamps(sock: socket.socket) -> bool:
    if sys.platform != "linux":
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        return True
    except OSError:
        return False


def _receive(sock: socket.socket, stamped: bool, buf: bytearray) -> tuple[bytes, float]:
    """A chunk and when it arrived (perf_counter time): the kernel's stamp when there is one,
    else now. Read into `buf`, reused: a fresh 1 MiB buffer per chunk cost more CPU than the
    rest of the relay's work on a small message."""
    if not stamped:
        n = sock.recv_into(buf)
        return bytes(buf[:n]), time.perf_counter()
    n, ancillary, _flags, _addr = sock.recvmsg_into([buf], socket.CMSG_SPACE(16))
    now = time.perf_counter()
    data = bytes(buf[:n])
    for level, kind, raw in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(raw) >= 16:
            sec, nsec = struct.unpack("qq", raw[:16])  # CLOCK_REALTIME
            return data, now - max(0.0, time.time() - (sec + nsec / 1e9))
    return data, now


class _Lane:
    """One direction of a connection: chunks held until they are due, then written."""

    def __init__(self, src: socket.socket, dst: socket.socket) -> None:
        self.src, self.dst = src, dst
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.out: memoryview | None = None  # a due chunk the receiver has no room for yet
        self.next_free = 0.0  # when the link has sent what it was given (bandwidth)
        self.eof = self.shut = False
        self.stamped = _ask_arrival_stamps(src)

    def next_send(self) -> float | None:
        return max(self.queue[0][0], self.next_free) if self.queue and self.out is None \
            else None

    def send_due(self, now: float, bytes_per_s: float) -> None:
        while True:
            if self.out is not None:
                try:
                    self.out = self.out[self.dst.send(self.out):]
                except BlockingIOError:
                    return
                if self.out:
                    return
                self.out = None
            start = self.next_send()
            if start is None or start > now:
                break
            data = self.queue.popleft()[1]
            self.out = memoryview(data)
            self.next_free = start + len(data) / bytes_per_s
        if self.eof and not self.queue and not self.shut:
            self.shut = True
            self.dst.shutdown(socket.SHUT_WR)


class _Connection:
    """Both directions of one connection on one thread: read what arrives, hold each chunk
    until it is due, write it without blocking (a receiver with no room holds up neither
    direction). No hand-over between threads: each cost ~60 us of CPU per chunk, which on a
    2-core machine the server and client being measured paid for."""

    def __init__(self, client: socket.socket, upstream: socket.socket, delay_s: float,
                 bytes_per_s: float) -> None:
        for sock in (client, upstream):
            sock.setblocking(False)
        self.lanes = (_Lane(client, upstream), _Lane(upstream, client))
        self.delay_s, self.bytes_per_s = delay_s, bytes_per_s

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        precise_timers()
        buf = bytearray(CHUNK)
        lanes = self.lanes
        try:
            while not all(lane.shut for lane in lanes):
                due = [t for t in (lane.next_send() for lane in lanes) if t is not None]
                wait = max(0.0, min(due) - time.perf_counter()) if due else None
                ready, _room, _ = select.select([ln.src for ln in lanes if not ln.eof],
                                               [ln.dst for ln in lanes if ln.out is not None],
                                               [], wait)
                for lane in lanes:
                    if lane.src in ready:
                        try:
                            data, arrived = _receive(lane.src, lane.stamped, buf)
                        except BlockingIOError:  # readable, then not: nothing to take
                            continue
                        if data:
                            lane.queue.append((arrived + self.delay_s, data))
                        else:
                            lane.eof = True
                now = time.perf_counter()
                for lane in lanes:
                    lane.send_due(now, self.bytes_per_s)
        except OSError:
            pass
        finally:  # its descriptors free for the next connection (select takes fds < 1024)
            for lane in lanes:
                lane.src.close()


class NetLink:
    """Listen on a free loopback port and relay every connection to (host, port) through a
    link of `rtt_ms` round-trip time and `mbit_s` bandwidth in each direction."""

    def __init__(self, host: str, port: int, *, rtt_ms: float, mbit_s: float) -> None:
        self.target = (host, port)
        self.delay_s = rtt_ms / 2000.0
        self.bytes_per_s = mbit_s * 1_000_000 / 8
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._stopped = False

    def __enter__(self) -> NetLink:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._stopped = True
        self._listener.close()
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._sockets.append(sock)
            _Connection(client, upstream, self.delay_s, self.bytes_per_s).start()


def measured_rtt_ms(port: int, samples: int = 20) -> float:
    """Median round trip of a 200-byte echo to 127.0.0.1:port (an echo server, directly or
    through a link): the link's self-check."""
    times = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(samples):
            t0 = time.perf_counter()
            sock.sendall(b"x" * 200)
            got = 0
            while got < 200:
                got += len(sock.recv(CHUNK))
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return times[len(times) // 2]


def _serve_echo() -> None:
    """An echo server in a process of its own, as Samba is: the link's threads and the
    measuring client then share no interpreter lock with it. Prints its port."""
    echo = socket.create_server(("127.0.0.1", 0))
    print(echo.getsockname()[1], flush=True)
    while True:
        conn, _ = echo.accept()
        threading.Thread(target=_echo_on, args=(conn,), daemon=True).start()


def _echo_on(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := conn.recv(CHUNK):
        conn.sendall(data)


if __name__ == "__main__":
    if sys.argv[1:] == ["--echo"]:
        _serve_echo()
    import subprocess

    server = subprocess.Popen([sys.executable, __file__, "--echo"], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        target = int(server.stdout.readline())
        print(f"median rtt to the echo, no link: {measured_rtt_ms(target, 200):.3f} ms")
        for name, spec in (("NAS", NAS_LINK), ("Firestore", FIRESTORE_LINK)):
            with NetLink("127.0.0.1", target, **spec) as lk:
                print(f"median rtt through the {name} link ({spec['rtt_ms']} ms nominal): "
                      f"{measured_rtt_ms(lk.port, 200 if spec['rtt_ms'] < 5 else 20):.3f} ms")
    finally:
        server.kill()
