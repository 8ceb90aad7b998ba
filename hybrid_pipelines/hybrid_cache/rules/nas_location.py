"""Where a `file_metadata.nas_path`, as the file server stores it, lies on our NAS.

The file server joins NAS_ROOT_PATH with what it records, and may record a path relative to
that root (`2024/a.mp4`), a UNC path (`\\\\host\\Web\\storage\\a.mp4`), an smb:// URL
(`smb://host/Web/storage/a.mp4`), or an absolute path where its servers mount the root
(`/mnt/nas/storage/a.mp4` with the root mounted at `/mnt/nas/storage`). All of them resolve to
one path relative to the NAS root, which is what NASResource.fs() serves, and only when they lie
beneath that root; anything else is refused with a permanent error that names the path, the
root and the fix. No I/O here: the root comes parsed (shared.nas_root.NASRoot, from
NASResource.root()).

Host and share names are compared case-insensitively (SMB and DNS do); lying "beneath the root"
is decided by rules.nas_keys.is_within (as the NAS compares names)."""

from __future__ import annotations

import posixpath
from urllib.parse import unquote, urlsplit

from hybrid_pipelines.hybrid_cache.rules.nas_keys import canonical_key, is_within
from hybrid_pipelines.shared.nas_paths import UnsafePathError, safe_relpath
from hybrid_pipelines.shared.nas_root import NASRoot

# The root when nothing is known of how the platform names it: only relative paths resolve.
RELATIVE_ONLY = NASRoot("local")


class NASPathOutsideRoot(UnsafePathError):
    """A stored nas_path that names something outside the configured NAS root (permanent)."""


def _describe(root: NASRoot) -> str:
    forms = root.forms()
    return forms[0] if forms else "the share"


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
    return NASPathOutsideRoot(f"nas_path {stored!r} {why} (NAS root {_describe(root)}, "
                              f"NAS_ROOT_PATH): {fix}")


def root_relative(stored: str, root: NASRoot | None = None) -> str:
    """The path beneath the NAS root that `stored` names; raises UnsafePathError (permanent)
    when it is unsafe or lies outside the root. A relative path is relative to the root."""
    root = root or RELATIVE_ONLY
    text = stored.strip()
    if not text:
        raise UnsafePathError("nas_path is empty")
    network = _network_parts(text)
    if network is not None:
        host, share, rest = network
        if root.protocol != "smb" or not root.share:
            raise _refuse(stored, root, "is a network path but the NAS root names no share",
                          "set NAS_ROOT_PATH to the UNC path of the root")
        if share.casefold() != root.share.casefold() or (
                root.host and host.casefold() != root.host.casefold()):
            raise _refuse(stored, root, f"is on \\\\{host}\\{share}, another share",
                          "correct the row's nas_path or NAS_ROOT_PATH")
        in_share = safe_relpath(rest)
        root_dir = safe_relpath(root.root_dir)
        if root_dir and (not is_within(in_share, root_dir)
                         and canonical_key(in_share) != canonical_key(root_dir)):
            raise _refuse(stored, root, "lies outside the NAS root",
                          "correct the row's nas_path, or widen NAS_ROOT_PATH")
        depth = len(root_dir.split("/")) if root_dir else 0
        rel = "/".join(in_share.split("/")[depth:]) if in_share else ""
    elif text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        if not root.mount_path:
            raise _refuse(stored, root, "is absolute but no mount path of the root is known",
                          "set HP_NAS_MOUNT_PATH (or NAS_ROOT_PATH with NAS_MOUNT_TYPE=nfs)")
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
        raise _refuse(stored, root, "names the NAS root itself, not a file",
                      "give the row the path of its file")
    return rel
