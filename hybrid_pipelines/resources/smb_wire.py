"""A minimal SMB 3 client connection for the scan's pipelined directory listings.

smbprotocol answers each request through a receive thread and decodes every header and body
field by field; a directory listing then costs ~1.8 ms of client CPU, more than the server
spends on it. This connection does only what a listing needs, with one struct call per
header and no thread: negotiate (SMB 3.1.1 with its pre-authentication hash, or 3.0.x),
the session setup through pyspnego (the same NTLM/Kerberos negotiation smbprotocol uses),
signing keys by the SP800-108 KDF, a tree connect, and signed compound requests. Every
response is signature-checked; an unsigned one is refused.

Anything it does not do (SMB 2.x, encryption required by the server or share, DFS, guest
sessions, a refused logon or share) raises WireUnsupported before any listing, and the
caller lists through smbprotocol instead, which then also reports refusals in its usual
words. A closed or silent connection raises SMBConnectionClosed / TimeoutError, which the
NAS retry policy treats as transient.
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from hybrid_pipelines.resources.smb_auth import WireUnsupported, start_auth
from hybrid_pipelines.resources.smb_signing import SIGN_CMAC, SIGN_GMAC, Signer, kdf

HEADER = struct.Struct("<4sHHIHHIIQIIQ16s")  # the 64-byte SMB2 header
PROTOCOL_ID = b"\xfeSMB"
NEGOTIATE, SESSION_SETUP, TREE_CONNECT, CREATE, CLOSE, QUERY_DIRECTORY = 0, 1, 3, 5, 6, 14
FLAG_RESPONSE, FLAG_ASYNC, FLAG_RELATED, FLAG_SIGNED = 0x1, 0x2, 0x4, 0x8
STATUS_SUCCESS, STATUS_PENDING, STATUS_MORE_PROCESSING = 0, 0x103, 0xC0000016
DIALECTS = (0x0311, 0x0302, 0x0300)
CAP_LARGE_MTU = 0x4
_SESSION_GUEST_NULL_ENCRYPT = 0x1 | 0x2 | 0x4
_SHARE_DFS_OR_ENCRYPTED = 0x1 | 0x2 | 0x8000
_SHARE_CAP_DFS = 0x8
_ZERO_SIG = bytes(16)
_UNSOLICITED = 0xFFFFFFFFFFFFFFFF  # oplock/lease breaks: not answers to anything we sent


class WireError(Exception):
    """The server broke the protocol (a bad or missing signature, a malformed answer)."""


def connection_closed(what: str) -> Exception:
    from smbprotocol.exceptions import SMBConnectionClosed

    return SMBConnectionClosed(what)


class Response:
    __slots__ = ("mid", "command", "status", "flags", "session_id", "tree_id", "message")

    def __init__(self, mid: int, command: int, status: int, flags: int, session_id: int,
                 tree_id: int, message: bytes):
        self.mid, self.command, self.status, self.flags = mid, command, status, flags
        self.session_id, self.tree_id, self.message = session_id, tree_id, message

    def body(self) -> memoryview:
        return memoryview(self.message)[64:]


class WireConnection:
    """One TCP connection, one session, one tree. Not thread-safe: one caller at a time."""

    def __init__(self, host: str, port: int, share: str, username: str, password: str,
                 timeout_s: float):
        self.host, self.port, self.share = host, port, share
        self._user, self._password, self.timeout_s = username, password, timeout_s
        self.sock: socket.socket | None = None
        self._buf = bytearray()
        self.next_mid, self.mid_limit = 0, 1  # the sequence window [next_mid, mid_limit)
        self.session_id = self.tree_id = 0
        self.dialect = 0
        self.large_mtu = False
        self.max_transact = self.max_read = self.max_write = 65536
        self.signer: Signer | None = None

    # ------------------------------------------------------------------ set-up

    def connect(self) -> None:
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        except OSError as err:
            # smbprotocol's words, so the NAS error explanation stays the same.
            raise ValueError(f"Failed to connect to '{self.host}:{self.port}': {err}") from err
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            request = self._negotiate_request()
            self._send(request)
            # While the server forks and answers: the client's first authentication token.
            auth = start_auth(self._user, self._password, self.host)
            preauth = self._negotiated(request, self._answer())
            self._session_setup(preauth, *auth)
            self._tree_connect()
        except BaseException:
            self.close()
            raise

    def _negotiate_request(self) -> bytes:
        salt = os.urandom(32)
        fixed = struct.Struct("<HHHHI16sIHH")
        dialects = struct.pack(f"<{len(DIALECTS)}H", *DIALECTS)
        ctx_at = 64 + fixed.size + len(dialects)
        pad = -ctx_at % 8
        preauth = struct.pack("<HHH", 1, 32, 1) + salt  # one hash (SHA-512), a 32-byte salt
        signing = struct.pack("<HHH", 2, SIGN_GMAC, SIGN_CMAC)
        contexts = (struct.pack("<HHI", 1, len(preauth), 0) + preauth + bytes(-len(preauth) % 8)
                    + struct.pack("<HHI", 8, len(signing), 0) + signing)
        # A client GUID of its own: Samba hands a connection under a GUID it already serves
        # to that GUID's smbd process (smb_wire_worker.WorkerWire says what that cost).
        body = fixed.pack(36, len(DIALECTS), 2, 0, CAP_LARGE_MTU, os.urandom(16),
                          ctx_at + pad, 2, 0) + dialects + bytes(pad) + contexts
        self.next_mid = 1
        return self._header(NEGOTIATE, 0, 0, 1, 0, 0, 0, 0) + body

    def _negotiated(self, request: bytes, resp: Response) -> bytes:
        """The server's answer taken in; the pre-authentication hash so far."""
        if resp.status != STATUS_SUCCESS:
            raise WireUnsupported(f"negotiate refused (status {resp.status:#x})")
        b = resp.message
        (_size, _mode, dialect, ctx_count, _guid, caps, max_transact, max_read, max_write,
         _t, _start, _blob_off, _blob_len, ctx_off) = struct.unpack_from("<HHHH16sIIIIQQHHI", b, 64)
        if dialect not in DIALECTS:
            raise WireUnsupported(f"the server chose SMB dialect {dialect:#x}, not SMB 3")
        self.dialect, self.large_mtu = dialect, bool(caps & CAP_LARGE_MTU)
        self.max_transact, self.max_read, self.max_write = max_transact, max_read, max_write
        algorithm = SIGN_CMAC
        hash_value = bytes(64)
        if dialect == 0x0311:
            off = ctx_off
            for _ in range(ctx_count):
                ctype, dlen = struct.unpack_from("<HH", b, off)
                if ctype == 8:
                    count, first = struct.unpack_from("<HH", b, off + 8)
                    if count:
                        algorithm = first
                elif ctype == 1 and struct.unpack_from("<HHH", b, off + 8)[2] != 1:
                    raise WireUnsupported("the server's pre-authentication hash is not SHA-512")
                off += 8 + dlen + (-(8 + dlen) % 8)
            if algorithm not in (SIGN_CMAC, SIGN_GMAC):
                raise WireUnsupported(f"signing algorithm {algorithm} is not AES-CMAC/GMAC")
            for message in (request, resp.message):
                hash_value = hashlib.sha512(hash_value + message).digest()
        self._algorithm = algorithm
        return hash_value

    def _session_setup(self, preauth: bytes, ctx: Any, out: bytes | None) -> None:
        import spnego

        final: Response | None = None
        while out:
            body = struct.pack("<HBBIIHHQ", 25, 0, 2, 0, 0, 88, len(out), 0) + out
            request = self._header(SESSION_SETUP, 1, 0, 64, 0, self.next_mid, 0,
                                   self.session_id) + body
            self.next_mid += 1
            if self.dialect == 0x0311:
                preauth = hashlib.sha512(preauth + request).digest()
            resp = self._exchange(request)
            if resp.status == STATUS_MORE_PROCESSING:
                self.session_id = resp.session_id
                if self.dialect == 0x0311:
                    preauth = hashlib.sha512(preauth + resp.message).digest()
            elif resp.status != STATUS_SUCCESS:
                raise WireUnsupported(f"session setup refused (status {resp.status:#x})")
            else:
                final = resp
            self.session_id = resp.session_id
            _size, flags, off, length = struct.unpack_from("<HHHH", resp.message, 64)
            in_token = bytes(resp.message[off: off + length])
            if final is not None and flags & _SESSION_GUEST_NULL_ENCRYPT:
                raise WireUnsupported("the session is a guest/anonymous one or must be "
                                      "encrypted")
            if ctx.complete:
                break
            try:
                out = ctx.step(in_token)
            except spnego.exceptions.SpnegoError as err:
                raise WireUnsupported(f"authentication failed: {err}") from err
        if final is None or not ctx.session_key:
            raise WireUnsupported("the session setup ended without a session key")
        key = ctx.session_key[:16].ljust(16, b"\0")
        if self.dialect == 0x0311:
            signing_key = kdf(key, b"SMBSigningKey\x00", preauth)
        else:
            signing_key = kdf(key, b"SMB2AESCMAC\x00", b"SmbSign\x00")
            self._algorithm = SIGN_CMAC
        self.signer = Signer(signing_key, self._algorithm)
        self._verify(final, required=True)

    def _tree_connect(self) -> None:
        path = f"\\\\{self.host}\\{self.share}".encode("utf-16-le")
        body = struct.pack("<HHHH", 9, 0, 72, len(path)) + path
        resp = self.exchange_signed(TREE_CONNECT, body)
        if resp.status != STATUS_SUCCESS:
            raise WireUnsupported(f"tree connect to {self.share!r} refused "
                                  f"(status {resp.status:#x})")
        _size, _type, _res, share_flags, share_caps, _access = struct.unpack_from(
            "<HBBIII", resp.message, 64)
        if share_flags & _SHARE_DFS_OR_ENCRYPTED or share_caps & _SHARE_CAP_DFS:
            raise WireUnsupported(f"share {self.share!r} is DFS or needs encryption")
        self.tree_id = resp.tree_id

    # ------------------------------------------------------------------ messages

    @staticmethod
    def _header(command: int, charge: int, flags: int, credits: int, next_command: int,
                mid: int, tree_id: int, session_id: int) -> bytes:
        return HEADER.pack(PROTOCOL_ID, 64, charge, 0, command, credits, flags, next_command,
                           mid, 0, tree_id, session_id, _ZERO_SIG)

    def credits_free(self) -> int:
        return self.mid_limit - self.next_mid

    def credit_charge(self, payload: int) -> int:
        return 1 + (max(payload, 1) - 1) // 65536 if self.large_mtu else 1

    def send_compound(self, messages: Sequence[tuple[int, Any, int]], credits: int = 8
                      ) -> list[int]:
        """Send (command, body, credit charge) messages as one related compound, each signed;
        ask for `credits` more than each charge. A body given as a tuple of parts (a write's
        fields, its data) is copied once, into the message. Returns each message's id."""
        assert self.signer is not None
        out = bytearray()
        mids = []
        last = len(messages) - 1
        for i, (command, body, charge) in enumerate(messages):
            mid = self.next_mid
            if mid + charge > self.mid_limit:
                raise WireError(f"not enough SMB credits ({self.credits_free()} free)")
            self.next_mid += charge
            parts = body if isinstance(body, tuple) else (body,)
            size = 64 + sum(len(p) for p in parts)
            pad = 0 if i == last else -size % 8
            flags = FLAG_SIGNED | (FLAG_RELATED if i else 0)
            msg = out if last == 0 else bytearray()  # one message: no second copy
            msg += self._header(command, charge, flags, charge + credits,
                                0 if i == last else size + pad, mid, self.tree_id,
                                self.session_id)
            for part in parts:
                msg += part
            msg += bytes(pad)
            msg[48:64] = self.signer.signature(mid, False, msg)
            if msg is not out:
                out += msg
            mids.append(mid)
        self._send(out)
        return mids

    def exchange_signed(self, command: int, body: bytes) -> Response:
        mid = self.send_compound([(command, body, 1)])[0]
        while True:
            for resp in self.read():
                if resp.mid == mid:
                    return resp

    def _send(self, message: bytes | bytearray) -> None:
        if self.sock is None:
            raise connection_closed("the SMB connection is closed")
        try:
            self.sock.sendall(struct.pack(">I", len(message)) + message)
        except OSError as err:
            raise connection_closed(f"sending to the SMB server failed: {err}") from err

    def _exchange(self, request: bytes) -> Response:
        """An unsigned request during set-up, and its final answer."""
        self._send(request)
        return self._answer()

    def _answer(self) -> Response:
        while True:
            for resp in self.read(verify=False):
                return resp

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def read(self, verify: bool = True) -> list[Response]:
        """Block until at least one frame arrives; its final answers, signatures checked."""
        frame = self._frame()
        while frame is None:
            self._fill()
            frame = self._frame()
        out = []
        for mid, command, status, flags, session_id, tree_id, message in \
                self.final_answers(frame):
            resp = Response(mid, command, status, flags, session_id, tree_id, message)
            if verify:
                self._verify(resp, required=True)
            out.append(resp)
        return out

    def final_answers(self, frame: Any) -> Iterator[tuple[int, int, int, int, int, int, Any]]:
        """(mid, command, status, flags, session id, tree id, message) of each final answer
        in `frame`, unchecked (interim answers and unsolicited breaks skipped); the credits
        every message in it grants are counted."""
        off, end = 0, len(frame)
        while off < end:
            (_pid, _size, _charge, status, command, credits, flags, next_command, mid, _res,
             tree_id, session_id, _sig) = HEADER.unpack_from(frame, off)
            stop = off + next_command if next_command else end
            self.mid_limit += credits
            if mid != _UNSOLICITED and not (status == STATUS_PENDING and flags & FLAG_ASYNC):
                yield mid, command, status, flags, session_id, tree_id, frame[off:stop]
            off = stop

    def _verify(self, resp: Response, required: bool) -> None:
        assert self.signer is not None
        if not resp.flags & FLAG_SIGNED:
            if required:
                raise WireError(f"the SMB server sent an unsigned answer (message {resp.mid}, "
                                f"status {resp.status:#x}) on a signed session")
            return
        if not self.signer.verify(memoryview(resp.message), resp.mid):
            raise WireError(f"the SMB server's answer to message {resp.mid} has a bad "
                            "signature: refusing it")

    def _frame(self) -> bytes | None:
        buf = self._buf
        if len(buf) < 4:
            return None
        size = int.from_bytes(buf[1:4], "big")
        if len(buf) < 4 + size:
            return None
        frame = bytes(buf[4: 4 + size])
        del buf[: 4 + size]
        return frame

    def _socket_read(self, op: Callable[..., Any], *args: Any) -> Any:
        """`op(socket, *args)` (recv or recv_into); a closed or failing socket raised as
        SMBConnectionClosed, a timeout as TimeoutError."""
        if self.sock is None:
            raise connection_closed("the SMB connection is closed")
        try:
            got = op(self.sock, *args)
        except TimeoutError:
            raise
        except OSError as err:
            raise connection_closed(f"reading from the SMB server failed: {err}") from err
        if not got:
            raise connection_closed("the SMB server closed the connection")
        return got

    def _fill(self) -> None:
        self._buf += self._socket_read(socket.socket.recv, 1 << 20)

    def receive_frame(self) -> bytearray:
        """The next whole frame in a buffer of its own (bulk reads: no copy of the payload
        beyond the socket's own), for callers that parse and check it themselves."""
        size = int.from_bytes(self._receive_exact(4)[1:4], "big")
        return self._receive_exact(size)

    def _receive_exact(self, n: int) -> bytearray:
        out = bytearray(n)
        view = memoryview(out)
        got = min(n, len(self._buf))
        if got:
            view[:got] = self._buf[:got]
            del self._buf[:got]
        while got < n:
            got += self._socket_read(socket.socket.recv_into, view[got:])
        return out

    def answer_waiting(self) -> bool:
        """Some answer has arrived (buffered, or readable on the socket) without waiting."""
        if self.pending_frame():
            return True
        assert self.sock is not None
        return bool(select.select([self.sock], [], [], 0)[0])

    def pending_frame(self) -> bool:
        """A whole frame is already buffered (no need to wait on the socket)."""
        buf = self._buf
        return len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[1:4], "big")

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def describe(self) -> dict[str, Any]:
        return {"dialect": hex(self.dialect), "signing": "GMAC" if self._algorithm == SIGN_GMAC
                else "CMAC", "large_mtu": self.large_mtu}
