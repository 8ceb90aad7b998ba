"""The NAS as a small file-system API, over SMB3 (smbprotocol) or a local/NFS mount path.

Both back-ends speak share-relative POSIX paths that went through `safe_relpath`, so nothing
can reach outside the share whichever way the NAS is attached. Neither ever replaces a file
by renaming onto it: `rename` fails with FileExistsError when the target name is taken."""

from __future__ import annotations

import copy
import errno
import os
import shutil
import stat as pystat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

from hybrid_pipelines.resources import smb_wire_worker as wire_worker
from hybrid_pipelines.resources.local_rename import rename_noreplace
from hybrid_pipelines.resources.nas_new_file import (
    LocalNewFile,
    NewFile,
    SMBNewFile,
    name_taken_is_file_exists,
    put_in_turn,
    put_smb,
)
from hybrid_pipelines.resources.smb_io import ReadWhileWritten
from hybrid_pipelines.resources.smb_session import (
    ConnectOnFirstUse,
    connection_key,
    has_live_session,
    register_within,
)
from hybrid_pipelines.resources.smb_wire_worker import WorkerWire
from hybrid_pipelines.shared.mounts import is_mount_point
from hybrid_pipelines.shared.nas_paths import UnsafePathError, safe_relpath, smb_safe_relpath

NAS_SENTINEL = ".hybrid-pipelines-nas"


class NASNotMountedError(OSError):
    """A local NAS root that is neither a mount point nor marked by the sentinel file: most
    likely the share failed to mount, and the bare mount point must not be read as an empty
    share nor filled with files that belong on the NAS."""


def require_mounted(root: Path) -> None:
    """Refuse a local root that does not look like a mounted share (see NAS_SENTINEL)."""
    if not root.is_dir():
        raise FileNotFoundError(errno.ENOENT, "NAS mount path does not exist", str(root))
    if (root / NAS_SENTINEL).is_file() or is_mount_point(root):
        return
    raise NASNotMountedError(
        f"NAS root {root} is not a mount point and holds no {NAS_SENTINEL} file: the share is "
        "probably not mounted, and the bare directory is neither read nor written. Mount the "
        "share at HP_NAS_LOCAL_ROOT; if it is mounted but the root is not itself a mount point "
        "(a subfolder of the mounted share), create the sentinel once on the share: "
        f"touch {root}/{NAS_SENTINEL}")


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
    # while_written: the file may be open for writing by another handle meanwhile (the
    # sync reading back the copy it is writing); otherwise no one may write it while it is read.
    def open_read(self, path: str, *, while_written: bool = False) -> IO[bytes]: ...
    def open_write(self, path: str) -> IO[bytes]: ...
    # A file made for the sync (never over an existing name), open until renamed into place.
    def create_new(self, path: str, *, followed: bool = False) -> NewFile: ...
    # create_new with `data` written and read back (in one exchange where the protocol
    # allows): the open file and the bytes the NAS returned for it.
    def put_new(self, path: str, data: bytes) -> tuple[NewFile, bytes]: ...
    def rename(self, src: str, dst: str) -> None: ...
    def remove(self, path: str) -> None: ...
    def makedirs(self, path: str) -> None: ...


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


