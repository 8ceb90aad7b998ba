"""Renaming a file on a mounted NAS without ever replacing the file at the new name."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path
from typing import Any

_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _renameat2() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


_RENAMEAT2 = _renameat2()


def rename_noreplace(src: Path, dst: Path) -> None:
    """Atomic rename that never replaces: renameat2(RENAME_NOREPLACE), or where the file
    system lacks it (NFS, older kernels) a hard link (which fails if `dst` exists) and an
    unlink of `src`. os.replace / os.rename would silently replace an existing file."""
    if _RENAMEAT2 is not None:
        if _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),
                      _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, "NAS path already exists", str(dst))
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(src))
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as exc:
        if isinstance(exc, FileExistsError):
            raise
        raise OSError(exc.errno, f"cannot rename without replacing on this file system "
                      f"(no RENAME_NOREPLACE, no hard links): {exc.strerror}; mount the NAS "
                      "with a file system that supports either", str(dst)) from exc
    os.unlink(src)
