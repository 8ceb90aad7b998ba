"""The SHA-256 of a file as the NAS holds it, read over the lean SMB 3 connection
(smb_wire.py): the pending sync's read-back of a file it has just written.

smbprotocol spends more CPU on a read than on a write: its receive thread copies each answer,
checks its AES-CMAC signature over a copy, and decodes it field by field, all in the sync's
one Python process (bench/sync.py: 4 MiB files synced at 0.75x of a raw copy on loopback, with
this read-back 0.86x in the same A/B run). Here reads of `chunk` bytes are pipelined within
the server's credits, each answer is received into a buffer of its own, its signature (GMAC
where the server offers it) checked over that buffer without a copy, and its data hashed in
file order.

What it proves is what the smbprotocol read-back proves: the file opened by name is read from
its first byte to the end of file the server reports at the open, then one byte past that end
must answer STATUS_END_OF_FILE. The writer's handle is still open and shares the file with
readers only (nas_new_file.py), so nothing can change it meanwhile; the open must use the
writer's client GUID (Samba fails the writer's close otherwise). A short read ends the hash
there: the size returned is then smaller, which the caller reports as a corrupt copy."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

from hybrid_pipelines.resources.smb_requests import create_body
from hybrid_pipelines.resources.smb_wire import (
    CLOSE,
    CREATE,
    FLAG_ASYNC,
    FLAG_SIGNED,
    HEADER,
    STATUS_PENDING,
    STATUS_SUCCESS,
    WireConnection,
    WireError,
    WireUnsupported,
)

READ = 8
STATUS_END_OF_FILE = 0xC0000011
WINDOW_BYTES = 8 << 20  # reads in flight per file
_READ = struct.Struct("<HBBIQ16sIIIHH")
# FILE_READ_DATA | FILE_READ_ATTRIBUTES | SYNCHRONIZE; shared for read, write and delete (the
# writer's handle holds write and delete access); FILE_OPEN; FILE_NON_DIRECTORY_FILE.
_ACCESS, _SHARE, _OPEN, _NON_DIRECTORY = 0x100081, 0x7, 0x1, 0x40

Progress = Callable[[int], None]


def _create_body(name: str) -> bytes:
    return create_body(name, _ACCESS, 0, _SHARE, _OPEN, _NON_DIRECTORY)


def _read_body(offset: int, length: int, fid: bytes) -> bytes:
    return _READ.pack(49, 80, 0, length, offset, fid, 0, 0, 0, 0, 0) + b"\0"


def hash_file(conn: WireConnection, name: str, chunk: int,
              progress: Progress | None = None) -> tuple[int, str]:
    """(bytes read in order, their SHA-256) of the file `name` (share-relative) on `conn`.
    On any error the connection is left mid-exchange: the caller closes it."""
    opened = conn.exchange_signed(CREATE, _create_body(name))
    if opened.status != STATUS_SUCCESS:
        raise WireError(f"opening {name!r} on the NAS to read it back failed "
                        f"(NT status {opened.status:#x})")
    end = struct.unpack_from("<Q", opened.message, 64 + 48)[0]
    fid = bytes(opened.message[64 + 64: 64 + 80])
    result = _read_to_end(conn, fid, end, chunk, progress)
    closed = conn.exchange_signed(CLOSE, struct.pack("<HHI16s", 24, 0, 0, fid))
    if closed.status != STATUS_SUCCESS:
        raise WireError(f"closing {name!r} failed (NT status {closed.status:#x})")
    return result


def _read_to_end(conn: WireConnection, fid: bytes, end: int, chunk: int,
                 progress: Progress | None) -> tuple[int, str]:
    assert conn.signer is not None
    sha = hashlib.sha256()
    sent: dict[int, tuple[int, int]] = {}  # message id -> (offset, length)
    ready: dict[int, tuple[memoryview, int]] = {}  # offset -> (data, length asked) ahead
    next_send = hashed = extra = 0
    probe_sent = short = False
    while True:
        while not short and next_send < end and next_send - hashed < WINDOW_BYTES:
            length = min(chunk, end - next_send)
            charge = conn.credit_charge(length)
            if conn.credits_free() < charge:
                break
            mid = conn.send_compound([(READ, _read_body(next_send, length, fid), charge)],
                                     credits=charge)[0]
            sent[mid] = (next_send, length)
            next_send += length
        if not short and next_send >= end and not probe_sent and conn.credits_free() >= 1:
            sent[conn.send_compound([(READ, _read_body(end, 1, fid), 1)])[0]] = (end, 1)
            probe_sent = True
        if not sent:
            return hashed + extra, sha.hexdigest()
        for mid, status, message in _answers(conn, sent):
            offset, length = sent.pop(mid)
            if status == STATUS_SUCCESS:
                data_at, _reserved, got = struct.unpack_from("<BBI", message, 64 + 2)
                data = message[data_at: data_at + got]
            elif status == STATUS_END_OF_FILE:
                data = message[:0]
            else:
                raise WireError(f"reading {length} bytes at {offset} failed "
                                f"(NT status {status:#x})")
            if offset == end:  # one byte past the end the open reported: nothing may be there
                extra = len(data)
                continue
            ready[offset] = (data, length)
            while not short and hashed in ready:
                piece, asked = ready.pop(hashed)
                sha.update(piece)
                hashed += len(piece)
                short = len(piece) < asked  # the copy ends early: hash no further
                if progress is not None:
                    progress(len(piece))


def _answers(conn: WireConnection, sent: dict[int, tuple[int, int]]
             ) -> list[tuple[int, int, memoryview]]:
    """The final answers to `sent` messages in the next frame, signatures checked; credits
    granted by every message in it counted."""
    assert conn.signer is not None
    frame = memoryview(conn.receive_frame())
    out = []
    off = 0
    while off < len(frame):
        (_pid, _size, _charge, status, _command, credits, flags, next_command, mid, _res,
         _tree, _session, _sig) = HEADER.unpack_from(frame, off)
        stop = off + next_command if next_command else len(frame)
        conn.mid_limit += credits
        message, off = frame[off:stop], stop
        if mid not in sent or (status == STATUS_PENDING and flags & FLAG_ASYNC):
            continue  # an interim answer, or a break we did not ask about
        if not flags & FLAG_SIGNED or not conn.signer.verify(message, mid):
            raise WireError(f"the SMB server's answer to read {mid} is unsigned or its "
                            "signature is wrong: refusing it")
        out.append((mid, status, message))
    return out


class WireHasher:
    """One thread's lean connection to the share, under the run's client GUID, opened on
    first use. `sha256` returns None when the server needs what the lean client does not do
    (the caller then reads back through smbprotocol); any other error drops the connection,
    and the next call opens a new one."""

    def __init__(self, host: str, port: int, share: str, username: str, password: str,
                 timeout_s: float, client_guid: bytes, chunk: int = 1 << 20):
        self._args = (host, port, share, username, password, timeout_s, client_guid)
        self._chunk = chunk
        self._conn: WireConnection | None = None
        self._unsupported = False

    def sha256(self, name: str, progress: Progress | None = None) -> tuple[int, str] | None:
        if self._unsupported:
            return None
        if self._conn is None:
            conn = WireConnection(*self._args)
            try:
                conn.connect()
            except WireUnsupported:
                self._unsupported = True
                return None
            self._conn = conn
        chunk = min(self._chunk, self._conn.max_read if self._conn.large_mtu else 65536)
        try:
            return hash_file(self._conn, name, chunk, progress)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
