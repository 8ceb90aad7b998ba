"""The NAS as a small file-system API, over SMB3 (smbprotocol) or a local/NFS mount path.

Both back-ends speak share-relative POSIX paths that went through `safe_relpath`, so nothing
can reach outside the share whichever way the NAS is attached."""

from __future__ import annotations

import os
import shutil
import stat as pystat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

from hybrid_pipelines.shared.nas_paths import UnsafePathError, safe_relpath, smb_safe_relpath


class NotRegularFileError(UnsafePathError):
    """A named pipe, socket or device on a mounted share: opening it can block forever (a
    FIFO waits for a writer) or read without end (/dev/zero), so it is never opened."""


def _kind(mode: int) -> str:
    if pystat.S_ISFIFO(mode):
        return "a named pipe"
    if pystat.S_ISSOCK(mode):
        return "a socket"
    if pystat.S_ISCHR(mode) or pystat.S_ISBLK(mode):
        return "a device"
    if pystat.S_ISDIR(mode):
        return "a directory"
    return "a special file"


@dataclass(frozen=True)
class NASEntry:
    path: str  # share-relative, '/'-separated
    is_dir: bool
    size: int
    mtime: float  # seconds since the epoch


class NASFileSystem(Protocol):
    description: str

    def list_dir(self, path: str) -> list[NASEntry]: ...
    def stat(self, path: str) -> NASEntry | None: ...
    def open_read(self, path: str) -> IO[bytes]: ...
    def open_write(self, path: str) -> IO[bytes]: ...
    def rename(self, src: str, dst: str) -> None: ...
    def remove(self, path: str) -> None: ...
    def makedirs(self, path: str) -> None: ...


class CountingReader:
    """RangeReader over an open NAS file, counting what was really read."""

    def __init__(self, fh: IO[bytes], name: str, size: int):
        self._fh, self.name, self.size, self.bytes_read = fh, name, size, 0

    def read_at(self, offset: int, length: int) -> bytes:
        if offset >= self.size or length <= 0:
            return b""
        self._fh.seek(offset)
        chunks, want = [], min(length, self.size - offset)
        while want > 0:
            chunk = self._fh.read(want)
            if not chunk:
                break
            chunks.append(chunk)
            want -= len(chunk)
        data = b"".join(chunks)
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> CountingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


class LocalNAS:
    """A NAS attached as a mounted path (NFS/SMB mount) or a plain folder."""

    def __init__(self, root: str):
        self.root = Path(root).resolve()
        self.description = f"file://{self.root}"

    def _abs(self, path: str) -> Path:
        rel = safe_relpath(path)
        full = (self.root / rel) if rel else self.root
        real = Path(os.path.realpath(full))
        if real != self.root and self.root not in real.parents:
            raise UnsafePathError(f"path {path!r} resolves outside the share (symlink?)")
        return full

    def _entry(self, rel: str, st: os.stat_result, is_dir: bool) -> NASEntry:
        return NASEntry(rel, is_dir, 0 if is_dir else st.st_size, st.st_mtime)

    def list_dir(self, path: str) -> list[NASEntry]:
        base = safe_relpath(path)
        out = []
        with os.scandir(self._abs(base)) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                rel = f"{base}/{e.name}" if base else e.name
                out.append(self._entry(rel, st, e.is_dir(follow_symlinks=False)))
        return out

    def stat(self, path: str) -> NASEntry | None:
        full = self._abs(path)
        try:
            st = full.stat()
        except FileNotFoundError:
            return None
        return self._entry(safe_relpath(path), st, full.is_dir())

    def open_read(self, path: str) -> IO[bytes]:
        full = self._abs(path)  # confined: a symlink out of the share is refused here
        self._require_regular(path, os.stat(full).st_mode)
        # O_NONBLOCK so that a regular file swapped for a FIFO after the check cannot block
        # open(); the check is repeated on the opened descriptor, then blocking is restored.
        fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            self._require_regular(path, os.fstat(fd).st_mode)
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb", buffering=0)
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _require_regular(path: str, mode: int) -> None:
        if not pystat.S_ISREG(mode):
            raise NotRegularFileError(
                f"path {path!r} is not a regular file ({_kind(mode)}: named pipe/device/socket "
                "files on the share are never read); remove it from the share or move it out "
                "of the catalogued folders")

    def open_write(self, path: str) -> IO[bytes]:
        return open(self._abs(path), "wb")  # noqa: SIM115 - caller closes

    def rename(self, src: str, dst: str) -> None:
        os.replace(self._abs(src), self._abs(dst))

    def remove(self, path: str) -> None:
        full = self._abs(path)
        if full.is_dir():
            shutil.rmtree(full)
        else:
            full.unlink(missing_ok=True)

    def makedirs(self, path: str) -> None:
        self._abs(path).mkdir(parents=True, exist_ok=True)


