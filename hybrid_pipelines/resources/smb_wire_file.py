"""A new file on the NAS created, written, read back and renamed on the copy worker's lean
SMB 3 connection (smb_wire.py), and the folders it goes into: the pending sync's NewFile for
files it does not read back while writing them (those stay with smbprotocol, whose writes are
on the server when they return, as the reader following them needs).

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
import io
import logging
import struct
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hybrid_pipelines.resources.nas_new_file import put_in_turn
from hybrid_pipelines.resources.smb_requests import create_body
from hybrid_pipelines.resources.smb_wire import (
    CLOSE,
    CREATE,
    STATUS_SUCCESS,
    WireConnection,
    WireUnsupported,
)
from hybrid_pipelines.resources.smb_wire_hash import (
    READ,
    answers,
    read_body,
    read_to_end,
)
from hybrid_pipelines.shared.nas_paths import safe_relpath

log = logging.getLogger(__name__)

WRITE, SET_INFO = 9, 17
WINDOW_BYTES = 8 << 20  # written bytes in flight per file
_WRITE = struct.Struct("<HHIQ16sIIHHI")
_SET_INFO = struct.Struct("<HBBIHHI16s")
_RENAME = struct.Struct("<B7xQI")  # FILE_RENAME_INFORMATION_TYPE_2 before its name
_FILE_INFO, _RENAME_CLASS, _DISPOSITION_CLASS = 1, 10, 13
_RELATED_FID = b"\xff" * 16
# FILE_READ_DATA | FILE_WRITE_DATA | FILE_READ_ATTRIBUTES | DELETE (smbprotocol's mode "x"
# with nas_fs.SMBNAS._new_raw's access); shared with readers only; FILE_CREATE;
# FILE_NON_DIRECTORY_FILE.
_ACCESS, _SHARE, _CREATE_NEW, _NON_DIRECTORY = 0x10083, 0x1, 0x2, 0x40
_ERRNO = {0xC0000035: errno.EEXIST, 0xC0000034: errno.ENOENT, 0xC000003A: errno.ENOENT,
          0xC0000022: errno.EACCES, 0xC000007F: errno.ENOSPC, 0xC0000043: errno.EBUSY,
          0xC0000103: errno.ENOTDIR}
_PATH_NOT_FOUND, _NAME_COLLISION = 0xC000003A, 0xC0000035
# smbclient.mkdir's FILE_CREATE (write data, attributes and EAs; shared with nobody), and a
# FILE_OPEN to check a taken name (read attributes, shared with all); FILE_DIRECTORY_FILE.
_MKDIR_ACCESS, _STAT_ACCESS, _OPEN, _DIRECTORY_FILE, _ATTR_DIRECTORY = 0x112, 0x80, 1, 1, 0x10

Progress = Callable[[int], None]


def nas_error(status: int, what: str, path: str) -> OSError:
    """The OSError a mount would raise for an NT status (FileExistsError for a taken name)."""
    code = _ERRNO.get(status, errno.EIO)
    err = FileExistsError if code == errno.EEXIST else \
        FileNotFoundError if code == errno.ENOENT else OSError
    return err(code, f"{what} failed on the NAS (NT status {status:#010x})", path)


def _close_body(fid: bytes) -> bytes:
    return struct.pack("<HHI16s", 24, 0, 0, fid)


def _set_info_body(info_class: int, buffer: bytes, fid: bytes) -> bytes:
    return _SET_INFO.pack(33, _FILE_INFO, info_class, len(buffer), 64 + 32, 0, 0, fid) + buffer


def _write_body(offset: int, data: Any, fid: bytes) -> tuple[bytes, Any]:
    return _WRITE.pack(49, 64 + 48, len(data), offset, fid, 0, 0, 0, 0, 0), data


class WireNewFile:
    """nas_new_file.NewFile on `conn`, for the file `path` (share-relative `name`) it has just
    created as `fid`. `drop` closes the connection after an error."""

    def __init__(self, conn: WireConnection, fid: bytes, path: str,
                 share_name: Callable[[str], str], drop: Callable[[], None], chunk: int):
        self.path, self._conn, self._fid = path, conn, fid
        self._share_name, self._drop, self._chunk = share_name, drop, chunk
        self._written = 0  # bytes sent
        self._pending: dict[int, int] = {}  # write message id -> bytes it carries
        self._pending_bytes = 0
        self._closed = False

    @contextmanager
    def _on_wire(self) -> Iterator[WireConnection]:
        """The connection for one exchange; any error leaves it mid-exchange: dropped."""
        if self._closed:
            raise ValueError(f"NAS file {self.path} is closed")
        try:
            yield self._conn
        except BaseException as exc:
            if not getattr(exc, "nothing_in_flight", False):
                self._closed = True
                self._drop()
            raise

    def write(self, data: Any, /) -> int:
        view = memoryview(data).cast("B")
        with self._on_wire() as conn:
            step = min(conn.max_write, self._chunk) if conn.large_mtu else 65536
            while view:
                n = min(len(view), step)
                while self._pending and (conn.credits_free() < conn.credit_charge(n)
                                         or self._pending_bytes + n > WINDOW_BYTES):
                    self._settle_writes(conn)
                if conn.large_mtu:  # nothing in flight: as much as the credits allow
                    n = min(n, max(1, conn.credits_free()) << 16)
                charge = conn.credit_charge(n)
                mid = conn.send_compound(
                    [(WRITE, _write_body(self._written, view[:n], self._fid), charge)],
                    credits=charge)[0]
                self._pending[mid] = n
                self._pending_bytes += n
                self._written += n
                view = view[n:]
        return len(data)

    def _settle_writes(self, conn: WireConnection) -> None:
        """The answers of the writes in the next frame: each must have taken all its bytes."""
        for mid, status, message in answers(conn, self._pending):
            asked = self._pending.pop(mid)
            self._pending_bytes -= asked
            took = struct.unpack_from("<I", message, 64 + 4)[0] if status == 0 else 0
            if status != STATUS_SUCCESS or took != asked:
                refused = nas_error(status, f"writing {asked} bytes", self.path) if status \
                    else OSError(errno.EIO, f"the NAS took {took} of {asked} bytes in one "
                                 "write", self.path)
                _all_answers(conn, self._pending)  # the connection stays usable: discard
                self._pending.clear()
                refused.nothing_in_flight = True  # type: ignore[attr-defined]
                raise refused

    def _all_written(self, conn: WireConnection) -> None:
        while self._pending:
            self._settle_writes(conn)

    def hash_on_server(self, progress: Progress) -> tuple[int, str]:
        with self._on_wire() as conn:
            self._all_written(conn)
            chunk = min(self._chunk, conn.max_read if conn.large_mtu else 65536)
            return read_to_end(conn, self._fid, self._written, chunk, progress)

    def reader(self) -> _WireReader:
        with self._on_wire() as conn:
            self._all_written(conn)
        return _WireReader(self)

    def _read_at(self, offset: int, length: int) -> bytes:
        with self._on_wire() as conn:
            length = min(length, self._chunk, conn.max_read if conn.large_mtu else 65536)
            charge = conn.credit_charge(length)
            mid = conn.send_compound([(READ, read_body(offset, length, self._fid), charge)],
                                     credits=charge)[0]
            status, message = _all_answers(conn, {mid: 0})[mid]
            if status == 0xC0000011:  # STATUS_END_OF_FILE
                return b""
            if status != STATUS_SUCCESS:
                raise nas_error(status, f"reading {length} bytes at {offset}", self.path)
            data_at, _reserved, n = struct.unpack_from("<BBI", message, 64 + 2)
            return bytes(message[data_at: data_at + n])

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
            sent = dict.fromkeys(conn.send_compound([
                (SET_INFO, _set_info_body(info_class, buffer, self._fid), 1),
                (CLOSE, _close_body(_RELATED_FID), 1)]), 0)
            got = _all_answers(conn, sent)
            (set_status, _), (close_status, _) = (got[mid] for mid in sent)
            if close_status != STATUS_SUCCESS:  # a failed set-info fails the related close
                closed = conn.exchange_signed(CLOSE, _close_body(self._fid))
                if closed.status != STATUS_SUCCESS:
                    raise nas_error(closed.status, "closing", self.path)
            self._closed = True
            return set_status

    def close(self) -> None:
        if self._closed:
            return
        with self._on_wire() as conn:
            self._all_written(conn)
            self._closed = True
            closed = conn.exchange_signed(CLOSE, _close_body(self._fid))
            if closed.status != STATUS_SUCCESS:
                raise nas_error(closed.status, "closing", self.path)

    def __enter__(self) -> WireNewFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _all_answers(conn: WireConnection, sent: dict[int, Any]) -> dict[int, tuple[int, Any]]:
    """The final answers to every message of `sent`: {mid: (status, message)}."""
    waiting, got = dict(sent), {}
    while waiting:
        for mid, status, message in answers(conn, waiting):
            del waiting[mid]
            got[mid] = (status, message)
    return got


class _WireReader(io.RawIOBase):
    """The new file from its first byte, one read request at a time (put_in_turn's read)."""

    def __init__(self, file: WireNewFile):
        super().__init__()
        self._file, self._offset = file, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any, /) -> int:
        data = self._file._read_at(self._offset, len(buffer))
        buffer[: len(data)] = data
        self._offset += len(data)
        return len(data)


