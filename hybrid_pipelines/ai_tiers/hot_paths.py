"""Files on a mounted tier (the JuiceFS hot tier, an EFS mount) that never leave their root.

A symlink planted beneath a root (a model directory pointing at /etc, a user's output folder
pointing at another volume) would let a demotion upload and then unlink files outside the
tier, or a promotion write into them. So every directory beneath a root is opened one
component at a time with O_NOFOLLOW, relative to its parent's descriptor: the check and the
use are the same chain of system calls, and a link swapped in after a check cannot redirect
the use. Walks read entries without following them and hand back only regular files; links
and special files (FIFOs, sockets, devices) are reported, never opened, copied or deleted.
New files are created O_CREAT|O_EXCL|O_NOFOLLOW in a directory opened that way and renamed
within it. The root itself may be a link (the operator's mount configuration)."""

from __future__ import annotations

import errno
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hybrid_pipelines.shared.nas_paths import UnsafePathError, safe_relpath

TEMP_MARKER = ".hp-part-"
CONFLICT_MARKER = ".hot-conflict-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
EXAMPLES = 5


class PathEscapeError(UnsafePathError):
    """A path beneath a tier root goes through a symlink or a non-directory."""


class NotRegularFileError(UnsafePathError):
    """The entry is a symlink, FIFO, socket or device where a regular file was expected."""


def temp_name(name: str) -> str:
    return f".{name}{TEMP_MARKER}{uuid.uuid4().hex}"


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and TEMP_MARKER in name


def conflict_name(name: str) -> str:
    """Where a hot file with bytes the cold copy does not have is moved aside."""
    return f"{name}{CONFLICT_MARKER}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-" \
           f"{uuid.uuid4().hex[:6]}"


def parts_of(rel: str) -> list[str]:
    clean = safe_relpath(rel)
    return clean.split("/") if clean else []


def split(rel: str) -> tuple[str, str]:
    parts = parts_of(rel)
    if not parts:
        raise UnsafePathError("an empty path names the tier root, not a file")
    return "/".join(parts[:-1]), parts[-1]


def kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def _refusal(root: Path, shown: str, dir_fd: int, name: str) -> PathEscapeError:
    where = root / shown
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return PathEscapeError(f"{where} changed while it was opened; run again")
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(name, dir_fd=dir_fd)
        return PathEscapeError(
            f"{where} is a symbolic link (to {target!r}); links are never followed beneath "
            f"{root}, so nothing is read, written or deleted through it: replace it with a "
            "real directory, or remove it")
    return PathEscapeError(f"{where} is {kind_of(st.st_mode)}, not a directory; move it out "
                           f"of the way under {root}")


