"""Does a partition need a run? A cheap, read-only look at the NAS and the catalog, used by
the NAS sensor every tick (the scan itself lives in scan.py), and the pending sensor's look
at the few files still being written (rules/upload_stability.py decides)."""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hybrid_pipelines.media_catalog.catalog_store import CatalogStore, parent_of
from hybrid_pipelines.media_catalog.nas_access import NASAccess
from hybrid_pipelines.media_catalog.rules.catalog_paths import (
    is_ignored,
    is_ignored_dir_name,
    name_problem,
)
from hybrid_pipelines.media_catalog.rules.scan_diff import (
    PENDING,
    STABLE,
    Entry,
    Known,
    Observed,
    diff_listing,
    listing_reason,
    split_unusable,
)
from hybrid_pipelines.media_catalog.rules.upload_stability import PendingFile
from hybrid_pipelines.media_catalog.settings import CatalogSettings


@dataclass
class Changes:
    """What a cheap look at one partition found; empty means nothing to do."""

    partition_key: str
    reasons: list[str] = field(default_factory=list)
    busy: bool = False  # a scan of it is in progress (checkpoint updated recently)
    # The directory each reason is about when it is only a file or directory written
    # (new, changed, growing, due for its second look): what change notifications also
    # report and the pending sensor handles. None: anything else (deletions, unfinished
    # work) that only this poll handles.
    where: list[str | None] = field(default_factory=list)

    def add(self, reason: str, where: str | None = None) -> None:
        self.reasons.append(reason)
        self.where.append(where)

    def only_writes_in(self, covered: Callable[[str], bool]) -> bool:
        """Every reason is a write in a directory `covered` accepts (and there is one)."""
        return bool(self.where) and all(w is not None and covered(w) for w in self.where)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(sorted(self.reasons)).encode()).hexdigest()[:16]

    def summary(self, limit: int = 3) -> str:
        more = f" (+{len(self.reasons) - limit} more)" if len(self.reasons) > limit else ""
        return "; ".join(self.reasons[:limit]) + more


def detect_changes(store: CatalogStore, nas: NASAccess, settings: CatalogSettings,
                   partition_key: str, top: str, top_mtime: float | None,
                   now: float | None = None, busy_for_s: float = 600.0) -> Changes:
    """Read-only: does the partition need a run? Lists only inner directories and those with
    files still being written; a changed or new directory is reported without listing it
    (the run will). Also reports unfinished work in the catalog (a failed scan, files
    waiting for a probe, a catalog or Firestore copy behind the files)."""
    now = time.time() if now is None else now
    out = Changes(partition_key)
    unfinished = store.unfinished_scan(partition_key)
    if unfinished:
        scan_id, _last, state, updated_at = unfinished
        if state == "running" and now - updated_at < busy_for_s:
            out.busy = True  # a run is scanning it right now; look again next tick
            return out
        # Stale 'running' (the run died) or 'failed': the next run resumes it.
        out.add(f"unfinished scan {scan_id} ({state})")
    known_dirs = store.dir_states(partition_key)
    if top_mtime is None:
        if store.count_files(partition_key, (PENDING, STABLE, "valid", "invalid")):
            out.add(f"folder {top!r} is gone")
        return out
    if not known_dirs:
        out.add(f"never scanned: {top!r}")
        return out
    waiting = store.count_files(partition_key, (STABLE,))
    if waiting:
        out.add(f"{waiting} stable file(s) waiting for a probe")
    due = store.count_due_reprobes(partition_key, now=now)
    if due:  # a timed-out or NAS-failed probe whose retry time has come, or a request
        out.add(f"{due} file(s) due for a re-probe")
    file_seq = store.partition_max_seq(partition_key)
    if file_seq > store.get_state(f"catalog:{partition_key}")[0] \
            or file_seq > store.get_state(f"firestore:{partition_key}")[0]:
        out.add(f"catalog or Firestore behind change {file_seq}")
    children: dict[str, list[str]] = defaultdict(list)
    for path in known_dirs:
        children[parent_of(path)].append(path)
    pending_dirs = store.pending_dirs(partition_key)
    rules = settings.rules

    def visit(d: str, mtime: float) -> None:
        known = known_dirs.get(d)
        reason = listing_reason(mtime, known, full=False, has_pending=d in pending_dirs)
        if reason in ("new", "changed"):
            out.add(f"directory {d!r} {reason} (mtime {mtime!r})", d)
            return
        if reason is None:
            return
        entries = nas.list_dir(d)
        if entries is None:
            out.add(f"directory {d!r} vanished")
            return
        # Folders no path check accepts are the scan's to report; they are not changes.
        entries, _unusable = split_unusable(entries, name_problem)

        def ignored(e: Entry) -> bool:
            return is_ignored_dir_name(e.name, rules) if e.is_dir \
                else is_ignored(settings.relative(e.path), rules)

        diff = diff_listing(entries, store.files_in_dir(d), children.get(d, ()), now,
                            settings.stability, ignored)
        for child in diff.children:
            if isinstance(child, Entry):
                visit(child.path, child.mtime)
            elif child.writes:
                o = child.obs
                out.add(f"file {o.path!r} {child.kind} (size {o.size}, mtime {o.mtime!r})",
                        d)
        for p in diff.deleted_files:
            out.add(f"file {p!r} deleted")
        for p in diff.gone_dirs:
            out.add(f"directory {p!r} deleted")

    visit(top, top_mtime)
    return out


def pending_files(store: CatalogStore, partition_keys: Iterable[str]) -> list[PendingFile]:
    """The catalog's files still waiting for their second look: one indexed query per
    partition (files_partition_status), no NAS I/O."""
    out: list[PendingFile] = []
    for pk in sorted(partition_keys):
        out.extend(PendingFile(pk, r[0], r[1], r[2], r[3]) for r in store.conn.execute(
            "SELECT path, size, mtime, seen_at FROM files WHERE partition_key = ? AND status = ?",
            (pk, PENDING)))
    return out


def list_pending_dirs(nas: NASAccess, dirs: Iterable[str]
                      ) -> dict[str, dict[str, Observed] | None]:
    """Each directory's files as the NAS lists them now (None: the directory is gone)."""
    out: dict[str, dict[str, Observed] | None] = {}
    for d in dirs:
        entries = nas.list_dir(d)
        out[d] = None if entries is None else {
            e.path: Observed(e.path, e.size, e.mtime) for e in entries if not e.is_dir}
    return out


def catalog_rows(store: CatalogStore, dirs: Iterable[str]) -> dict[str, dict[str, Known]]:
    """The catalog's rows in each directory, whatever their status (indexed)."""
    return {d: store.files_in_dir(d) for d in dirs}
