"""Change notifications (SMB2 CHANGE_NOTIFY, paths relative to the watched root) turned into
the catalog's directories to look at. Pure functions: no I/O, no Dagster."""

from __future__ import annotations

from collections.abc import Iterable


def parent_dirs(paths: Iterable[str]) -> set[str]:
    """The directory of each changed name ('' for the watched root itself). A changed
    directory name also changes its parent's listing, so the parent is what to list; a new
    directory's own files arrive as their own notifications."""
    out: set[str] = set()
    for p in paths:
        p = p.strip("/")
        if p:
            out.add(p.rsplit("/", 1)[0] if "/" in p else "")
    return out


def to_catalog_dirs(dirs: Iterable[str], nas_root: str) -> set[str]:
    """Watched-root-relative directories as the catalog's share-relative paths."""
    root = nas_root.strip("/")
    return {"/".join(p for p in (root, d.strip("/")) if p) for d in dirs}


def top_folder(dir_path: str, nas_root: str) -> str | None:
    """The top-level catalog folder a share-relative directory is (or lies in); None for the
    catalogued root itself (its loose files belong to no catalog) or a path outside it."""
    root = nas_root.strip("/")
    rel = dir_path.strip("/")
    if root:
        if rel == root or not rel.startswith(root + "/"):
            return None
        rel = rel[len(root) + 1:]
    return rel.split("/", 1)[0] or None


def covers(recent: set[str], dir_path: str) -> bool:
    """A change in `dir_path` (its listing or below it) was notified: the directory itself
    or one below it is among the recently notified."""
    prefix = dir_path.rstrip("/") + "/"
    return dir_path in recent or any(r.startswith(prefix) for r in recent)