class LocalNAS:
    """A NAS attached as a mounted path (NFS/SMB mount), recognised as such on every call: the
    root must be a mount point or hold the NAS_SENTINEL file (see require_mounted), so a share
    that was never mounted, or went away mid-run, is refused instead of read as empty."""

    def __init__(self, root: str, root_dir: str = ""):
        # The mount is checked at `root`; every path lies beneath root/root_dir (NAS_ROOT_PATH
        # or HP_NAS_ROOT_DIR: the folder the jobs own inside the share).
        self.mount_root = Path(root).resolve()
        sub = safe_relpath(root_dir)
        self.root = self.mount_root / sub if sub else self.mount_root
        self.description = f"file://{self.root}"
        require_mounted(self.mount_root)

    def _abs(self, path: str) -> Path:
        require_mounted(self.mount_root)  # one stat: the mount can vanish while a run goes on
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
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed between the listing and its stat: not there any more
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

    def open_read(self, path: str, *, while_written: bool = False) -> IO[bytes]:
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
        # Unbuffered, as over SMB: a write that returned is in the file (follow_read.py).
        return open(self._abs(path), "wb", buffering=0)  # noqa: SIM115 - caller closes

    def create_new(self, path: str, *, followed: bool = False) -> NewFile:
        return LocalNewFile(self._abs(path), safe_relpath(path), self._abs)

    def put_new(self, path: str, data: bytes) -> tuple[NewFile, bytes]:
        return put_in_turn(self.create_new(path), data)

    def rename(self, src: str, dst: str) -> None:
        """Move `src` to `dst` only if `dst` does not exist (FileExistsError otherwise)."""
        rename_noreplace(self._abs(src), self._abs(dst))

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

    worker_wire: WorkerWire | None = None  # with_own_connection's copies have one

    def __init__(self, host: str, port: int, share: str, username: str, password: str,
                 timeout_s: float, cache: dict[str, Any], root_dir: str = ""):
        self.host, self.port, self.share = host, port, share
        # Every path lies beneath this folder of the share (paths are cleaned of `..` and
        # absolute forms by smb_safe_relpath before they are joined to it).
        self.root_dir = smb_safe_relpath(root_dir)
        where = f"{share}/{self.root_dir}" if self.root_dir else share
        self.description = f"smb://{host}:{port}/{where}"
        self._key = connection_key(host, port)
        self._kw: dict[str, Any] = dict(port=port, username=username, password=password,
                                        connection_timeout=timeout_s, connection_cache=cache)

    def with_own_connection(self, client_guid: uuid.UUID) -> tuple[SMBNAS, dict[str, Any]]:
        """The same share and credentials over a TCP connection of its own, under
        `client_guid`, and the connection cache holding it (for smbclient's
        reset_connection_cache). smbprotocol cannot share one connection between threads.
        Connections that open one file at once must share their client GUID: Samba fails the
        writer's close (STATUS_INVALID_PARAMETER) once a connection under another GUID
        opened the file meanwhile (test_sync_follow_read.py)."""
        from smbprotocol.connection import Connection

        def connect() -> Any:
            conn = Connection(client_guid, self.host, self.port, require_signing=True)
            conn.connect(timeout=self._kw["connection_timeout"])
            return conn

        # Made on first use: a worker whose files all go over the lean connection never
        # pays for an smbprotocol session.
        cache = ConnectOnFirstUse(self._key, connect)
        clone = copy.copy(self)
        clone._kw = {**self._kw, "connection_cache": cache}
        # Its new files go over a lean connection (smb_wire_worker.py).
        clone.worker_wire = WorkerWire(self.host, self.port, self.share,
                                       self._kw["username"], self._kw["password"],
                                       self._kw["connection_timeout"])
        return clone, cache

    def _unc(self, path: str) -> str:
        rel = "/".join(p for p in (self.root_dir, smb_safe_relpath(path)) if p)
        tail = "\\" + rel.replace("/", "\\") if rel else ""
        return f"\\\\{self.host}\\{self.share}{tail}"

    def connect(self) -> None:
        kw = {k: v for k, v in self._kw.items()
              if k not in ("connection_timeout", "connection_cache", "port")}
        register_within(self.host, self.port, self._kw["connection_timeout"],
                        self._kw["connection_cache"], self.description, **kw)

    def _live(self) -> dict[str, Any]:
        """smbclient's keywords, once the cache holds a live session (set up here, within
        the timeout: smbclient's own setup would wait for an answer without a limit)."""
        if not has_live_session(self._kw["connection_cache"], self._key):
            self.connect()
        return self._kw

    def list_dir(self, path: str) -> list[NASEntry]:
        import smbclient

        base = safe_relpath(path)
        out = []
        for e in smbclient.scandir(self._unc(base), **self._live()):
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
            st = smbclient.stat(self._unc(path), **self._live())
        except SMBOSError as exc:
            if exc.errno == 2:
                return None
            raise
        import stat as pystat

        is_dir = pystat.S_ISDIR(st.st_mode)
        return NASEntry(safe_relpath(path), is_dir, 0 if is_dir else st.st_size, st.st_mtime)

    def open_read(self, path: str, *, while_written: bool = False) -> IO[bytes]:
        import smbclient

        if not while_written:
            # Shared with other readers (smbclient's default shares nothing: a probe would
            # lock the platform's own downloads of the file out), never with writers.
            return smbclient.open_file(self._unc(path), mode="rb", buffering=0,
                                       share_access="r", **self._live())
        raw = smbclient.open_file(self._unc(path), mode="rb", buffering=0, share_access="rwd",
                                  **self._live())
        return ReadWhileWritten(raw)

    def open_write(self, path: str) -> IO[bytes]:
        import smbclient

        # Unbuffered (a write that returned is on the server) and shared with readers only,
        # so the sync can read a large file back while writing it and no other handle can
        # change what was read (hybrid_cache/follow_read.py).
        return smbclient.open_file(self._unc(path), mode="wb", buffering=0, share_access="r",
                                   **self._live())

    def _new_raw(self, path: str) -> Any:
        from smbclient._io import SMBRawIO
        from smbprotocol.open import FilePipePrinterAccessMask as Access

        # Created exclusively; read and delete access for the read-back and the rename on
        # this handle; shared with readers only (hybrid_cache/follow_read.py).
        return SMBRawIO(self._unc(path), mode="x", share_access="r",
                        desired_access=Access.FILE_READ_DATA | Access.FILE_WRITE_DATA
                        | Access.FILE_READ_ATTRIBUTES | Access.DELETE, **self._live())

    def _share_name(self, path: str) -> str:
        return self._unc(path).split("\\", 4)[-1]

    def create_new(self, path: str, *, followed: bool = False) -> NewFile:
        if self.worker_wire is not None and (new := wire_worker.create_new(
                self.worker_wire, path, self._share_name, follow=followed)):
            return new
        raw = self._new_raw(path)
        with name_taken_is_file_exists(path):
            raw.open()
        return SMBNewFile(raw, safe_relpath(path), self._share_name)

    def put_new(self, path: str, data: bytes) -> tuple[NewFile, bytes]:
        if self.worker_wire is not None and \
                (done := wire_worker.put_new(self.worker_wire, path, self._share_name, data)):
            return done
        raw = self._new_raw(path)
        if (done := put_smb(raw, safe_relpath(path), self._share_name, data)) is not None:
            return done
        with name_taken_is_file_exists(path):
            raw.open()
        return put_in_turn(SMBNewFile(raw, safe_relpath(path), self._share_name), data)

    def rename(self, src: str, dst: str) -> None:
        """Move `src` to `dst` only if no file has that name (compared as the server compares
        names, e.g. case-insensitively): FileExistsError otherwise.

        One round trip: open `src` for delete, rename it with replace_if_exists off and
        close it, as one related compound request, so the server refuses a taken name
        atomically. (smbclient.rename takes four: it opens `dst` first to resolve DFS, and
        Samba answers that open with ACCESS_DENIED on a file without execute permission.)"""
        from smbclient._io import SMBFileTransaction, SMBRawIO, set_info
        from smbprotocol.file_info import FileRenameInformation
        from smbprotocol.open import CreateOptions, FilePipePrinterAccessMask

        raw = SMBRawIO(self._unc(src), mode="r", share_access="rwd",
                       desired_access=FilePipePrinterAccessMask.DELETE,
                       create_options=CreateOptions.FILE_OPEN_REPARSE_POINT, **self._live())
        info = FileRenameInformation()
        info["replace_if_exists"] = False
        info["file_name"] = self._share_name(dst)
        with name_taken_is_file_exists(dst), SMBFileTransaction(raw) as transaction:
            set_info(transaction, info)

    def remove(self, path: str) -> None:
        import smbclient

        entry = self.stat(path)
        if entry is None:
            return
        if entry.is_dir:
            for child in self.list_dir(path):
                self.remove(child.path)
            smbclient.rmdir(self._unc(path), **self._live())
        else:
            smbclient.remove(self._unc(path), **self._live())

    def makedirs(self, path: str) -> None:
        import smbclient
        from smbprotocol.exceptions import SMBConnectionClosed

        try:
            if self.worker_wire is not None and safe_relpath(path) and \
                    wire_worker.makedirs(self.worker_wire, self._share_name(path), path):
                return
        except SMBConnectionClosed:
            pass  # Samba can drop a connection racing another's new folder: smbclient's way
        smbclient.makedirs(self._unc(path), exist_ok=True, **self._live())



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
