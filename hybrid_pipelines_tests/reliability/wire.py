"""Loopback relays between a client and a real server, for fault tests that must see the
traffic itself: how many GetObject calls really reached the S3 gateway (not the code's own
counters), and the exact moment a request or response is half-way through, so a server can be
killed while that I/O is in flight instead of "somewhere, if the timing is lucky".

Both are real network hops (sockets on 127.0.0.1); nothing in the client or the server is
patched. `S3Relay` speaks just enough HTTP/1.1 to count requests and bytes; `TcpRelay`
forwards raw bytes (gRPC to the Firestore emulator) and counts them."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from hybrid_pipelines.dev.stack.process import LOOPBACK

CHUNK = 64 * 1024
# (request line "METHOD /path?query", bytes of this message so far, "request" | "response")
ByteHook = Callable[[str, int, str], None]


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # unquoted, without the query
    query: str


class _S3Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _S3Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def _relay(self) -> None:
        relay = self.server.relay
        parts = urlsplit(self.path)
        line = f"{self.command} {self.path}"
        with relay.lock:
            relay.seen.append(Seen(self.command, unquote(parts.path), parts.query))
        up = http.client.HTTPConnection(LOOPBACK, relay.upstream_port, timeout=60)
        try:
            try:
                up.putrequest(self.command, self.path, skip_host=True,
                              skip_accept_encoding=True)
                for key, value in self.headers.items():  # Host too: SigV4 signed it
                    up.putheader(key, value)
                up.endheaders()
                self._send_body(up, line)
                resp = up.getresponse()
            except OSError:
                # The server is gone: the client loses its connection, as it would talking
                # to the dead server directly (no made-up HTTP error).
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_response_only(resp.status, resp.reason)
            length = resp.getheader("Content-Length")
            for key, value in resp.getheaders():
                if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                    self.send_header(key, value)
            if length is None and self.command != "HEAD":
                self.close_connection = True  # the end of the body is the end of the socket
            else:
                self.send_header("Content-Length", length or "0")
            self.end_headers()
            if self.command == "HEAD":
                return
            sent = 0
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                try:
                    self.wfile.write(chunk)
                except OSError:  # the client is gone (killed): so is this exchange
                    self.close_connection = True
                    return
                sent += len(chunk)
                relay.hook(line, sent, "response")
            if length is not None and sent < int(length):
                # The server died mid-body: cut the client off as the server did.
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
        finally:
            up.close()

    def _send_body(self, up: http.client.HTTPConnection, line: str) -> None:
        relay = self.server.relay
        length = int(self.headers.get("Content-Length") or 0)
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise RuntimeError("S3Relay forwards only Content-Length request bodies")
        sent = 0
        while sent < length:
            chunk = self.rfile.read(min(CHUNK, length - sent))
            if not chunk:
                raise ConnectionError("client hung up mid-request")
            relay.hook(line, sent, "request")  # `sent` forwarded, this chunk not yet
            up.send(chunk)
            sent += len(chunk)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay


class _S3Server(ThreadingHTTPServer):
    daemon_threads = True
    relay: S3Relay

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a peer killed mid-exchange is what these tests do on purpose


class S3Relay:
    """An HTTP relay on a free loopback port in front of a real S3 gateway. Point a client's
    endpoint_url at `address`; `seen` lists every request that arrived; `hook` (settable) is
    called as request and response bodies flow, from the relay's threads."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.hook: ByteHook = lambda _line, _n, _direction: None
        self._server = _S3Server((LOOPBACK, 0), _S3Handler)
        self._server.relay = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def __enter__(self) -> S3Relay:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def object_gets(self, bucket: str, key_prefix: str) -> dict[str, int]:
        """GetObject requests per key under the prefix (list and multipart calls excluded)."""
        out: dict[str, int] = {}
        start = f"/{bucket}/{key_prefix}"
        with self.lock:
            for s in self.seen:
                if s.method == "GET" and s.path.startswith(start) and "list-type" not in s.query \
                        and "uploads" not in s.query and "uploadId" not in s.query:
                    key = s.path[len(bucket) + 2:]
                    out[key] = out.get(key, 0) + 1
        return out

    def upload_parts(self) -> int:
        with self.lock:
            return sum(1 for s in self.seen if s.method == "PUT" and "partNumber=" in s.query)


class TcpRelay:
    """Raw TCP relay on a free loopback port to `upstream_port`. `on_upstream(total)` is called
    with the running count of client-to-server bytes, before each piece is forwarded; it may
    kill the server, and the relay then drops that connection as a dead server would.

    `answers_passed` (settable; None: all): on each connection, forward only that many of the
    server's SMB messages (4-byte length-prefixed frames) and withhold the rest, the
    connection kept open: a server that stopped answering it without hanging up."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.answers_passed: int | None = None
        self.withheld = 0  # bytes of answers not forwarded
        self.to_server = 0
        self.lock = threading.Lock()
        self.on_upstream: Callable[[int], None] = lambda _n: None
        self._listener = socket.create_server((LOOPBACK, 0))
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def __enter__(self) -> TcpRelay:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._listener.close()
        for s in list(self._socks):
            _close(s)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection((LOOPBACK, self.upstream_port), timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)  # nothing listens: refuse, as the dead server itself would
                continue
            self._socks += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False),
                             daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        frames = _Frames()
        try:
            while data := src.recv(CHUNK if not upstream else 1024):
                if upstream:
                    with self.lock:
                        self.to_server += len(data)
                        total = self.to_server
                    self.on_upstream(total)
                elif self.answers_passed is not None:
                    passed = frames.cut(data, self.answers_passed)
                    with self.lock:
                        self.withheld += len(data) - len(passed)
                    data = passed
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)


class _Frames:
    """Counts length-prefixed frames (SMB over TCP: a 4-byte big-endian length, then that many
    bytes) across the pieces of one direction of a connection."""

    def __init__(self) -> None:
        self.complete = 0
        self._left = 0  # bytes of the current frame still to come
        self._header = b""

    def cut(self, data: bytes, frames: int) -> bytes:
        """The part of `data` that belongs to the first `frames` frames."""
        end = 0
        while end < len(data) and self.complete < frames:
            if self._left == 0:
                need = 4 - len(self._header)
                self._header += data[end:end + need]
                end += min(need, len(data) - end)
                if len(self._header) < 4:
                    break
                self._left = int.from_bytes(self._header, "big") & 0xFFFFFF
                self._header = b""
            take = min(self._left, len(data) - end)
            end += take
            self._left -= take
            if self._left == 0:
                self.complete += 1
        return data[:end]


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
