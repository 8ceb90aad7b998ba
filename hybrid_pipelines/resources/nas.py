"""NAS resource: SMB3 share (smbprotocol) or a local/NFS mount path."""

from __future__ import annotations

from typing import IO, Any

import dagster as dg
from pydantic import PrivateAttr

from hybrid_pipelines.resources.errors import Health, probe_health, require
from hybrid_pipelines.resources.nas_fs import (
    NAS_SENTINEL,
    SMBNAS,
    LocalNAS,
    NASFileSystem,
    NASNotMountedError,
)
from hybrid_pipelines.resources.owned import Owned, OwnsHandles
from hybrid_pipelines.shared.nas_root import NASRoot
from hybrid_pipelines.shared.per_thread import PerThread

__all__ = ["ENV_VARS", "NAS_SENTINEL", "NASResource", "explain_nas_error"]

ENV_VARS = ("HP_NAS_PROTOCOL", "HP_NAS_HOST", "HP_NAS_PORT", "HP_NAS_SHARE",
            "HP_NAS_USERNAME", "HP_NAS_PASSWORD", "HP_NAS_LOCAL_ROOT", "HP_NAS_ROOT_DIR",
            "NAS_ROOT_PATH")


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


_LOGON_STATUSES = {0xC000006D, 0xC000006A, 0xC0000064, 0xC0000072, 0xC0000234}


def explain_nas_error(exc: BaseException) -> str:
    from smbprotocol.exceptions import LogonFailure, SMBConnectionClosed, SMBOSError

    if isinstance(exc, LogonFailure) or (
            isinstance(exc, SMBOSError) and getattr(exc, "ntstatus", None) in _LOGON_STATUSES):
        # A session refused while opening a file arrives as SMBOSError, not LogonFailure.
        return "logon failed: wrong username or password (HP_NAS_USERNAME / HP_NAS_PASSWORD)"
    if isinstance(exc, ValueError) and "Failed to connect" in str(exc):
        return "cannot connect: the SMB server is down or the host/port is wrong"
    if isinstance(exc, SMBConnectionClosed):
        return "the SMB server closed the connection"
    if isinstance(exc, SMBOSError) and exc.errno == 2:
        return ("the share or its root folder does not exist (HP_NAS_SHARE, HP_NAS_ROOT_DIR "
                "or NAS_ROOT_PATH)")
    if isinstance(exc, NASNotMountedError):
        return str(exc)  # names the root, the likely cause and the sentinel to create
    if isinstance(exc, FileNotFoundError):
        return "the mount path does not exist (HP_NAS_LOCAL_ROOT)"
    if isinstance(exc, PermissionError):
        return "permission denied on the mount path"
    return f"{type(exc).__name__}: {exc}"


