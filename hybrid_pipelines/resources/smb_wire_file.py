"""A new file on the NAS created, written, read back and renamed on the copy worker's lean
SMB 3 connection (smb_wire.py; opened in smb_wire_worker.py): the pending sync's NewFile. A
large file is read back while it is written, on the same connection: reads of the bytes whose
writes the server has answered go out between the writes.

smbprotocol spent ~11 ms of client CPU per 4 MiB written (it builds each request field by
field and copies the data several times, all under the sync's one GIL): a raw copy of 24 x
4 MiB files cost the client 0.21-0.27 s of CPU. Here a write is one struct call, one copy of
its data and one signature, and writes are in flight (WINDOW_BYTES) while the next chunk is
read from SeaweedFS.

The guarantees are smbprotocol's (nas_new_file.py): the name is created exclusively (FILE_CREATE:
a taken name raises FileExistsError), shared with readers only; every write's answer is
checked (status and byte count) before the file is read back or renamed; the read-back
(smb_wire_hash.read_to_end) reads the handle from byte 0 to the end written and one byte past
it must be the end of file; the rename never replaces (ReplaceIfExists off); discard deletes
the file through its handle. A refusal the server answers (a write it refuses, a taken name)
leaves the connection usable, so discard can still remove the file. Any other error (a broken
or silent connection, a bad signature) drops the connection: the server then closes the
handle, the temporary file is left to the reconcile job (as after a lost smbprotocol session),
and the next file reconnects."""

from __future__ import annotations

import errno
import logging
import struct
from collections.abc import Callable, Container, Iterator
from contextlib import contextmanager
from typing import Any

from hybrid_pipelines.resources.nas_new_file import ReadFromStart
from hybrid_pipelines.resources.smb_wire import (
    CLOSE,
    STATUS_SUCCESS,
    WireConnection,
    WireError,
)
from hybrid_pipelines.resources.smb_wire_hash import (
    READ,
    STATUS_END_OF_FILE,
    ReadBack,
    ReadRefused,
    answers,
    read_body,
)

log = logging.getLogger(__name__)

WRITE, SET_INFO = 9, 17
WINDOW_BYTES = 8 << 20  # written bytes in flight per file
_WRITE = struct.Struct("<HHIQ16sIIHHI")
_SET_INFO = struct.Struct("<HBBIHHI16s")
_RENAME = struct.Struct("<B7xQI")  # FILE_RENAME_INFORMATION_TYPE_2 before its name
_FILE_INFO, _RENAME_CLASS, _DISPOSITION_CLASS = 1, 10, 13
RELATED_FID = b"\xff" * 16
_ERRNO = {0xC0000035: errno.EEXIST, 0xC0000034: errno.ENOENT, 0xC000003A: errno.ENOENT,
          0xC0000022: errno.EACCES, 0xC000007F: errno.ENOSPC, 0xC0000043: errno.EBUSY,
          0xC0000103: errno.ENOTDIR}

Progress = Callable[[int], None]


def nas_error(status: int, what: str, path: str) -> OSError:
    """The OSError a mount would raise for an NT status (FileExistsError for a taken name)."""
    code = _ERRNO.get(status, errno.EIO)
    err = FileExistsError if code == errno.EEXIST else \
        FileNotFoundError if code == errno.ENOENT else OSError
    return err(code, f"{what} failed on the NAS (NT status {status:#010x})", path)


def close_body(fid: bytes) -> bytes:
    return struct.pack("<HHI16s", 24, 0, 0, fid)


def _set_info_body(info_class: int, buffer: bytes, fid: bytes) -> bytes:
    return _SET_INFO.pack(33, _FILE_INFO, info_class, len(buffer), 64 + 32, 0, 0, fid) + buffer


def write_body(offset: int, data: Any, fid: bytes) -> tuple[bytes, Any]:
    return _WRITE.pack(49, 64 + 48, len(data), offset, fid, 0, 0, 0, 0, 0), data


