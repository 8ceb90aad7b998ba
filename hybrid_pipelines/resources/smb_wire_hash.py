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
    FLAG_SIGNED,
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


class ReadRefused(WireError):
    """The server answered a read with an error: the exchange itself is intact."""


def read_to_end(conn: WireConnection, fid: bytes, end: int, chunk: int,
                progress: Progress | None) -> tuple[int, str]:
    """(bytes read in order, their SHA-256) of the handle `fid`, from its first byte to
    `end`, and one byte past it that must not be there."""
    return ReadBack(conn, fid, chunk, progress).to_end(end)


class ReadBack:
    """Reads of one handle in flight, their data hashed in file order as their answers are
    handed in (`take`): the caller reads the frames, so the same connection can be writing
    the file meanwhile (smb_wire_file.WireNewFile read back while written)."""

    def __init__(self, conn: WireConnection, fid: bytes, chunk: int,
                 progress: Progress | None):
        self._conn, self._fid, self._chunk, self.progress = conn, fid, chunk, progress
        self._sha = hashlib.sha256()
        self.sent: dict[int, tuple[int, int]] = {}  # message id -> (offset, length)
        self._ready: dict[int, tuple[memoryview, int]] = {}  # offset -> (data, asked) ahead
        self._next = self._hashed = self._extra = 0
        self._end: int | None = None  # where the probe was sent
        self._short = False

    def send(self, upto: int, final: bool) -> None:
        """Reads of what is not asked for yet below `upto`, within the window and the
        credits; with `final`, `upto` is the end, and one byte past it is asked for too."""
        conn = self._conn
        while not self._short and self._next < upto and \
                self._next - self._hashed < WINDOW_BYTES:
            length = min(self._chunk, upto - self._next)
            charge = conn.credit_charge(length)
            if conn.credits_free() < charge:
                break
            mid = conn.send_compound([(READ, read_body(self._next, length, self._fid),
                                       charge)], credits=charge)[0]
            self.sent[mid] = (self._next, length)
            self._next += length
        if final and not self._short and self._next >= upto and self._end is None \
                and conn.credits_free() >= 1:
            self.sent[conn.send_compound([(READ, read_body(upto, 1, self._fid), 1)])[0]] = \
                (upto, 1)
            self._end = upto

    def take(self, mid: int, status: int, message: memoryview) -> None:
        """One answer to a read of `sent`."""
        offset, length = self.sent.pop(mid)
        if status == STATUS_SUCCESS:
            data_at, _reserved, got = struct.unpack_from("<BBI", message, 64 + 2)
            data = message[data_at: data_at + got]
        elif status == STATUS_END_OF_FILE:
            data = message[:0]
        else:
            raise ReadRefused(f"read error on the NAS: reading {length} bytes at {offset} "
                              f"failed (NT status {status:#x})")
        if offset == self._end:  # one byte past the end: nothing may be there
            self._extra = len(data)
            return
        self._ready[offset] = (data, length)
        while not self._short and self._hashed in self._ready:
            piece, asked = self._ready.pop(self._hashed)
            self._sha.update(piece)
            self._hashed += len(piece)
            self._short = len(piece) < asked  # the copy ends early: hash no further
            if self.progress is not None:
                self.progress(len(piece))

    @property
    def hashed(self) -> int:
        """Bytes hashed so far, in file order."""
        return self._hashed

    def to_end(self, end: int) -> tuple[int, str]:
        """Everything up to `end` and the byte past it read (reads of frames of this
        connection only from here on); (bytes read in order, their SHA-256)."""
        while True:
            self.send(end, final=True)
            if not self.sent:
                return self._hashed + self._extra, self._sha.hexdigest()
            for mid, status, message in answers(self._conn, self.sent):
                self.take(mid, status, message)


def answers(conn: WireConnection, sent: Container[int]
             ) -> list[tuple[int, int, memoryview]]:
    """The final answers to `sent` messages in the next frame, signatures checked; credits
    granted by every message in it counted."""
    assert conn.signer is not None
    out = []
    for mid, _command, status, flags, _session, _tree, message in conn.final_answers(
            memoryview(conn.receive_frame())):
        if mid not in sent:
            continue  # not an answer to these
        if not flags & FLAG_SIGNED or not conn.signer.verify(message, mid):
            raise WireError(f"the SMB server's answer to read {mid} is unsigned or its "
                            "signature is wrong: refusing it")
        out.append((mid, status, message))
    return out