def _open_child_dir(dir_fd: int, name: str, root: Path, shown: str, create: bool) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise FileNotFoundError(errno.ENOENT, "no such directory", str(root / shown)) from None
        try:
            os.mkdir(name, 0o755, dir_fd=dir_fd)
        except FileExistsError:
            pass
        return _open_child_dir(dir_fd, name, root, shown, create=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise _refusal(root, shown, dir_fd, name) from None
        raise


@contextmanager
def open_dir(root: Path, rel: str, *, create: bool = False) -> Iterator[int]:
    """A descriptor of root/rel reached without following any link beneath root.
    PathEscapeError when a component is a link or not a directory; FileNotFoundError when
    one is missing (unless `create`, which makes it)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        done: list[str] = []
        for part in parts_of(rel):
            done.append(part)
            child = _open_child_dir(fd, part, root, "/".join(done), create)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def check_dir(root: Path, rel: str) -> bool:
    """True when root/rel is a directory reached without links, False when it is missing;
    PathEscapeError otherwise."""
    try:
        with open_dir(root, rel):
            return True
    except FileNotFoundError:
        return False


@dataclass
class Skipped:
    """Entries a walk met and left alone, as paths relative to the tier root."""

    symlinks: list[str] = field(default_factory=list)
    special: list[str] = field(default_factory=list)

    def add(self, rel: str, mode: int) -> None:
        (self.symlinks if stat.S_ISLNK(mode) else self.special).append(rel)

    def extend(self, other: Skipped) -> None:
        self.symlinks += other.symlinks
        self.special += other.special

    def __bool__(self) -> bool:
        return bool(self.symlinks or self.special)

    def metadata(self) -> dict[str, int | str]:
        return {"skipped_symlinks": len(self.symlinks), "skipped_special": len(self.special),
                "skipped_examples": ", ".join((self.symlinks + self.special)[:EXAMPLES])}

    def describe(self) -> str:
        out = []
        for what, items in (("symbolic link(s)", self.symlinks),
                            ("special file(s)", self.special)):
            if items:
                out.append(f"{len(items)} {what} left alone (never followed, copied or "
                           f"deleted): {', '.join(items[:EXAMPLES])}")
        return "; ".join(out)


@dataclass(frozen=True)
class Entry:
    rel: str  # relative to the walked directory
    size: int
    mtime_ns: int


def walk_files(root: Path, rel: str, skipped: Skipped | None = None, *,
               temp_files: bool = False) -> list[Entry]:
    """Regular files beneath root/rel, sorted, without following links; links and special
    files go to `skipped`. Our temp files are left out unless `temp_files` (then only they
    are listed). A missing directory has no files."""
    skipped = skipped if skipped is not None else Skipped()
    out: list[Entry] = []
    base = "/".join(parts_of(rel))
    try:
        with open_dir(root, rel) as fd:
            _walk(fd, "", base, out, skipped, temp_files)
    except FileNotFoundError:
        return []
    return sorted(out, key=lambda e: e.rel)


def _walk(fd: int, prefix: str, base: str, out: list[Entry], skipped: Skipped,
          temp_files: bool) -> None:
    with os.scandir(fd) as it:
        entries = list(it)
    for entry in entries:
        rel = prefix + entry.name
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            try:
                child = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                skipped.add(f"{base}/{rel}" if base else rel, stat.S_IFLNK)  # swapped for a link
                continue
            try:
                _walk(child, rel + "/", base, out, skipped, temp_files)
            finally:
                os.close(child)
        elif stat.S_ISREG(st.st_mode):
            if is_temp_name(entry.name) == temp_files:
                out.append(Entry(rel, st.st_size, st.st_mtime_ns))
        else:
            skipped.add(f"{base}/{rel}" if base else rel, st.st_mode)


@contextmanager
def open_file(root: Path, rel: str) -> Iterator[tuple[int, os.stat_result]]:
    """(descriptor, stat) of the regular file root/rel, opened without following links."""
    parent, name = split(rel)
    with open_dir(root, parent) as dfd:
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dfd)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise NotRegularFileError(f"{root / rel} is a symbolic link (to "
                                      f"{os.readlink(name, dir_fd=dfd)!r}); it is left alone"
                                      ) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotRegularFileError(f"{root / rel} is {kind_of(st.st_mode)}, not a "
                                          "regular file; it is left alone")
            os.set_blocking(fd, True)
            yield fd, st
        finally:
            os.close(fd)


def lstat(root: Path, rel: str) -> os.stat_result | None:
    """The entry itself (a link is not followed); None when it or its directory is missing."""
    parent, name = split(rel)
    try:
        with open_dir(root, parent) as dfd:
            return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def unlink_file(root: Path, rel: str, size: int | None = None,
                mtime_ns: int | None = None) -> bool:
    """Remove the regular file root/rel (only if it still has `size` and `mtime_ns` when
    given). Links and special files are never removed. True when removed."""
    parent, name = split(rel)
    try:
        with open_dir(root, parent) as dfd:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                return False
            if size is not None and (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                return False
            os.unlink(name, dir_fd=dfd)
            return True
    except FileNotFoundError:
        return False


def unlink_entry(root: Path, rel: str) -> bool:
    """Remove whatever non-directory entry root/rel is: a link itself, never its target."""
    parent, name = split(rel)
    try:
        with open_dir(root, parent) as dfd:
            os.unlink(name, dir_fd=dfd)
            return True
    except FileNotFoundError:
        return False


def remove_empty_dirs(root: Path, rel: str) -> None:
    """Remove root/rel and the directories below it that are empty; anything else stays."""
    try:
        with open_dir(root, rel) as fd:
            _prune(fd)
        parent, name = split(rel)
        with open_dir(root, parent) as pfd:
            os.rmdir(name, dir_fd=pfd)
    except (OSError, UnsafePathError):
        pass  # not empty, gone, or not ours to remove


def _prune(fd: int) -> None:
    with os.scandir(fd) as it:
        dirs = [e.name for e in it if e.is_dir(follow_symlinks=False)]
    for name in dirs:
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError:
            continue
        try:
            _prune(child)
        finally:
            os.close(child)
        try:
            os.rmdir(name, dir_fd=fd)
        except OSError:
            pass


def create_temp(dir_fd: int, name: str) -> tuple[str, int]:
    """(temp name, write descriptor) beside `name`, created exclusively without following a
    link planted under that name."""
    tmp = temp_name(name)
    return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                        0o644, dir_fd=dir_fd)


def install(dir_fd: int, tmp: str, name: str, *, replace: bool,
            same_bytes: Callable[[int], bool]) -> str | None:
    """Put the finished temp file at `name` in the same directory.

    replace=True (a mirror that owns its files): one atomic rename; whatever sits at `name`,
    a link included, is replaced itself, never written through.
    replace=False: an entry at `name` whose bytes are not the new ones (`same_bytes` gets a
    descriptor of it) is renamed aside to a `<name>.hot-conflict-<UTC time>-<id>` sibling first,
    and that name is returned; the new file is then linked in without replacing, so bytes
    that appear in between are moved aside too, never overwritten."""
    if replace:
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return None
    aside = None
    for _ in range(5):
        try:
            os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            # No hard links on this file system: check, then rename (a short window).
            if _keeps_existing(dir_fd, name, same_bytes):
                os.unlink(tmp, dir_fd=dir_fd)
                return aside
            aside = _move_aside(dir_fd, name) or aside
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return aside
        else:
            os.unlink(tmp, dir_fd=dir_fd)
            return aside
        if _keeps_existing(dir_fd, name, same_bytes):
            os.unlink(tmp, dir_fd=dir_fd)
            return aside
        aside = _move_aside(dir_fd, name) or aside
    raise OSError(errno.EAGAIN, f"{name} keeps being recreated while it is installed; run again")


def _keeps_existing(dir_fd: int, name: str, same_bytes: Callable[[int], bool]) -> bool:
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return False  # missing, or a link: not the bytes we are installing
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        os.set_blocking(fd, True)
        return same_bytes(fd)
    finally:
        os.close(fd)


def _move_aside(dir_fd: int, name: str) -> str | None:
    aside = conflict_name(name)
    try:
        os.rename(name, aside, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except FileNotFoundError:
        return None  # gone meanwhile: nothing to keep
    return aside