class WorkerWire:
    """A sync worker's lean connection to the share, opened on first use. An error on it
    drops it (close), and the next file opens a new one.

    Under a client GUID of its own, not the run's: no other connection opens its files, and
    Samba hands a new connection under a GUID it already serves to that GUID's smbd process
    (SMB 3 multichannel), where the session setup of a lean connection went unanswered until
    the connection timeout in 2 of 16 runs of 300 x 64 KiB (0 of 16 under its own GUID)."""

    def __init__(self, host: str, port: int, share: str, username: str, password: str,
                 timeout_s: float, chunk: int = 1 << 20):
        self._args = (host, port, share, username, password, timeout_s, uuid.uuid4().bytes)
        self._chunk = chunk
        self._conn: WireConnection | None = None
        self._unsupported = False

    @property
    def chunk(self) -> int:
        return self._chunk

    def connection(self) -> WireConnection | None:
        """This thread's lean connection, opened on first use; None where the server needs
        what the lean client does not do."""
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
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def create_new(lean: WorkerWire, path: str, share_name: Callable[[str], str]
               ) -> WireNewFile | None:
    """`path` created exclusively on the worker's lean connection; None where the server
    needs what the lean client does not do (the caller then uses smbprotocol)."""
    name, path = share_name(path), safe_relpath(path)  # refused names raise first
    if (conn := lean.connection()) is None:
        return None
    try:
        opened = conn.exchange_signed(CREATE, _create_new_body(name))
    except BaseException:
        lean.close()
        raise
    if opened.status != STATUS_SUCCESS:
        raise nas_error(opened.status, "creating the file", path)
    return WireNewFile(conn, bytes(opened.message[128:144]), path, share_name, lean.close,
                       lean.chunk)


