"""The scan's state: registered folders, the directory and file records a scan diffs
against, its resumable checkpoints, the batches it writes, and renames it detects."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hybrid_pipelines.media_catalog.catalog_store.base import (
    CLEAR_PROBE,
    PROBE_FIELDS,
    PROBE_STATE,
    StoreBase,
    parent_of,
    prefix_bounds,
)
from hybrid_pipelines.media_catalog.rules.catalog_paths import file_id
from hybrid_pipelines.media_catalog.rules.scan_diff import (
    DELETED,
    PENDING,
    STABLE,
    DirState,
    FileDecision,
    Known,
)

# CLEAR_PROBE is a fixed column list, not data.
_INSERT_NEW = (
    "INSERT INTO files (path, file_id, partition_key, dir, name, size, mtime, status,"  # noqa: S608
    " seen_at, first_scan_id, updated_at, seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT(path) DO UPDATE SET partition_key = excluded.partition_key, "
    "size = excluded.size, mtime = excluded.mtime, status = excluded.status, "
    "seen_at = excluded.seen_at, first_scan_id = excluded.first_scan_id, "
    "deleted_scan_id = NULL, deleted_at = NULL, renamed_to = NULL, "
    "catalog_id = NULL, series_id = NULL, content_id = NULL, "
    f"updated_at = excluded.updated_at, seq = excluded.seq, {CLEAR_PROBE}")
_UPDATE_CHANGED = ("UPDATE files SET size = ?, mtime = ?, status = ?, seen_at = ?, "  # noqa: S608
                   f"updated_at = ?, seq = ?, {CLEAR_PROBE} WHERE path = ?")


@dataclass
class Checkpoint:
    scan_id: str
    partition_key: str
    mode: str
    last_path: str | None
    processed_files: int
    new_files: int
    changed_files: int
    deleted_files: int
    dirs_listed: int
    attempts: int
    resumed: bool


def advance(cp: Checkpoint, last_path: str | None, processed: int, counts: dict[str, int],
            dirs_listed: int) -> None:
    """`cp` as a committed batch leaves its row (write_scan_batch)."""
    if last_path is not None:
        cp.last_path = last_path
    cp.processed_files += processed
    cp.new_files += counts.get("new", 0)
    cp.changed_files += counts.get("changed", 0)
    cp.deleted_files += counts.get("deleted", 0)
    cp.dirs_listed = dirs_listed


class ScanStore(StoreBase):
    # ------------------------------------------------------------------ folders / partitions

    def ensure_folder(self, partition_key: str, folder: str) -> None:
        with self.transaction() as c:
            c.execute("INSERT INTO folders (partition_key, folder, added_at) VALUES (?, ?, ?) "
                      "ON CONFLICT(partition_key) DO NOTHING", (partition_key, folder, time.time()))

    def folders(self) -> dict[str, str]:
        return {r[0]: r[1] for r in self.conn.execute(
            "SELECT partition_key, folder FROM folders ORDER BY partition_key")}

    def folder_of(self, partition_key: str) -> str | None:
        row = self.conn.execute("SELECT folder FROM folders WHERE partition_key = ?",
                                (partition_key,)).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------------ scan reads

    def dir_states(self, partition_key: str) -> dict[str, DirState]:
        return {r[0]: DirState(r[0], r[1], bool(r[2])) for r in self.conn.execute(
            "SELECT path, mtime, has_subdirs FROM dirs WHERE partition_key = ?",
            (partition_key,))}

    def pending_dirs(self, partition_key: str) -> set[str]:
        return {r[0] for r in self.conn.execute(
            "SELECT DISTINCT dir FROM files WHERE partition_key = ? AND status = ?",
            (partition_key, PENDING))}

    def listing_sizes(self, dirs: Sequence[str], children: Mapping[str, Sequence[str]]
                      ) -> dict[str, tuple[int, int]]:
        """(entries, characters of their names) each directory held when last listed: its
        live files (one indexed query per 500 directories) and known subdirectories."""
        unique = sorted(set(dirs))
        files: dict[str, tuple[int, int]] = {}
        for i in range(0, len(unique), 500):
            chunk = unique[i: i + 500]
            marks = ",".join("?" * len(chunk))
            files.update((d, (n, chars)) for d, n, chars in self.conn.execute(
                f"SELECT dir, COUNT(*), SUM(LENGTH(path) - LENGTH(dir)) FROM files "  # noqa: S608 - placeholders only
                f"WHERE dir IN ({marks}) AND status != ? GROUP BY dir", (*chunk, DELETED)))
        out: dict[str, tuple[int, int]] = {}
        for d in unique:
            subdirs = children.get(d, ())
            n, chars = files.get(d, (0, 0))
            out[d] = (n + len(subdirs), chars + sum(len(p) - len(d) for p in subdirs))
        return out

    def files_in_dir(self, dir_path: str) -> dict[str, Known]:
        return {r[0]: Known(r[0], r[1], r[2], r[3], r[4]) for r in self.conn.execute(
            "SELECT path, size, mtime, status, seen_at FROM files WHERE dir = ?", (dir_path,))}

    def has_files_under(self, folder: str) -> bool:
        """Any row at all (whatever its partition or status) below `folder` ('' = anywhere):
        one probe of the primary key."""
        if not folder:
            return self.conn.execute("SELECT 1 FROM files LIMIT 1").fetchone() is not None
        lo, hi = prefix_bounds(folder)
        return self.conn.execute("SELECT 1 FROM files WHERE path >= ? AND path < ? LIMIT 1",
                                 (lo, hi)).fetchone() is not None

    def count_files(self, partition_key: str, statuses: Sequence[str]) -> int:
        marks = ",".join("?" * len(statuses))
        return int(self.conn.execute(
            f"SELECT COUNT(*) FROM files WHERE partition_key = ? AND status IN ({marks})",  # noqa: S608 - placeholders only
            (partition_key, *statuses)).fetchone()[0])

    def status_counts(self, partition_key: str) -> dict[str, int]:
        return {r[0]: r[1] for r in self.conn.execute(
            "SELECT status, COUNT(*) FROM files WHERE partition_key = ? GROUP BY status",
            (partition_key,))}

    def live_bytes(self, partition_key: str) -> int:
        return int(self.conn.execute(
            "SELECT COALESCE(SUM(size), 0) FROM files WHERE partition_key = ? AND status != ?",
            (partition_key, DELETED)).fetchone()[0])

    def partition_summary(self, partition_key: str) -> tuple[dict[str, int], int]:
        """status_counts and live_bytes of the partition, kept in sync_state
        ('scan-summary:<partition>') with the partition's newest change number: every write
        that moves a status, a size or a deletion takes a new change number, so an unchanged
        stamp means the same figures, and a rescan that changed nothing reads no row of the
        partition for its report (both sums read every row: most of an unchanged rescan's
        own time at 50,000 files)."""
        stream = f"scan-summary:{partition_key}"
        top = int(self.conn.execute("SELECT MAX(seq) FROM files WHERE partition_key = ?",
                                    (partition_key,)).fetchone()[0] or 0)
        stamp, detail = self.get_state(stream)
        if detail is not None and stamp == top:
            cached = json.loads(detail)
            return dict(cached["counts"]), int(cached["bytes"])
        counts = self.status_counts(partition_key)
        total = self.live_bytes(partition_key)
        self.set_state(stream, top, json.dumps({"counts": counts, "bytes": total},
                                               sort_keys=True))
        return counts, total

    def live_paths_below(self, dir_path: str) -> list[str]:
        lo, hi = prefix_bounds(dir_path)
        return [r[0] for r in self.conn.execute(
            "SELECT path FROM files WHERE path >= ? AND path < ? AND status != ? ORDER BY path",
            (lo, hi, DELETED))]

    def live_paths_of_partition(self, partition_key: str) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT path FROM files WHERE partition_key = ? AND status != ? ORDER BY path",
            (partition_key, DELETED))]

    # ------------------------------------------------------------------ checkpoints

    def open_checkpoint(self, partition_key: str, mode: str) -> Checkpoint:
        """Resume the partition's unfinished scan if there is one, else start a new one."""
        now = time.time()
        with self.transaction() as c:
            row = c.execute(
                "SELECT scan_id, mode, last_path, processed_files, new_files, changed_files, "
                "deleted_files, dirs_listed, attempts FROM scan_checkpoints "
                "WHERE partition_key = ? AND state IN ('running', 'failed') "
                "ORDER BY started_at DESC LIMIT 1", (partition_key,)).fetchone()
            if row:
                # A full reconcile stays full when resumed; an incremental one may be upgraded.
                resumed_mode = "full" if "full" in (row[1], mode) else "incremental"
                c.execute("UPDATE scan_checkpoints SET state = 'running', "
                          "status = 'in_progress', mode = ?, "
                          "attempts = attempts + 1, error = NULL, updated_at = ? "
                          "WHERE scan_id = ?", (resumed_mode, now, row[0]))
                return Checkpoint(row[0], partition_key, resumed_mode, row[2], row[3], row[4],
                                  row[5], row[6], row[7], row[8] + 1, True)
            scan_id = uuid.uuid4().hex
            c.execute("INSERT INTO scan_checkpoints (scan_id, partition_key, mode, status, "
                      "state, processed_files, started_at, updated_at) "
                      "VALUES (?, ?, ?, 'in_progress', 'running', 0, ?, ?)",
                      (scan_id, partition_key, mode, now, now))
            return Checkpoint(scan_id, partition_key, mode, None, 0, 0, 0, 0, 0, 1, False)

    def unfinished_scan(self, partition_key: str) -> tuple[str, str | None, str, float] | None:
        """(scan_id, last_path, state, updated_at) of the partition's unfinished scan; state
        is ours (running | failed), the design's status says in_progress for both."""
        row = self.conn.execute(
            "SELECT scan_id, last_path, state, updated_at FROM scan_checkpoints "
            "WHERE partition_key = ? AND state IN ('running', 'failed') "
            "ORDER BY started_at DESC LIMIT 1", (partition_key,)).fetchone()
        return (row[0], row[1], row[2], row[3]) if row else None

    def checkpoint_row(self, scan_id: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT * FROM scan_checkpoints WHERE scan_id = ?",
                                (scan_id,)).fetchone()
        return dict(row) if row else {}

    def finish_checkpoint(self, cp: Checkpoint, folder: str) -> None:
        now = time.time()
        with self.transaction() as c:
            c.execute("UPDATE scan_checkpoints SET status = 'completed', state = 'done', "
                      "finished_at = ?, "
                      "updated_at = ? WHERE scan_id = ?", (now, now, cp.scan_id))
            c.execute("UPDATE folders SET last_scan_at = ?, last_scan_id = ? "
                      "WHERE partition_key = ?", (now, cp.scan_id, cp.partition_key))

    def fail_checkpoint(self, cp: Checkpoint, error: str) -> None:
        with self.transaction() as c:
            # Still in_progress for the design: the next run resumes it from last_path.
            c.execute("UPDATE scan_checkpoints SET state = 'failed', error = ?, updated_at = ? "
                      "WHERE scan_id = ?", (error[:2000], time.time(), cp.scan_id))

    # ------------------------------------------------------------------ scan writes

    def write_scan_batch(self, cp: Checkpoint, *, files: Sequence[FileDecision],
                         deleted: Sequence[str], dirs: Sequence[DirState],
                         gone_dirs: Sequence[str], last_path: str | None, processed: int,
                         counts: dict[str, int], dirs_listed: int) -> None:
        """One transaction: file rows, deletions, directory records and the checkpoint.
        Rows of a kind go through one prepared statement (executemany); each keeps the
        change number of its place in the batch."""
        now = time.time()
        key, scan_id = cp.partition_key, cp.scan_id
        with self.transaction() as c:
            seqs = list(self.reserve_seqs(len(files) + len(deleted)))
            new: list[tuple] = []
            confirmed: list[tuple] = []
            changed: list[tuple] = []
            for d, seq in zip(files, seqs[:len(files)], strict=True):
                obs = d.obs
                path = obs.path
                if d.kind == "new":
                    cut = path.rfind("/")
                    new.append((path, file_id(path), key, path[:cut] if cut >= 0 else "",
                                path[cut + 1:], obs.size, obs.mtime, d.status, d.seen_at,
                                scan_id, now, seq))
                elif d.kind == "confirmed":
                    confirmed.append((d.status, now, seq, path))
                else:  # changed / growing: new size or mtime, any earlier probe no longer holds
                    changed.append((obs.size, obs.mtime, d.status, d.seen_at, now, seq, path))
            if new:
                c.executemany(_INSERT_NEW, new)
            if confirmed:
                c.executemany("UPDATE files SET status = ?, updated_at = ?, seq = ? "
                              "WHERE path = ?", confirmed)
            if changed:
                c.executemany(_UPDATE_CHANGED, changed)
            if deleted:
                c.executemany(
                    "UPDATE files SET status = ?, deleted_at = ?, deleted_scan_id = ?, "
                    "updated_at = ?, seq = ? WHERE path = ? AND status != ?",
                    [(DELETED, now, scan_id, now, seq, path, DELETED)
                     for path, seq in zip(deleted, seqs[len(files):], strict=True)])
            for gone in gone_dirs:
                lo, hi = prefix_bounds(gone)
                c.execute("DELETE FROM dirs WHERE path = ? OR (path >= ? AND path < ?)",
                          (gone, lo, hi))
            if dirs:
                c.executemany(
                    "INSERT INTO dirs (path, partition_key, parent, mtime, has_subdirs, listed_at) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
                    "mtime = excluded.mtime, has_subdirs = excluded.has_subdirs, "
                    "listed_at = excluded.listed_at",
                    [(ds.path, key, parent_of(ds.path), ds.mtime, int(ds.has_subdirs), now)
                     for ds in dirs])
            new_last = last_path if last_path is not None else cp.last_path
            c.execute(
                "UPDATE scan_checkpoints SET last_path = ?, processed_files = processed_files + ?,"
                " new_files = new_files + ?, changed_files = changed_files + ?, "
                "deleted_files = deleted_files + ?, dirs_listed = ?, updated_at = ? "
                "WHERE scan_id = ?",
                (new_last, processed, counts.get("new", 0), counts.get("changed", 0),
                 counts.get("deleted", 0), dirs_listed, now, scan_id))
        advance(cp, last_path, processed, counts, dirs_listed)

    def drop_partition_dirs(self, partition_key: str) -> None:
        with self.transaction() as c:
            c.execute("DELETE FROM dirs WHERE partition_key = ?", (partition_key,))

    # ------------------------------------------------------------------ renames

    def rename_candidates(self, cp: Checkpoint) -> tuple[list[tuple], list[tuple]]:
        gone = self.conn.execute(
            "SELECT path, size, mtime FROM files WHERE partition_key = ? AND status = ? "
            "AND deleted_scan_id = ? AND renamed_to IS NULL AND probed_at IS NOT NULL",
            (cp.partition_key, DELETED, cp.scan_id)).fetchall()
        if not gone:  # nothing can pair: a first scan need not read back every new file
            return [], []
        new = self.conn.execute(
            "SELECT path, size, mtime FROM files WHERE partition_key = ? AND status = ? "
            "AND first_scan_id = ? AND probed_at IS NULL",
            (cp.partition_key, STABLE, cp.scan_id)).fetchall()
        return [tuple(r) for r in gone], [tuple(r) for r in new]

    def apply_renames(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Carry the probe of a renamed file over to its new path instead of probing again."""
        now = time.time()
        cols = ", ".join((*PROBE_FIELDS, *PROBE_STATE))
        for start in range(0, len(pairs), 100):
            with self.transaction() as c:
                for old, new in pairs[start:start + 100]:
                    row = c.execute(f"SELECT {cols} FROM files WHERE path = ?",  # noqa: S608 - fixed column list
                                    (old,)).fetchone()
                    values = dict(zip((*PROBE_FIELDS, *PROBE_STATE), row, strict=True))
                    status = "invalid" if values["probe_error"] else "valid"
                    sets = ", ".join(f"{k} = ?" for k in values)
                    c.execute(f"UPDATE files SET {sets}, status = ?, updated_at = ?, seq = ? "  # noqa: S608 - fixed column list
                              "WHERE path = ? AND status = ?",
                              (*values.values(), status, now, self.next_seq(), new, STABLE))
                    c.execute("UPDATE files SET renamed_to = ? WHERE path = ?", (new, old))
