"""Reading a file back over the lean SMB 3 connection (smb_wire.py): the pending sync's check
of a file it has just written (smb_wire_file.py), on the file's own handle.

smbprotocol spends more CPU on a read than on a write: its receive thread copies each answer,
checks its AES-CMAC signature over a copy, and decodes it field by field, all in the sync's
one Python process. Here reads of `chunk` bytes are pipelined within the server's credits,
each answer is received into a buffer of its own, its signature (GMAC where the server offers
it) checked over that buffer without a copy, and its data hashed in file order.

It reads from the first byte to the end the writer wrote, then one byte past that end must
answer STATUS_END_OF_FILE (a byte there is counted, so the size no longer matches). A short
read ends the hash there: the size returned is then smaller, which the caller reports as a
corrupt copy."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Container

from hybrid_pipelines.resources.smb_wire import (
    FLAG_ASYNC,
    FLAG_SIGNED,
    HEADER,
    STATUS_PENDING,
    STATUS_SUCCESS,
    WireConnection,
    WireError,
)

READ = 8
STATUS_END_OF_FILE = 0xC0000011
WINDOW_BYTES = 8 << 20  # reads in flight per file
_READ = struct.Struct("<HBBIQ16sIIIHH")

Progress = Callable[[int], None]


def read_body(offset: int, length: int, fid: bytes) -> bytes:
    return _READ.pack(49, 80, 0, length, offset, fid, 0, 0, 0, 0, 0) + b"\0"


def read_to_end(conn: WireConnection, fid: bytes, end: int, chunk: int,
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
            mid = conn.send_compound([(READ, read_body(next_send, length, fid), charge)],
                                     credits=charge)[0]
            sent[mid] = (next_send, length)
            next_send += length
        if not short and next_send >= end and not probe_sent and conn.credits_free() >= 1:
            sent[conn.send_compound([(READ, read_body(end, 1, fid), 1)])[0]] = (end, 1)
            probe_sent = True
        if not sent:
            return hashed + extra, sha.hexdigest()
        for mid, status, message in answers(conn, sent):
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


def answers(conn: WireConnection, sent: Container[int]
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
