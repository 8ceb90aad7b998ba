"""When two NAS paths name the same file, and whether a path lies inside a folder.

The key is deliberately coarser than any one NAS: an SMB server (Samba with its default
`case sensitive = auto`, Windows, a NAS appliance) compares names case-insensitively, a client
may send `\\` for `/`, and duplicate or `.` segments collapse; a Linux NAS reached by NFS keeps
NFC and NFD spellings apart, but two uploads whose names differ only in their Unicode form are
still one name to every user who types it. Two paths with one key are never placed as two
files: treating a pair the NAS would keep apart as one costs a refused upload with a clear
reason, the opposite costs a file.

What is not folded: trailing dots and spaces (Samba stores `a.` and `a` as two names; only
Windows clients strip them), and the 8.3 short names of mangled names."""

from __future__ import annotations

import unicodedata

from hybrid_pipelines.shared.nas_paths import safe_relpath


def canonical_key(path: str) -> str:
    """The name under which `path` is reserved: `safe_relpath` (separators `\\` -> `/`,
    duplicate slashes and `.` segments dropped, `..` and absolute paths refused), then Unicode
    NFC, then full case folding (str.casefold: `ß` -> `ss`, final sigma, ...)."""
    clean = safe_relpath(path)
    folded = unicodedata.normalize("NFC", clean).casefold()
    # casefold can produce decomposed sequences again; normalise once more so that every
    # spelling of one name ends in the same string.
    return unicodedata.normalize("NFC", folded)


def is_within(path: str, root: str) -> bool:
    """Whether `path` names something strictly beneath the folder `root` ('' is the share
    root: everything but the root itself), compared by canonical key, so that `Uploads/x` is
    inside `uploads` exactly when the NAS would put it there."""
    key = canonical_key(path)
    if not key:
        return False
    base = canonical_key(root)
    return not base or key.startswith(base + "/")
