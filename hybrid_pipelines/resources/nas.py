"""NAS resource: SMB3 share (smbprotocol) or a local/NFS mount path."""

from __future__ import annotations

import hashlib
from typing import Any

import dagster as dg

from hybrid_pipelines.resources.errors import Health, probe_health, require
from hybrid_pipelines.resources.nas_fs import SMBNAS, CountingReader, LocalNAS, NASFileSystem

ENV_VARS = ("HP_NAS_PROTOCOL", "HP_NAS_HOST", "HP_NAS_PORT", "HP_NAS_SHARE",
            "HP_NAS_USERNAME", "HP_NAS_PASSWORD", "HP_NAS_LOCAL_ROOT")


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
        return "the share or path does not exist (HP_NAS_SHARE)"
    if isinstance(exc, FileNotFoundError):
        return "the mount path does not exist (HP_NAS_LOCAL_ROOT)"
    if isinstance(exc, PermissionError):
        return "permission denied on the mount path"
    return f"{type(exc).__name__}: {exc}"


_CACHES: dict[str, dict[str, Any]] = {}


def _connection_cache(host: str, port: int, username: str, password: str) -> dict[str, Any]:
    """smbclient pools sessions by server:port and username only; keying our pools by the
    credentials too means a changed password is really tried, never masked by an old session."""
    key = hashlib.sha256(f"{host}\0{port}\0{username}\0{password}".encode()).hexdigest()
    return _CACHES.setdefault(key, {})


class NASResource(dg.ConfigurableResource):
    """The permanent store. `protocol=smb` talks SMB3 to host:port/share; `protocol=local`
    uses `local_root`, a mounted share (NFS/SMB mount) or a plain folder."""

    protocol: str = "smb"  # "smb" or "local"; a str so it can come from an EnvVar
    host: str = "127.0.0.1"
    port: int = 445
    share: str = "media"
    username: str = ""
    password: str = ""
    local_root: str = ""
    timeout_s: float = 10.0

    @property
    def address(self) -> str:
        if self.protocol == "local":
            return f"file://{self.local_root}"
        return f"smb://{self.host}:{self.port}/{self.share}"

    def fs(self) -> NASFileSystem:
        if self.protocol not in ("smb", "local"):
            raise ValueError(f"NAS protocol {self.protocol!r} is not 'smb' or 'local' "
                             "(HP_NAS_PROTOCOL)")
        if self.protocol == "local":
            if not self.local_root:
                raise ValueError("NAS protocol is 'local' but HP_NAS_LOCAL_ROOT is empty")
            return LocalNAS(self.local_root)
        return SMBNAS(self.host, self.port, self.share, self.username, self.password,
                      self.timeout_s, _connection_cache(self.host, self.port, self.username,
                                                        self.password))

    def open_reader(self, path: str) -> CountingReader:
        fs = self.fs()
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
            return f"{len(entries)} entries at the share root"

        return probe_health("NAS", self.address, check, explain_nas_error)

    def require_healthy(self) -> None:
        require(self.health(), ENV_VARS)
