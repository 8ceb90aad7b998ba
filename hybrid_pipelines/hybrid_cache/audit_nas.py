"""The audit's NAS side: synced rows against directory listings (missing, size mismatch) and
a walk of the upload folder for files no row names (orphans, stale temporary files). Split
from audit.py, which runs it; paths the file server stored in its own forms (UNC, smb://,
absolute under the root's mount) resolve through rules.nas_location like every job's."""

from __future__ import annotations

import posixpath
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg

from hybrid_pipelines.hybrid_cache.rules.nas_location import root_relative
from hybrid_pipelines.hybrid_cache.sync import is_partial
from hybrid_pipelines.resources.nas_fs import NASEntry, NASFileSystem
from hybrid_pipelines.shared.nas_paths import safe_relpath
from hybrid_pipelines.shared.nas_root import NASRoot

if TYPE_CHECKING:
    from hybrid_pipelines.hybrid_cache.audit import AuditReport, AuditSettings


class _Listings:
    """Directory listings with a small LRU: synced rows sorted by path mostly share folders."""

    def __init__(self, nas: NASFileSystem, size: int):
        self.nas, self.size = nas, size
        self._cache: OrderedDict[str, dict[str, NASEntry]] = OrderedDict()

    def get(self, directory: str) -> dict[str, NASEntry]:
        if directory in self._cache:
            self._cache.move_to_end(directory)
            return self._cache[directory]
        try:
            entries = {posixpath.basename(e.path): e for e in self.nas.list_dir(directory)}
        except OSError as exc:
            if getattr(exc, "errno", None) != 2 and not isinstance(exc, FileNotFoundError):
                raise
            entries = {}
        self._cache[directory] = entries
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return entries


def _synced_rows(conn: psycopg.Connection) -> Iterator[tuple[Any, ...]]:
    with conn.cursor(name="audit_synced_rows") as cur:
        cur.itersize = 2000
        cur.execute("SELECT nas_path, id, size, cache_status FROM file_metadata"
                    " WHERE nas_status = 'synced' AND nas_path IS NOT NULL"
                    " ORDER BY nas_path COLLATE \"C\"")
        yield from cur


def audit_nas(conn: psycopg.Connection, nas: NASFileSystem, settings: AuditSettings,
               report: AuditReport, cache_missing: dict[UUID, str]) -> set[UUID]:
    """Returns ids of synced rows whose NAS copy is present."""
    present: set[UUID] = set()
    listings = _Listings(nas, settings.listing_cache_dirs)
    with conn.transaction():
        for nas_path, file_id, size, cache_status in _synced_rows(conn):
            report.synced_rows += 1
            try:
                path = root_relative(nas_path, settings.location)
            except ValueError:
                report.nas_missing_lost.append(file_id)
                report.errors.append(f"{file_id}: unsafe nas_path {nas_path!r}")
                continue
            entry = listings.get(posixpath.dirname(path)).get(posixpath.basename(path))
            if entry is None or entry.is_dir:
                cached_ok = cache_status == "cached" and file_id not in cache_missing \
                    and file_id not in report.cache_size_mismatch
                (report.nas_missing_requeue if cached_ok else report.nas_missing_lost).append(
                    file_id)
            else:
                present.add(file_id)
                if entry.size != int(size):
                    report.nas_size_mismatch.append(file_id)
    return present


def _known_in_other_forms(conn: psycopg.Connection, files: list[NASEntry],
                          location: NASRoot | None) -> set[str]:
    """Listed files that rows name in another form (UNC, smb://, absolute under the mount):
    without this a file the platform recorded as `\\\\host\\share\\x` would be reported as an
    orphan. Candidates by file name (few: only files no row names exactly), then resolved."""
    if not files or location is None or not location.forms():
        return set()
    names = {posixpath.basename(e.path) for e in files}
    rows = conn.execute(
        "SELECT nas_path FROM file_metadata WHERE nas_path IS NOT NULL AND "
        "regexp_replace(nas_path, '^.*[/\\\\]', '') = ANY(%s)", (list(names),)).fetchall()
    resolved: set[str] = set()
    for (stored,) in rows:
        try:
            resolved.add(root_relative(stored, location))
        except ValueError:
            continue
    return {e.path for e in files if e.path in resolved}


def walk_orphans(conn: psycopg.Connection, nas: NASFileSystem, settings: AuditSettings,
                  report: AuditReport, now: float) -> None:
    if not settings.nas_prefix:
        return
    root = safe_relpath(settings.nas_prefix)
    if nas.stat(root) is None:
        return
    stack = [root]
    while stack:
        directory = stack.pop()
        entries = nas.list_dir(directory)
        stack.extend(e.path for e in entries if e.is_dir)
        files = [e for e in entries if not e.is_dir]
        if not files:
            continue
        known = {r[0] for r in conn.execute(
            "SELECT nas_path FROM file_metadata WHERE (nas_path COLLATE \"C\") = ANY(%s)",
            ([e.path for e in files],))}
        known |= _known_in_other_forms(conn, [e for e in files if e.path not in known],
                                       settings.location)
        for e in files:
            if e.path in known:
                continue
            if is_partial(e.path):
                if now - e.mtime >= settings.stale_partial_s:
                    report.nas_partials_stale.append(e.path)
                else:
                    report.nas_partials_fresh += 1
            elif len(report.nas_orphaned) < 10_000:
                report.nas_orphaned.append(e.path)
