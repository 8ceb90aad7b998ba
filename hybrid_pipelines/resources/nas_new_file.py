"""A file being created on the NAS, kept open on one handle from its creation until it is
renamed into place: written, read back whole and renamed through that handle.

Why one handle: over SMB every open and close is a round trip and a good part of a small
file's cost in client CPU (bench/sync.py: a 64 KiB file took 7 SMB requests written, read
back on a second handle and renamed by path; 2 this way). The read-back is as strong: it
is answered by the server from the file it holds, the handle has no client-side cache
(no oplock or lease is asked for) and shares the file with readers only, so no other handle
can change it while it is open. The name is created exclusively (never over a file), and the
rename never replaces one either."""

from __future__ import annotations

import errno
import io
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from hybrid_pipelines.resources.local_rename import rename_noreplace
from hybrid_pipelines.resources.smb_io import ReadWhileWritten

log = logging.getLogger(__name__)


class Reader(Protocol):
    def readinto(self, buffer: Any, /) -> int: ...
    def read(self, size: int = ..., /) -> bytes: ...


class NewFile(Protocol):
    path: str  # share-relative
    # Read back while written by the file itself (create_new(followed=True) on a lean SMB
    # connection): no reader of its own needed; hash_on_server reads what is left.
    reads_back_as_written: bool

    def write(self, data: bytes, /) -> int | None: ...
    def reader(self) -> Reader:
        """The file from its first byte to the end the NAS reports, on this handle."""
    def hash_on_server(self, progress: Callable[[int], None]) -> tuple[int, str] | None:
        """(size, SHA-256) of the file as the NAS holds it, read on this handle where the
        file lives on a lean SMB connection (smb_wire_file.py); None otherwise (a mount,
        smbprotocol's handle): read reader() instead."""
    def rename_and_close(self, dst: str) -> None:
        """Rename to `dst` unless that name is taken (FileExistsError), then close; the
        handle is closed whatever the outcome."""
    def discard(self) -> None:
        """Remove the file this handle created, and close it; nothing once it is closed (a
        renamed file is never touched). Best effort: a stray temporary is reconciled later."""
    def close(self) -> None: ...


class SMBNewFile:
    """`raw` is an smbclient SMBRawIO opened with read, write and delete access."""

    reads_back_as_written = False

    def __init__(self, raw: Any, path: str, share_name: Callable[[str], str]):
        self._raw, self.path, self._share_name = raw, path, share_name

    def hash_on_server(self, progress: Callable[[int], None]) -> None:
        return None  # read back through reader(), on this handle

    def write(self, data: bytes, /) -> int:
        return int(self._raw.write(data))

    def reader(self) -> Reader:
        self._raw.seek(0)
        return ReadWhileWritten(self._raw, owned=False)

    def rename_and_close(self, dst: str) -> None:
        """One round trip: the rename (replace_if_exists off, so the server refuses a taken
        name atomically) and the close as one related compound request."""
        from smbprotocol.file_info import FileRenameInformation

        info = FileRenameInformation()
        info["replace_if_exists"] = False
        info["file_name"] = self._share_name(dst)
        try:
            with name_taken_is_file_exists(dst):
                self._set_info_and_close(info)
        finally:
            self.close()  # a failed rename fails the related close with it

    def discard(self) -> None:
        """Delete-on-close through this handle, then the close, as one compound."""
        from smbprotocol.file_info import FileDispositionInformation

        if self._raw.closed:
            return
        info = FileDispositionInformation()
        info["delete_pending"] = True
        try:
            self._set_info_and_close(info)
        except Exception as exc:  # noqa: BLE001 - the reconcile job removes stale temporaries
            log.warning("could not remove temporary NAS file %s: %s", self.path, exc)
        finally:
            self.close()

    def _set_info_and_close(self, info: Any) -> None:
        """`info` set on this handle and the handle closed, as one related compound."""
        from smbclient._io import SMBFileTransaction, set_info

        with SMBFileTransaction(self._raw) as transaction:
            set_info(transaction, info)
            self._raw.close(transaction=transaction)

    def close(self) -> None:
        if not self._raw.closed:
            self._raw.close()

    def __enter__(self) -> SMBNewFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


