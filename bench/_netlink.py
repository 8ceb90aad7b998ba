"""A realistic network link for the benches: a loopback TCP proxy that adds latency and limits
bandwidth, so a claim measured on loopback can be measured again through what users pay
(the NAS ~0.5 ms / 1 Gb/s away, Firestore ~30 ms away).

Each direction of each connection has its own delay line: a chunk read at time t is written
no earlier than t + rtt/2, and no faster than the bandwidth allows (bytes are paced after the
delay, so a large transfer is bandwidth-bound and a small exchange latency-bound, as on a real
link). Usage:

    with NetLink("127.0.0.1", smb_port, rtt_ms=0.5, mbit_s=1000) as link:
        connect to ("127.0.0.1", link.port)
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from types import TracebackType

NAS_LINK = {"rtt_ms": 0.5, "mbit_s": 1000.0}
FIRESTORE_LINK = {"rtt_ms": 30.0, "mbit_s": 100.0}
CHUNK = 1024 * 1024


class _Direction:
    """One direction of one connection: reader thread -> delay line -> paced writer thread."""

    def __init__(self, src: socket.socket, dst: socket.socket, delay_s: float,
                 bytes_per_s: float) -> None:
        self.src, self.dst = src, dst
        self.delay_s, self.bytes_per_s = delay_s, bytes_per_s
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.cond = threading.Condition()
        self.closed = False

    def start(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._write, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                data = self.src.recv(CHUNK)
                if not data:
                    break
                with self.cond:
                    self.queue.append((time.perf_counter() + self.delay_s, data))
                    self.cond.notify()
        except OSError:
            pass
        with self.cond:
            self.closed = True
            self.cond.notify()

    def _write(self) -> None:
        next_free = 0.0
        try:
            while True:
                with self.cond:
                    while not self.queue and not self.closed:
                        self.cond.wait()
                    if not self.queue:
                        break
                    due, data = self.queue.popleft()
                start = max(due, next_free)
                wait = start - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                self.dst.sendall(data)
                next_free = start + len(data) / self.bytes_per_s
            self.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


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
            _Direction(client, upstream, self.delay_s, self.bytes_per_s).start()
            _Direction(upstream, client, self.delay_s, self.bytes_per_s).start()


def measured_rtt_ms(link: NetLink, samples: int = 20) -> float:
    """A sanity figure for the bench output: median round trip of a 1-byte echo through the
    link, needing an echo server as its target (used by the link's own self-check)."""
    times = []
    with socket.create_connection(("127.0.0.1", link.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(samples):
            t0 = time.perf_counter()
            sock.sendall(b"x")
            sock.recv(1)
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return times[len(times) // 2]


if __name__ == "__main__":
    echo = socket.create_server(("127.0.0.1", 0))

    def _echo() -> None:
        conn, _ = echo.accept()
        while data := conn.recv(CHUNK):
            conn.sendall(data)

    threading.Thread(target=_echo, daemon=True).start()
    with NetLink("127.0.0.1", echo.getsockname()[1], rtt_ms=30, mbit_s=100) as lk:
        print(f"median rtt through a 30 ms link: {measured_rtt_ms(lk):.1f} ms")
