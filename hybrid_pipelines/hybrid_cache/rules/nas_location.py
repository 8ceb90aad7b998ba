"""Where a `file_metadata.nas_path`, as the file server stores it, lies on our NAS.

The file server may record a path relative to the share root (`storage/2024/a.mp4`), a UNC
path (`\\\\host\\Web\\storage\\a.mp4`), an smb:// URL (`smb://host/Web/storage/a.mp4`), or an
absolute path on the machine where the share is mounted (`/mnt/nas/storage/a.mp4`). All of
them resolve to one path relative to the share our NAS filesystem serves, and only when it lies
under the configured NAS root (NAS_ROOT_PATH); anything else is refused with a permanent error
that names the path, the root and the fix. No I/O here: the root comes parsed (NASRoot).

Host and share names are compared case-insensitively (SMB and DNS do); folder names keep their
case, and lying "under the root" is decided by rules.nas_keys.is_within (as the NAS compares)."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from hybrid_pipelines.hybrid_cache.rules.nas_keys import canonical_key, is_within
from hybrid_pipelines.shared.nas_paths import UnsafePathError, safe_relpath


class NASPathOutsideRoot(UnsafePathError):
    """A stored nas_path that names something outside the configured NAS root (permanent)."""


@dataclass(frozen=True)
class NASRoot:
    """The NAS root as parsed from NAS_ROOT_PATH (and the NAS resource).

    host, share: the SMB server and share ('' when unknown: UNC/smb paths are then refused);
    root_dir: the root folder relative to the share ('' = the whole share);
    mount_path: where the share's root is mounted on this machine, for stored absolute paths
    ('' = none known: absolute paths are refused)."""

    host: str = ""
    share: str = ""
    root_dir: str = ""
    mount_path: str = ""

    def describe(self) -> str:
        where = f"\\\\{self.host}\\{self.share}" if self.share else "the share"
        return f"{where}\\{self.root_dir}" if self.root_dir else where


def _network_parts(stored: str) -> tuple[str, str, str] | None:
    """(host, share, rest) of a UNC path or smb:// URL; None for anything else."""
    if stored.lower().startswith("smb://"):
        url = urlsplit(stored)
        segs = [s for s in unquote(url.path).split("/") if s]
        return (url.hostname or "", segs[0] if segs else "", "/".join(segs[1:]))
    if stored.startswith(("\\\\", "//")):
        segs = [s for s in stored.replace("\\", "/").split("/") if s]
        return (segs[0] if segs else "", segs[1] if len(segs) > 1 else "", "/".join(segs[2:]))
    return None


def _refuse(stored: str, root: NASRoot, why: str, fix: str) -> NASPathOutsideRoot:
    return NASPathOutsideRoot(f"nas_path {stored!r} {why} (NAS root {root.describe()}, "
                              f"NAS_ROOT_PATH): {fix}")


def share_relative(stored: str, root: NASRoot) -> str:
    """The share-relative path `stored` names; raises UnsafePathError (permanent) when it is
    unsafe or lies outside the root."""
    text = stored.strip()
    if not text:
        raise UnsafePathError("nas_path is empty")
    network = _network_parts(text)
    if network is not None:
        host, share, rest = network
        if not root.share:
            raise _refuse(stored, root, "is a network path but the NAS root names no share",
                          "set NAS_ROOT_PATH to the UNC path of the root")
        if share.casefold() != root.share.casefold() or (
                root.host and host.casefold() != root.host.casefold()):
            raise _refuse(stored, root, f"is on \\\\{host}\\{share}, another share",
                          "correct the row's nas_path or NAS_ROOT_PATH")
        rel = safe_relpath(rest)
    elif text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        if not root.mount_path:
            raise _refuse(stored, root, "is absolute but no mount path of the share is known",
                          "set NAS_ROOT_PATH to the mount path (NAS_MOUNT_TYPE nfs|smb)")
        mount = posixpath.normpath(root.mount_path.replace("\\", "/"))
        path = posixpath.normpath(text.replace("\\", "/"))
        if path != mount and not path.startswith(mount.rstrip("/") + "/"):
            raise _refuse(stored, root, f"is not under the mount {root.mount_path!r}",
                          "correct the row's nas_path or NAS_ROOT_PATH")
        # normpath folded any '..': check the raw text too, never follow it out.
        safe_relpath(text.replace("\\", "/").lstrip("/"))
        rel = safe_relpath(posixpath.relpath(path, mount))
        rel = "" if rel == "." else rel
    else:
        rel = safe_relpath(text)
    if not rel:
        raise _refuse(stored, root, "names the share root, not a file",
                      "give the row the path of its file")
    if root.root_dir and not is_within(rel, root.root_dir):
        raise _refuse(stored, root, "lies outside the NAS root",
                      "correct the row's nas_path, or widen NAS_ROOT_PATH")
    return rel


def same_place(a: str, b: str) -> bool:
    """Two share-relative paths the NAS treats as one name."""
    return canonical_key(a) == canonical_key(b)
