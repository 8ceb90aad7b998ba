"""shared/mounts.py: a folder bind-mounted on its own device (a container volume, a bind
mount) is a mount point, though os.path.ismount says it is not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hybrid_pipelines.shared.mounts import is_mount_point, mount_points

SAMPLE = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 22 8:1 /srv/catalog /var/lib/hp\\040catalog rw,relatime shared:1 - ext4 /dev/sda1 rw
36 22 0:31 / /mnt/tab\\011and\\134slash rw - tmpfs tmpfs rw
"""


def test_mount_points_are_read_with_the_kernel_escapes_undone() -> None:
    assert mount_points(SAMPLE) == {"/", "/var/lib/hp catalog", "/mnt/tab\tand\\slash"}


def test_a_plain_folder_is_not_a_mount_point(tmp_path: Path) -> None:
    assert not is_mount_point(tmp_path)
    assert is_mount_point("/")


def test_a_bind_mount_on_the_same_device_is_a_mount_point(tmp_path: Path) -> None:
    """In a mount namespace of its own (nothing left mounted if the test dies): the folder
    bound onto itself, as a container runtime mounts a volume from the same disk."""
    folder = tmp_path / "catalog"
    folder.mkdir()
    check = ("import os, sys; from hybrid_pipelines.shared.mounts import is_mount_point; "
             "print(os.path.ismount(sys.argv[1]), is_mount_point(sys.argv[1]))")
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount --bind "$1" "$1" && exec "$2" -c "$3" "$1"', "sh", str(folder),
         sys.executable, check],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]  # ismount misses it; the table has it
