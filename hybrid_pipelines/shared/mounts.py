"""Is a folder a mount point? os.path.ismount compares a folder's device with its parent's,
so it misses a bind mount (or a container volume) of a folder on the same device; the
kernel's own table, /proc/self/mountinfo, lists every mount point."""

from __future__ import annotations

import os
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")


def mount_points(mountinfo: str) -> set[str]:
    """The mount points (field 5) of a mountinfo text, with the kernel's octal escapes of
    space, tab, newline and backslash undone."""
    points = set()
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            points.add(_unescape(fields[4]))
    return points


def _unescape(field: str) -> str:
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def is_mount_point(folder: str | Path) -> bool:
    if os.path.ismount(folder):
        return True
    try:
        text = MOUNTINFO.read_text()
    except OSError:  # not Linux, or /proc not mounted: the device comparison is all we have
        return False
    return os.path.realpath(folder) in mount_points(text)
