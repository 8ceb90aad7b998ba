"""Scan one catalog folder of the NAS into the SQLite catalog, and detect changes cheaply.

The scan walks depth first in name order and lists only the directories that
`scan_diff.listing_reason` says must be listed; unchanged leaf directories cost nothing.
A folder whose name no NAS path check accepts (control characters, say) is skipped, logged and
counted (`skipped_names`), so one bad name cannot fail the partition on every resume.
Change detection for the sensor (read-only, cheaper) is in change_detection.py.
Over SMB the walk announces the directories it will list, so several listings are in
flight while it writes (nas_access.pipelined, smb_pipeline.py).
Every 100 files (`batch_size`; later batches grow to a tenth of the work done, at most 20
times that) the rows, the directory records and the checkpoint commit in one
transaction, so a scan killed mid-way resumes after `last_path` with no duplicates: the
subtrees before it are skipped, and a directory's record only moves once all its files
are committed (otherwise a crash could make the next scan skip files it never saw). The
batches commit in walk order on a thread of their own, one behind the walk (scan_writer.py).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from hybrid_pipelines.media_catalog.catalog_store import CatalogStore, Checkpoint, parent_of
from hybrid_pipelines.media_catalog.catalog_store.scan_state import advance
from hybrid_pipelines.media_catalog.nas_access import NASAccess
from hybrid_pipelines.media_catalog.rules.catalog_paths import (
    is_ignored_dir_name,
    is_ignored_name,
    name_problem,
)
from hybrid_pipelines.media_catalog.rules.first_look import Look, apply_vouch, dir_of
from hybrid_pipelines.media_catalog.rules.scan_diff import (
    CHANGED,
    CONFIRMED,
    DELETED,
    GROWING,
    NEW,
    PENDING,
    STABLE,
    DirState,
    Entry,
    FileDecision,
    Gone,
    Observed,
    Progress,
    diff_listing,
    file_done,
    listing_reason,
    pair_renames,
    path_key,
    split_unusable,
    subtree_done,
)
from hybrid_pipelines.media_catalog.scan_writer import ScanWriter
from hybrid_pipelines.media_catalog.settings import CatalogSettings

Log = Callable[[str], None]
BATCH_GROWTH = 20


@dataclass
class ScanReport:
    scan_id: str
    partition_key: str
    mode: str
    resumed: bool
    attempts: int
    found: int = 0  # live files in the partition after the scan
    new: int = 0
    changed: int = 0
    deleted: int = 0
    renamed: int = 0
    growing: int = 0
    confirmed: int = 0
    pending: int = 0  # still being written: not probed yet
    to_probe: int = 0
    bytes: int = 0
    processed_files: int = 0
    dirs_listed: int = 0
    dirs_skipped: int = 0
    ignored: int = 0
    skipped_names: int = 0  # folders whose names no path check accepts: not walked
    vouched: int = 0  # first looks handed over by the pending sensor
    vouched_stable: int = 0  # ... that this scan's look confirmed (stable without a 3rd look)
    reconnects: int = 0
    folder_missing: bool = False
    elapsed_s: float = 0.0

    def metadata(self) -> dict[str, int | float]:
        skip = {"scan_id", "partition_key", "mode", "resumed", "folder_missing"}
        out: dict[str, int | float] = {k: v for k, v in asdict(self).items() if k not in skip}
        out["resumed"] = int(self.resumed)
        out["full_reconcile"] = int(self.mode == "full")
        out["files_per_s"] = round(self.processed_files / self.elapsed_s, 1) \
            if self.elapsed_s > 0 else 0.0
        return out


@dataclass
class _Batch:
    files: list[FileDecision] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    dirs: list[DirState] = field(default_factory=list)
    gone_dirs: list[str] = field(default_factory=list)
    last_path: str | None = None
    processed: int = 0
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def size(self) -> int:
        return self.processed + len(self.deleted)


class Scanner:
    def __init__(self, store: CatalogStore, nas: NASAccess, settings: CatalogSettings,
                 log: Log = lambda m: None, on_batch: Callable[[Checkpoint], None] | None = None,
                 progress_every_s: float = 5.0, clock: Callable[[], float] = time.time,
                 connections: int = 1, lookahead: int = 64):
        self.store, self.nas, self.settings = store, nas, settings
        # SMB connections listing in parallel, and how many directories may be listed before
        # the walk reaches them (listings in flight: at most 8 per connection).
        self.connections, self.lookahead = connections, lookahead
        self.log, self.on_batch, self.clock = log, on_batch, clock
        self.progress_every_s = progress_every_s

    # ------------------------------------------------------------------ public

    def scan(self, partition_key: str, folder: str, *, full: bool = False,
             vouched: Mapping[str, Look] | None = None) -> ScanReport:
        """`vouched`: first looks the pending sensor took (rules/first_look.py); a file
        this scan finds unchanged since, `min_stable_s` later, is stable at once."""
        # The listing connection is set up from the first moment, while the catalog is read
        # (a rescan reads its directories first): its round trips then cost nothing.
        with self.nas.pipelined(self.connections, min(8, self.lookahead), self.lookahead):
            return self._scan(partition_key, folder, full, vouched)

    def _scan(self, partition_key: str, folder: str, full: bool,
              vouched: Mapping[str, Look] | None) -> ScanReport:
        store = self.store
        top = self.settings.folder_path(folder)
        store.ensure_folder(partition_key, top)
        cp = store.open_checkpoint(partition_key, "full" if full else "incremental")
        if cp.resumed:
            self.log(f"resuming scan {cp.scan_id} of {partition_key!r} after "
                     f"{cp.last_path!r} ({cp.processed_files} files already done, "
                     f"attempt {cp.attempts})")
        report = ScanReport(cp.scan_id, partition_key, cp.mode, cp.resumed, cp.attempts)
        self._vouched = dict(vouched or {})
        report.vouched = len(self._vouched)
        # The look a vouch is checked against: listings may be taken ahead of the walk
        # (pipelined), so the only time every one of them is known to follow is the start.
        self._looked_after = self.clock()
        self._cp, self._report, self._full = cp, report, cp.mode == "full"
        # Where a resumed scan picks up. The walk only moves forward, so once past it nothing
        # is "done" any more (checking against the moving checkpoint would cost a path
        # comparison per file for nothing).
        self._resume_after = cp.last_path
        # Nothing catalogued below the folder yet (a first scan): no directory can have
        # known files but those this scan writes, after listing it, so the per-directory
        # read of known files (one query per directory) is skipped.
        self._none_known = not store.has_files_under(top)
        self._batch = _Batch()
        self._listed_before = cp.dirs_listed
        # The expected total (for the ETA) is counted when the first progress line is due:
        # a scan shorter than that never reads the whole partition's rows for it.
        self._progress = Progress(self.clock(), done=cp.processed_files)
        self._expected_counted = False
        self._last_log = self.clock()
        t0 = time.monotonic()
        # Started at the second batch: a rescan (one batch) never pays for its thread.
        self._writer: ScanWriter | None = None
        self._inline_batches = 0
        try:
            self._known_dirs = store.dir_states(partition_key)
            self._children: dict[str, list[str]] = defaultdict(list)
            for path in self._known_dirs:
                self._children[parent_of(path)].append(path)
            # A vouched file's directory is listed even when its timestamp did not move
            # (a file rewritten in place).
            self._pending_dirs = store.pending_dirs(partition_key) | {
                dir_of(p) for p in self._vouched}
            # What a rescan will list is mostly known now (directories holding others,
            # those with pending files): on the wire once connected, not a level a turn,
            # each with what the catalog knows it holds (its listing's buffer is sized by it).
            ahead = [top, *(d for d in (*self._pending_dirs, *(
                p for p, state in self._known_dirs.items() if state.has_subdirs))
                if not subtree_done(d, self._resume_after))]
            self.nas.announce(ahead, store.listing_sizes(ahead, self._children))
            top_mtime, top_entries = self._top(top)
            if top_mtime is None:
                self._folder_gone(partition_key, top)
            elif self._must_list(top, top_mtime):
                self._visit(top, top_mtime, top_entries)
            elif not subtree_done(top, self._resume_after):
                self._report.dirs_skipped += 1
            self._flush()
            if self._writer is not None:
                self._writer.wait()
            self._renames()
            store.finish_checkpoint(cp, top)
        except BaseException as exc:
            try:
                self._batch = _Batch()  # an unflushed batch is simply redone on resume
                self._close_writer()  # a batch in flight commits whole or not at all first
                store.fail_checkpoint(cp, f"{type(exc).__name__}: {exc}")
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
            raise
        finally:
            self._close_writer()
        report.elapsed_s = round(time.monotonic() - t0, 3)
        self._finish_report(report, cp)
        return report

    # ------------------------------------------------------------------ walk

    def _top(self, top: str) -> tuple[float | None, list[Entry] | None]:
        """The top folder's timestamp, and its entries when they came with it. Through the
        SMB pipeline the folder's own listing answers with its timestamp, read as it was
        opened (before the entries), so its parent, the share's root with every catalog
        folder in it, is listed only when the folder is missing or listed another way."""
        got = self.nas.list_dir_and_mtime(top)
        if got is not None and got[1] is not None:
            return got[1], got[0]
        return self._top_mtime(top), None

    def _top_mtime(self, top: str) -> float | None:
        parent = parent_of(top)
        entries = self.nas.list_dir(parent)
        if not entries:
            # An unmounted share or a wrong root looks exactly like "everything was deleted":
            # refuse rather than wipe the catalog.
            raise RuntimeError(
                f"the catalogued root {parent or '/'!r} on {self.nas.address} is "
                f"{'missing' if entries is None else 'empty'}; refusing to mark the files "
                f"of {top!r} deleted. Check that the share is mounted and HP_CATALOG_NAS_ROOT")
        for e in entries:
            if e.path == top and e.is_dir:
                return e.mtime
        return None

    def _folder_gone(self, partition_key: str, top: str) -> None:
        self.log(f"folder {top!r} is gone from the NAS: marking its files deleted")
        self._report.folder_missing = True
        for path in self.store.live_paths_of_partition(partition_key):
            self._add_deleted(path)
        self._batch.gone_dirs.append(top)

    def _must_list(self, d: str, observed_mtime: float) -> bool:
        if subtree_done(d, self._resume_after):
            return False
        return listing_reason(observed_mtime, self._known_dirs.get(d), full=self._full,
                              has_pending=d in self._pending_dirs) is not None

    def _visit(self, d: str, observed_mtime: float, listed: list[Entry] | None = None) -> None:
        """List `d` (or take `listed`, its entries already read) and walk what changed; the
        caller checked it must be listed (_must_list)."""
        entries = self.nas.list_dir(d) if listed is None else listed
        if entries is None:  # vanished since its parent was listed
            for path in self.store.live_paths_below(d):
                self._add_deleted(path)
            self._batch.gone_dirs.append(d)
            return
        entries, unusable = split_unusable(entries, name_problem)
        for entry, why in unusable:
            # Walking into it would fail this scan, and every resume of it, at the same spot.
            self._report.skipped_names += 1
            self.log(f"skipped folder {entry.path!r} and everything in it: {why}")
        rules = self.settings.rules
        # The folders on the way are the same for every file here: checked once, and each
        # file's own name after (what is_ignored on the whole path decides).
        above = any(is_ignored_dir_name(part, rules)
                    for part in self.settings.relative(d).split("/") if part)

        def ignored(e: Entry) -> bool:
            name = e.path.rsplit("/", 1)[-1]
            if e.is_dir:
                return is_ignored_dir_name(name, rules)
            return above or is_ignored_name(name, rules)

        known_files = {} if self._none_known else self.store.files_in_dir(d)
        now = self.clock()
        diff = diff_listing(entries, known_files, self._children.get(d, ()), now,
                            self.settings.stability, ignored)
        if self._vouched:
            self._apply_vouches(diff.children, self._looked_after)
        self._report.ignored += diff.ignored
        # The listings ahead go on the wire while this directory's rows are written.
        to_list = {e.path for e in diff.subdirs if self._must_list(e.path, e.mtime)}
        self.nas.announce(to_list)
        for path in diff.deleted_files:
            self._add_deleted(path)
        for gone in diff.gone_dirs:
            for path in self.store.live_paths_below(gone):
                self._add_deleted(path)
            self._batch.gone_dirs.append(gone)
        for child in diff.children:
            if isinstance(child, Entry):
                if child.path in to_list:
                    self._visit(child.path, child.mtime)
                elif not subtree_done(child.path, self._resume_after):
                    self._report.dirs_skipped += 1
            elif self._resume_after is None or not file_done(child.obs.path,
                                                             self._resume_after):
                self._add_file(child)
            if self._resume_after is not None and not isinstance(child, Entry) \
                    and path_key(child.obs.path) > path_key(self._resume_after):
                self._resume_after = None  # past the resume point
        self._batch.dirs.append(DirState(d, observed_mtime, bool(diff.subdirs)))
        self._maybe_flush()

    def _apply_vouches(self, children: list[FileDecision | Entry], looked_at: float) -> None:
        for i, child in enumerate(children):
            if isinstance(child, FileDecision) and child.obs.path in self._vouched:
                got = apply_vouch(child, self._vouched[child.obs.path], looked_at,
                                  self.settings.stability)
                if got is not child:
                    children[i] = got
                    self._report.vouched_stable += 1

    def _add_file(self, decision: FileDecision) -> None:
        b = self._batch
        b.processed += 1
        b.last_path = decision.obs.path
        if decision.writes:
            b.files.append(decision)
            b.counts[decision.kind] += 1
        self._maybe_flush()

    def _add_deleted(self, path: str) -> None:
        self._batch.deleted.append(path)
        self._batch.counts["deleted"] += 1
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if self._batch.size >= self._batch_limit:
            self._flush()

    @property
    def _batch_limit(self) -> int:
        """`batch_size` files per transaction for the first ten batches, then a tenth of
        what is done, at most BATCH_GROWTH times `batch_size`: a long scan commits (and
        rewrites the random pages of the file_id index) far less often, and a kill still
        loses at most a tenth of the work, redone on resume."""
        size = self.settings.batch_size
        return min(size * BATCH_GROWTH,
                   max(size, self._cp.processed_files // 10))

    def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def _flush(self) -> None:
        b, cp = self._batch, self._cp
        if not (b.size or b.dirs or b.gone_dirs):
            return
        listed = self._listed_before + self.nas.listings
        counts = dict(b.counts)
        written = {"new": counts.get(NEW, 0),
                   "changed": counts.get(CHANGED, 0) + counts.get(GROWING, 0),
                   "deleted": counts.get("deleted", 0)}
        batch: dict[str, Any] = dict(files=b.files, deleted=b.deleted, dirs=b.dirs,
                                     gone_dirs=b.gone_dirs, last_path=b.last_path,
                                     processed=b.processed, counts=written, dirs_listed=listed)
        if self._writer is None and self._inline_batches == 1:
            self._writer = ScanWriter.start(self.store.conn, cp, self.on_batch)
        if self._writer is not None:
            self._writer.submit(**batch)  # committed behind the walk (scan_writer.py)
            advance(cp, b.last_path, b.processed, written, listed)
        else:
            self.store.write_scan_batch(cp, **batch)
            self._inline_batches += 1
        r = self._report
        r.growing += counts.get(GROWING, 0)
        r.confirmed += counts.get(CONFIRMED, 0)
        self._batch = _Batch()
        self._progress.done = cp.processed_files
        now = self.clock()
        if now - self._last_log >= self.progress_every_s:
            self._last_log = now
            if not self._expected_counted:
                self._expected_counted = True
                self._progress.expected_total = self.store.count_files(
                    cp.partition_key, (PENDING, STABLE, "valid", "invalid")) or None
            self.log(self._progress.line(f"scan {cp.partition_key!r}", now)
                     + f", {listed} directories listed")
        if self.on_batch is not None and self._writer is None:
            self.on_batch(cp)  # the writer calls it as each batch commits

    def _renames(self) -> None:
        gone, new = self.store.rename_candidates(self._cp)
        if not gone or not new:
            return
        pairs = pair_renames([Gone(*g) for g in gone], [Observed(*n) for n in new])
        if pairs:
            self.store.apply_renames(pairs)
            self._report.renamed = len(pairs)
            self.log(f"{len(pairs)} renamed or moved file(s) keep their probe results")

    def _finish_report(self, r: ScanReport, cp: Checkpoint) -> None:
        counts, r.bytes = self.store.partition_summary(cp.partition_key)
        r.new, r.changed, r.deleted = cp.new_files, cp.changed_files, cp.deleted_files
        r.processed_files = cp.processed_files
        r.dirs_listed = cp.dirs_listed
        r.found = sum(v for k, v in counts.items() if k != DELETED)
        r.pending = counts.get(PENDING, 0)
        r.to_probe = counts.get(STABLE, 0)
        r.reconnects = self.nas.reconnects