class NASResource(OwnsHandles, dg.ConfigurableResource):
    """The permanent store. `protocol=smb` talks SMB3 to host:port/share; `protocol=local`
    uses `local_root`, a mounted share (NFS/SMB mount).

    A local root must be a mount point (shared/mounts.py) or hold the sentinel file
    `.hybrid-pipelines-nas` (NAS_SENTINEL): an unmounted mount point is an empty directory,
    which would otherwise pass health ("0 entries"), read as a share whose files were all
    deleted, and fill up with files that belong on the NAS. Where the share is mounted below
    the configured root (a bind mount, a subfolder of the mount), create the sentinel once on
    the mounted share: `touch <local_root>/.hybrid-pipelines-nas`. health() then reports an
    unmarked root as unhealthy with that instruction, and fs() and every later call refuse it.

    Over SMB the resource owns its smbclient connection cache (the sessions it opened):
    a new one in setup_for_execution (or on first use outside Dagster), its sessions closed
    in teardown_after_execution. smbclient's own pool is keyed by server:port and username
    only; a cache per resource object (and a fresh one for every copy) means a changed
    password is really tried, never masked by another resource's session.

    `root_dir` (HP_NAS_ROOT_DIR, or the folder part of the platform's NAS_ROOT_PATH) is the
    folder inside the share (or below the mount) that the jobs own: fs() is rooted there, so
    every path the jobs use lies beneath it and `..` or absolute paths cannot leave it.
    `root()` / `root_forms()` describe that root in the forms the platform may have stored a
    path under it (UNC, smb://, the platform's mount path `mount_path`)."""

    protocol: str = "smb"  # "smb" or "local"; a str so it can come from an EnvVar
    host: str = "127.0.0.1"
    port: int = 445
    share: str = "media"
    username: str = ""
    password: str = ""
    local_root: str = ""
    root_dir: str = ""  # folder inside the share/mount every path lies beneath
    mount_path: str = ""  # where the platform's servers mount root_dir (HP_NAS_MOUNT_PATH)
    timeout_s: float = 10.0

    _connections: Owned[dict[str, Any]] = PrivateAttr(default_factory=Owned)
    _readers: Owned[PerThread[dict[str, Any]]] = PrivateAttr(default_factory=Owned)

    @property
    def address(self) -> str:
        tail = f"/{self.root_dir.strip('/')}" if self.root_dir.strip("/") else ""
        if self.protocol == "local":
            return f"file://{self.local_root}{tail}"
        return f"smb://{self.host}:{self.port}/{self.share}{tail}"

    def root(self) -> NASRoot:
        """The jobs' NAS root (host, port, share, root_dir, mount path), for mapping the
        platform's stored nas_path forms onto it (see NASRoot.forms)."""
        root_dir = self.root_dir.replace("\\", "/").strip("/")
        if self.protocol == "local":
            mount = self.mount_path or (
                f"{self.local_root.rstrip('/')}/{root_dir}" if root_dir else self.local_root)
            return NASRoot("local", root_dir=root_dir, mount_path=mount)
        return NASRoot("smb", host=self.host, port=self.port, share=self.share,
                       root_dir=root_dir, mount_path=self.mount_path)

    def root_forms(self) -> tuple[str, ...]:
        """The prefixes that each mean "the root" (UNC, //host, smb://host[:port], mount)."""
        return self.root().forms()

    def fs(self, connection_cache: dict[str, Any] | None = None) -> NASFileSystem:
        """The NAS as a file system; over SMB on the resource's connection cache, or on
        `connection_cache` (one of the resource's, e.g. reader_connection_cache())."""
        if self.protocol not in ("smb", "local"):
            raise ValueError(f"NAS protocol {self.protocol!r} is not 'smb' or 'local' "
                             "(HP_NAS_PROTOCOL)")
        if self.protocol == "local":
            if not self.local_root:
                raise ValueError("NAS protocol is 'local' but HP_NAS_LOCAL_ROOT is empty")
            return LocalNAS(self.local_root, self.root_dir)
        cache = self.connection_cache() if connection_cache is None else connection_cache
        return SMBNAS(self.host, self.port, self.share, self.username, self.password,
                      self.timeout_s, cache, root_dir=self.root_dir)

    def connection_cache(self) -> dict[str, Any]:
        """The smbclient `connection_cache` this resource owns; pass it to every smbclient
        call made for this resource (SMBNAS and the scans' lean listing do)."""
        return self._connections.get(dict)

    def reader_connection_cache(self) -> dict[str, Any]:
        """The calling thread's own smbclient connection cache (its own SMB connection),
        for reading files. smbprotocol cannot share one connection between threads reading
        at once: each read sizes itself by the credits it sees, and when other threads spend
        them in between, a read can come back empty before the end of the file, which a
        probe takes for a file that shrank (test_probe_readers.py)."""
        return self._readers.get(lambda: PerThread(dict, _log_off)).get()

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._connections.set({})

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        cache = self._connections.take()
        if cache:
            # Logs off and disconnects every session this run opened; a server already gone
            # is not an error at teardown.
            _log_off(cache)
        readers = self._readers.take()
        if readers is not None:
            readers.close()

    def open_reader(self, path: str) -> CountingReader:
        fs = self.fs(self.reader_connection_cache() if self.protocol == "smb" else None)
        entry = fs.stat(path)
        if entry is None or entry.is_dir:
            raise FileNotFoundError(f"NAS file {path!r} not found on {self.address}")
        return CountingReader(fs.open_read(path), path, entry.size)

    def health(self) -> Health:
        def check() -> str:
            fs = self.fs()
            if isinstance(fs, SMBNAS):
                fs.connect()
            entries = fs.list_dir("")
            return f"{len(entries)} entries at the NAS root"

        return probe_health("NAS", self.address, check, explain_nas_error)

    def require_healthy(self) -> None:
        require(self.health(), ENV_VARS)


def _log_off(cache: dict[str, Any]) -> None:
    import smbclient

    smbclient.reset_connection_cache(fail_on_error=False, connection_cache=cache)
