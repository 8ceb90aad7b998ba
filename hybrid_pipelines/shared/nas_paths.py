"""NAS path rules: normalise a share-relative path and refuse anything that escapes the share."""

from __future__ import annotations

import posixpath

MAX_NAME_BYTES = 255


class UnsafePathError(ValueError):
    """A path that could write or read outside its share, or that no NAS can store."""


def safe_relpath(path: str) -> str:
    """Return `path` as a clean share-relative POSIX path ('' is the share root).

    Characters are kept exactly as given: a Linux NAS stores a name typed on macOS (NFD) and
    the same name typed on Windows (NFC) as two files, and only the stored form opens.
    Backslashes count as separators because SMB clients send them."""
    if "\x00" in path:
        raise UnsafePathError(f"path {path!r} contains a NUL byte; rename the file on the NAS")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise UnsafePathError(f"path {path!r} contains control characters; rename the file")
    unified = path.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise UnsafePathError(f"path {path!r} is absolute; give a path relative to the share")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafePathError(f"path {path!r} climbs out of the share with '..'")
    for part in parts:
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            raise UnsafePathError(
                f"name {part[:40]!r}... is longer than {MAX_NAME_BYTES} bytes; shorten it")
    return posixpath.join(*parts) if parts else ""


SMB_FORBIDDEN = set('<>:"|?*')


def smb_safe_relpath(path: str) -> str:
    """`safe_relpath`, plus the characters SMB cannot carry in a name (a Linux mount can)."""
    clean = safe_relpath(path)
    bad = sorted(SMB_FORBIDDEN & set(clean))
    if bad:
        raise UnsafePathError(f"path {path!r} has characters SMB cannot store ({''.join(bad)}); "
                              "rename the file without them")
    return clean


def join(*parts: str) -> str:
    return safe_relpath("/".join(p.strip("/") for p in parts if p))