def put_new(lean: WorkerWire, path: str, share_name: Callable[[str], str], data: bytes
            ) -> tuple[WireNewFile, bytes] | None:
    """Create, write `data` and read it back as one related compound (one round trip); None
    when the lean connection cannot be used or `data` does not fit one request each way."""
    name, path = share_name(path), safe_relpath(path)  # refused names raise first
    if (conn := lean.connection()) is None:
        return None
    n = len(data)
    charges = (1, conn.credit_charge(n), conn.credit_charge(n + 1))
    if not data or n > conn.max_write or n + 1 > conn.max_read \
            or conn.credits_free() < sum(charges):
        if (new := create_new(lean, path, share_name)) is None:
            return None
        return put_in_turn(new, data)
    try:
        mids = conn.send_compound([
            (CREATE, _create_new_body(name), charges[0]),
            (WRITE, _write_body(0, data, _RELATED_FID), charges[1]),
            (READ, read_body(0, n + 1, _RELATED_FID), charges[2])], credits=sum(charges))
        got = _all_answers(conn, dict.fromkeys(mids, 0))
        (created, opened), (wrote, write_answer), (read, read_answer) = (got[m] for m in mids)
    except BaseException:
        lean.close()
        raise
    if created != STATUS_SUCCESS:
        raise nas_error(created, "creating the file", path)
    new = WireNewFile(conn, bytes(opened[128:144]), path, share_name, lean.close, lean.chunk)
    new._written = n
    try:
        if wrote != STATUS_SUCCESS:
            raise nas_error(wrote, f"writing {n} bytes", path)
        if (took := struct.unpack_from("<I", write_answer, 64 + 4)[0]) != n:
            raise OSError(errno.EIO, f"the NAS took {took} of {n} bytes in one write", path)
        if read != STATUS_SUCCESS:
            raise nas_error(read, f"reading {n} bytes back", path)
        data_at, _reserved, got = struct.unpack_from("<BBI", read_answer, 64 + 2)
        return new, bytes(read_answer[data_at: data_at + got])
    except BaseException:
        new.discard()
        raise


def _create_new_body(name: str) -> bytes:
    return create_body(name, _ACCESS, 0, _SHARE, _CREATE_NEW, _NON_DIRECTORY)


def makedirs(lean: WorkerWire, name: str, path: str) -> bool:
    """The folder `name` (share-relative, backslashes) and the folders above it made where
    missing, on the worker's lean connection; False where it cannot be used.

    Asked as smbclient.mkdir asks: made, and a name taken checked to be a folder. Samba 4.17
    can panic ("Could not unlock share mode") and drop the connection when two connections
    make the same new folder at once (1 to 6 of 30 races of two lean connections here, 0 of
    30 through smbprotocol): the sync makes a run's folders one worker at a time, and
    SMBNAS.makedirs falls back to smbprotocol when the connection is dropped."""
    if (conn := lean.connection()) is None:
        return False
    status = _folder(lean, conn, name, _CREATE_NEW)
    if status == _PATH_NOT_FOUND and "\\" in name:  # a folder above is missing too
        makedirs(lean, name.rsplit("\\", 1)[0], path)
        status = _folder(lean, conn, name, _CREATE_NEW)
    if status == _NAME_COLLISION:  # there already: a folder?
        status = _folder(lean, conn, name, _OPEN)
    if status != STATUS_SUCCESS:
        raise nas_error(status, f"making the folder {name!r}", path)
    return True


def _folder(lean: WorkerWire, conn: WireConnection, name: str, disposition: int) -> int:
    """The status of creating (or opening) the folder `name`, closed again at once."""
    access, share = (_MKDIR_ACCESS, 0) if disposition == _CREATE_NEW else (_STAT_ACCESS, 7)
    try:
        mids = conn.send_compound([
            (CREATE, create_body(name, access, _ATTR_DIRECTORY, share, disposition,
                                 _DIRECTORY_FILE), 1),
            (CLOSE, _close_body(_RELATED_FID), 1)])
        return _all_answers(conn, dict.fromkeys(mids, 0))[mids[0]][0]
    except BaseException:
        lean.close()
        raise