class SMBNAS:
    """A NAS over SMB3. Every smbclient call passes port and credentials (its session pool is
    keyed by server:port and reconnects only when it knows them) and a private connection
    cache, so two resources with different credentials never share a session."""

    def __init__(self, host: str, port: int, share: str, username: str, password: str,
                 timeout_s: float, cache: dict[str, Any]):
        self.host, self.port, self.share = host, port, share
        self.description = f"smb://{host}:{port}/{share}"
        self._kw: dict[str, Any] = dict(port=port, username=username, password=password,
                                        connection_timeout=timeout_s, connection_cache=cache)

    def _unc(self, path: str) -> str:
        rel = smb_safe_relpath(path)
        tail = "\\" + rel.replace("/", "\\") if rel else ""
        return f"\\\\{self.host}\\{self.share}{tail}"

    def connect(self) -> None:
        import smbclient

        kw = {k: v for k, v in self._kw.items() if k != "connection_timeout"}
        smbclient.register_session(self.host, connection_timeout=self._kw["connection_timeout"],
                                   **kw)

    def list_dir(self, path: str) -> list[NASEntry]:
        import smbclient

        base = safe_relpath(path)
        out = []
        for e in smbclient.scandir(self._unc(base), **self._kw):
            info = e.smb_info  # already in the listing: no extra round trip per file
            rel = f"{base}/{e.name}" if base else e.name
            is_dir = bool(info.file_attributes & 0x10)
            out.append(NASEntry(rel, is_dir, 0 if is_dir else info.end_of_file,
                                _filetime(info.last_write_time)))
        return out

    def stat(self, path: str) -> NASEntry | None:
        import smbclient
        from smbprotocol.exceptions import SMBOSError

        try:
            st = smbclient.stat(self._unc(path), **self._kw)
        except SMBOSError as exc:
            if exc.errno == 2:
                return None
            raise
        import stat as pystat

        is_dir = pystat.S_ISDIR(st.st_mode)
        return NASEntry(safe_relpath(path), is_dir, 0 if is_dir else st.st_size, st.st_mtime)

    def open_read(self, path: str) -> IO[bytes]:
        import smbclient

        return smbclient.open_file(self._unc(path), mode="rb", buffering=0, **self._kw)

    def open_write(self, path: str) -> IO[bytes]:
        import smbclient

        return smbclient.open_file(self._unc(path), mode="wb", **self._kw)

    def rename(self, src: str, dst: str) -> None:
        import smbclient

        smbclient.replace(self._unc(src), self._unc(dst), **self._kw)

    def remove(self, path: str) -> None:
        import smbclient

        entry = self.stat(path)
        if entry is None:
            return
        if entry.is_dir:
            for child in self.list_dir(path):
                self.remove(child.path)
            smbclient.rmdir(self._unc(path), **self._kw)
        else:
            smbclient.remove(self._unc(path), **self._kw)

    def makedirs(self, path: str) -> None:
        import smbclient

        smbclient.makedirs(self._unc(path), exist_ok=True, **self._kw)


def _filetime(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return (int(value) - 116444736000000000) / 10_000_000


def walk_files(fs: NASFileSystem, path: str = "") -> Iterator[NASEntry]:
    """Every file below `path`, depth first in name order, so a scan can resume after a
    checkpointed path."""
    entries = sorted(fs.list_dir(path), key=lambda e: e.path)
    for entry in entries:
        if entry.is_dir:
            yield from walk_files(fs, entry.path)
        else:
            yield entry


def parent_dir(path: str) -> str:
    return _parent(safe_relpath(path))
