"""A NAS: Samba serving one share over SMB3 with a user and password, private config only."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from .base import LocalServer
from .process import LOOPBACK, port_open, spawn, wait_until

SHARE = "media"


def samba_available() -> str | None:
    """None when Samba can run here, else why not (for a skip or warning message)."""
    if not shutil.which("smbd") or not shutil.which("smbpasswd"):
        return "Samba is not installed (apt-get install samba)"
    if os.geteuid() != 0:
        return "Samba's private setup needs root (it adds a system user for the share)"
    return None


def _smbd_binary() -> str:
    return shutil.which("smbd") or "/usr/sbin/smbd"


@dataclass
class SambaServer(LocalServer):
    port: int = 0
    username: str = "hpnas"
    password: str = ""
    share: str = SHARE
    name: ClassVar[str] = "samba"

    @property
    def share_dir(self) -> Path:
        return self.root / "share"

    @property
    def conf_path(self) -> Path:
        return self.root / "smb.conf"

    @property
    def address(self) -> str:
        return f"smb://{LOOPBACK}:{self.port}/{self.share}"

    def _write_conf(self) -> None:
        d = self.root
        for sub in ("private", "lock", "state", "cache", "pid", "ncalrpc", "logs"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self.share_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(f"""[global]
  interfaces = {LOOPBACK}/8
  bind interfaces only = yes
  smb ports = {self.port}
  disable netbios = yes
  server min protocol = SMB3
  server signing = mandatory
  server role = standalone server
  map to guest = never
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  unix charset = UTF-8
  private dir = {d}/private
  lock directory = {d}/lock
  state directory = {d}/state
  cache directory = {d}/cache
  pid directory = {d}/pid
  ncalrpc dir = {d}/ncalrpc
  passdb backend = tdbsam:{d}/private/passdb.tdb
  log file = {d}/logs/log.%m
  max log size = 1000
  log level = 0

[{self.share}]
  path = {self.share_dir}
  valid users = {self.username}
  force user = root
  read only = no
  browseable = yes
  create mask = 0644
  directory mask = 0755
""")

    def _ensure_user(self) -> None:
        try:
            pwd.getpwnam(self.username)
        except KeyError:
            subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", self.username],
                           check=True, capture_output=True)
        subprocess.run(["smbpasswd", "-c", str(self.conf_path), "-s", "-a", self.username],
                       input=f"{self.password}\n{self.password}\n", text=True, check=True,
                       capture_output=True)

    def start(self) -> None:
        why = samba_available()
        if why:
            raise RuntimeError(f"NAS (Samba) cannot start: {why}")
        self._write_conf()
        self._ensure_user()
        proc = spawn([_smbd_binary(), "-F", "--no-process-group", "-s", str(self.conf_path)],
                     self.log_path)
        self.pid = proc.pid
        wait_until(self.healthy, 20, f"Samba on {LOOPBACK}:{self.port}", self.log_path, proc)

    def healthy(self) -> bool:
        return port_open(self.port)

    def env(self) -> dict[str, str]:
        return {"HP_NAS_PROTOCOL": "smb", "HP_NAS_HOST": LOOPBACK, "HP_NAS_PORT": str(self.port),
                "HP_NAS_SHARE": self.share, "HP_NAS_USERNAME": self.username,
                "HP_NAS_PASSWORD": self.password, "HP_NAS_LOCAL_ROOT": str(self.share_dir)}