class WireNewFile:
    """nas_new_file.NewFile on `conn`, for the file `path` it has just created as `fid`.
    `drop` closes the connection after an error. With `follow`, the file is read back while
    it is written: reads of what the server has confirmed go out between the writes, on the
    same connection, and hash_on_server reads only what is left."""

    def __init__(self, conn: WireConnection, fid: bytes, path: str,
                 share_name: Callable[[str], str], drop: Callable[[], None], chunk: int,
                 follow: bool = False, written: int = 0):
        self.path, self._conn, self._fid = path, conn, fid
        self._share_name, self._drop, self._chunk = share_name, drop, chunk
        self._written = written  # bytes sent (and answered, when given here)
        self._pending: dict[int, tuple[int, int]] = {}  # write id -> (offset, bytes)
        self._pending_bytes = 0
        self._closed = False
        read_chunk = min(chunk, conn.max_read if conn.large_mtu else 65536)
        self._back = ReadBack(conn, fid, read_chunk, None)
        self.reads_back_as_written = follow

    @contextmanager
    def _on_wire(self) -> Iterator[WireConnection]:
        """The connection for one exchange; any error leaves it mid-exchange: dropped."""
        if self._closed:
            raise ValueError(f"NAS file {self.path} is closed")
        try:
            yield self._conn
        except BaseException as exc:
            if not self._still_usable(self._conn, exc):
                self._closed = True
                self._drop()
            raise

    def _still_usable(self, conn: WireConnection, exc: BaseException) -> bool:
        """Whether the connection (and so this handle: discard removes the file) survives
        `exc` once the answers still due are taken: yes after a refusal the server answered
        (an NT status) or an error from outside the wire (the caller's progress callback: a
        lost lease, a stopping run); no after a broken, silent or badly signed connection."""
        from smbprotocol.exceptions import SMBConnectionClosed

        broken = (TimeoutError, SMBConnectionClosed)
        if not isinstance(exc, Exception) or isinstance(exc, broken) \
                or isinstance(exc, WireError) and not isinstance(exc, ReadRefused):
            return False
        try:
            self._drain(conn)
        except Exception:  # noqa: BLE001 - then it is not usable: dropped by the caller
            return False
        return True

    def write(self, data: Any, /) -> int:
        view = memoryview(data).cast("B")
        with self._on_wire() as conn:
            step = min(conn.max_write, self._chunk) if conn.large_mtu else 65536
            while view:
                n = min(len(view), step)
                while self._in_flight() and (
                        conn.credits_free() < conn.credit_charge(n)
                        or self._pending and self._pending_bytes + n > WINDOW_BYTES):
                    self._settle(conn)
                if conn.large_mtu:  # nothing in flight: as much as the credits allow
                    n = min(n, max(1, conn.credits_free()) << 16)
                charge = conn.credit_charge(n)
                mid = conn.send_compound(
                    [(WRITE, write_body(self._written, view[:n], self._fid), charge)],
                    credits=charge)[0]
                self._pending[mid] = (self._written, n)
                self._pending_bytes += n
                self._written += n
                view = view[n:]
                while self.reads_back_as_written and self._in_flight() and \
                        conn.answer_waiting():
                    self._settle(conn)  # answers already here: confirmed bytes read back
        return len(data)

    @property
    def read_back_bytes(self) -> int:
        """Bytes read back and hashed so far (during the writes, with `follow`)."""
        return self._back.hashed

    def _in_flight(self) -> bool:
        return bool(self._pending or self._back.sent)

    def _confirmed(self) -> int:
        """The end of the bytes every write below has been answered for."""
        return min((offset for offset, _ in self._pending.values()), default=self._written)

    def _settle(self, conn: WireConnection) -> None:
        """The answers in the next frame: each write must have taken all its bytes; reads
        are hashed in order. After a failure the rest of the frame is only taken off the
        books, then the failure is raised."""
        failure: Exception | None = None
        for mid, status, message in answers(conn, _Either(self._pending, self._back.sent)):
            if failure is not None:
                self._pending.pop(mid, None)
                self._back.sent.pop(mid, None)
                continue
            try:
                if mid in self._pending:
                    self._check_write(mid, status, message)
                else:
                    self._back.take(mid, status, message)
            except Exception as exc:  # noqa: BLE001 - raised once the frame is taken
                failure = exc
        if failure is not None:
            raise failure
        if self.reads_back_as_written:
            self._back.send(self._confirmed(), final=False)

    def _check_write(self, mid: int, status: int, message: Any) -> None:
        asked = self._pending.pop(mid)[1]
        self._pending_bytes -= asked
        if status != STATUS_SUCCESS:
            raise nas_error(status, f"writing {asked} bytes", self.path)
        if (took := struct.unpack_from("<I", message, 64 + 4)[0]) != asked:
            raise OSError(errno.EIO, f"the NAS took {took} of {asked} bytes in one write",
                          self.path)

    def _all_written(self, conn: WireConnection) -> None:
        while self._pending:
            self._settle(conn)

    def _drain(self, conn: WireConnection) -> None:
        """Every answer still due taken and dropped (before a close, or after a failure)."""
        while self._in_flight():
            for mid, _, _ in answers(conn, _Either(self._pending, self._back.sent)):
                self._pending.pop(mid, None)
                self._back.sent.pop(mid, None)

    def hash_on_server(self, progress: Progress) -> tuple[int, str]:
        with self._on_wire() as conn:
            self._all_written(conn)
            self._back.progress = progress
            return self._back.to_end(self._written)

    def reader(self) -> ReadFromStart:
        with self._on_wire() as conn:
            self._all_written(conn)
            self._drain(conn)
        return ReadFromStart(self._read_into)

    def _read_into(self, offset: int, buffer: Any) -> int:
        with self._on_wire() as conn:
            length = min(len(buffer), self._chunk, conn.max_read if conn.large_mtu else 65536)
            charge = conn.credit_charge(length)
            mid = conn.send_compound([(READ, read_body(offset, length, self._fid), charge)],
                                     credits=charge)[0]
            status, message = all_answers(conn, {mid: 0})[mid]
            if status == STATUS_END_OF_FILE:
                return 0
            if status != STATUS_SUCCESS:
                raise nas_error(status, f"reading {length} bytes at {offset}", self.path)
            data_at, _reserved, n = struct.unpack_from("<BBI", message, 64 + 2)
            buffer[:n] = message[data_at: data_at + n]
            return int(n)

    def rename_and_close(self, dst: str) -> None:
        info = self._share_name(dst).replace("/", "\\").encode("utf-16-le")
        buffer = _RENAME.pack(0, 0, len(info)) + info  # ReplaceIfExists off
        status = self._set_info_and_close(_RENAME_CLASS, buffer)
        if status != STATUS_SUCCESS:
            raise nas_error(status, f"renaming to {dst!r}", self.path)

    def discard(self) -> None:
        if self._closed:
            return
        try:
            status = self._set_info_and_close(_DISPOSITION_CLASS, b"\x01")  # delete on close
            if status != STATUS_SUCCESS:
                log.warning("could not remove temporary NAS file %s (NT status %#x)",
                            self.path, status)
        except Exception as exc:  # noqa: BLE001 - the reconcile job removes stale temporaries
            log.warning("could not remove temporary NAS file %s: %s", self.path, exc)

    def _set_info_and_close(self, info_class: int, buffer: bytes) -> int:
        """`buffer` set on the handle, then the handle closed, as one related compound; the
        set-info's status. The handle is closed whatever it was."""
        with self._on_wire() as conn:
            self._all_written(conn)
            self._drain(conn)
            sent = dict.fromkeys(conn.send_compound([
                (SET_INFO, _set_info_body(info_class, buffer, self._fid), 1),
                (CLOSE, close_body(RELATED_FID), 1)]), 0)
            got = all_answers(conn, sent)
            (set_status, _), (close_status, _) = (got[mid] for mid in sent)
            if close_status != STATUS_SUCCESS:  # a failed set-info fails the related close
                closed = conn.exchange_signed(CLOSE, close_body(self._fid))
                if closed.status != STATUS_SUCCESS:
                    raise nas_error(closed.status, "closing", self.path)
            self._closed = True
            return set_status

    def close(self) -> None:
        if self._closed:
            return
        with self._on_wire() as conn:
            self._all_written(conn)
            self._drain(conn)
            self._closed = True
            closed = conn.exchange_signed(CLOSE, close_body(self._fid))
            if closed.status != STATUS_SUCCESS:
                raise nas_error(closed.status, "closing", self.path)

    def __enter__(self) -> WireNewFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Either:
    """`mid in` one of two sets of message ids (writes and reads in flight at once)."""

    def __init__(self, first: Container[int], second: Container[int]):
        self._first, self._second = first, second

    def __contains__(self, mid: object) -> bool:
        return mid in self._first or mid in self._second


def all_answers(conn: WireConnection, sent: dict[int, Any]) -> dict[int, tuple[int, Any]]:
    """The final answers to every message of `sent`: {mid: (status, message)}."""
    waiting, got = dict(sent), {}
    while waiting:
        for mid, status, message in answers(conn, waiting):
            del waiting[mid]
            got[mid] = (status, message)
    return got