NAME_COLLISION = 0xC0000035  # STATUS_OBJECT_NAME_COLLISION


@contextmanager
def name_taken_is_file_exists(path: str) -> Iterator[None]:
    """smbclient's error for a name that is taken, as the FileExistsError a mount gives."""
    from smbprotocol.exceptions import SMBOSError

    try:
        yield
    except SMBOSError as exc:
        if exc.errno == errno.EEXIST or getattr(exc, "ntstatus", None) == NAME_COLLISION:
            raise FileExistsError(errno.EEXIST, "NAS path already exists", path) from exc
        raise


def put_smb(raw: Any, path: str, share_name: Callable[[str], str],
            data: bytes) -> tuple[SMBNewFile, bytes] | None:
    """Create, write `data` and read it back as one related compound request (one round trip
    for a small file); None when `data` does not fit one request each way or the session has
    too few credits for it (the caller then writes it the ordinary way)."""
    from smbclient._io import SMBFileTransaction
    from smbprotocol import MAX_PAYLOAD_SIZE

    conn = raw.fd.connection
    credits = conn.sequence_window["high"] - conn.sequence_window["low"]
    need = 1 + sum(-(-n // MAX_PAYLOAD_SIZE) for n in (len(data), len(data) + 1))
    if not data or len(data) > conn.max_write_size or len(data) + 1 > conn.max_read_size \
            or need > credits:
        return None
    new = SMBNewFile(raw, path, share_name)
    transaction = SMBFileTransaction(raw)
    raw.open(transaction=transaction)
    transaction += raw.fd.write(data, 0, send=False)
    transaction += raw.fd.read(0, len(data) + 1, send=False)
    try:
        with name_taken_is_file_exists(path):
            transaction.commit()
    except BaseException:
        new.discard()  # the create may have succeeded and the write failed
        raise
    _, written, back = transaction.results  # type: ignore[misc]
    raw.seek(written)
    if written != len(data):
        new.discard()
        raise OSError(errno.EIO, f"the NAS took {written} of {len(data)} bytes in one write",
                      path)
    return new, bytes(back)


def put_in_turn(new: NewFile, data: bytes) -> tuple[NewFile, bytes]:
    """put_new one request after another: `data` written, then read back on the handle."""
    try:
        view = memoryview(data)
        while view:
            written = new.write(view)
            if not written:
                raise OSError(errno.EIO, "the NAS accepted no bytes (disk full?)", new.path)
            view = view[written:]
        reader, parts = new.reader(), []
        while part := reader.read(max(len(data) + 1, 1 << 16)):
            parts.append(part)
        return new, b"".join(parts)
    except BaseException:
        new.discard()
        raise


class LocalNewFile:
    """A file on a mounted NAS: an exclusively created descriptor, read back with pread."""

    reads_back_as_written = False

    def __init__(self, full: Path, path: str, resolve: Callable[[str], Path]):
        self.path, self._full, self._resolve = path, full, resolve
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        self._fd: int | None = os.open(full, flags, 0o666)

    def write(self, data: bytes, /) -> int:
        assert self._fd is not None
        return os.write(self._fd, data)

    def reader(self) -> Reader:
        assert self._fd is not None
        fd = self._fd
        return ReadFromStart(lambda offset, buffer: os.preadv(fd, [buffer], offset))

    def hash_on_server(self, progress: Callable[[int], None]) -> None:
        return None  # a mount: read back through reader()

    def rename_and_close(self, dst: str) -> None:
        try:
            rename_noreplace(self._full, self._resolve(dst))
        finally:
            self.close()

    def discard(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self._full)  # created exclusively by this handle, not renamed yet
        except OSError as exc:
            log.warning("could not remove temporary NAS file %s: %s", self.path, exc)
        finally:
            self.close()

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> LocalNewFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReadFromStart(io.RawIOBase):
    """A file read from its first byte through `read_into(offset, buffer) -> bytes read`
    (positional reads; io.RawIOBase supplies read())."""

    def __init__(self, read_into: Callable[[int, Any], int]):
        super().__init__()
        self._read_into, self._offset = read_into, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any, /) -> int:
        n = self._read_into(self._offset, buffer)
        self._offset += n
        return n
