"""Every SQL statement of the media catalog (SQLite). Parameterised, one writer at a time.

The connection comes from SQLiteCatalogResource (autocommit mode, WAL); `transaction()`
opens BEGIN IMMEDIATE so a batch of rows, its checkpoint and its change numbers commit or
roll back together."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources as pkg_resources
from typing import Any

from hybrid_pipelines.media_catalog.rules.catalog_paths import file_id
from hybrid_pipelines.media_catalog.rules.scan_diff import (
    DELETED,
    PENDING,
    STABLE,
    DirState,
    FileDecision,
    Known,
)

PROBE_FIELDS = ("format", "duration", "bit_rate", "video_codec", "width", "height", "fps",
                "audio_codec", "channels", "sample_rate")
_CLEAR_PROBE = ", ".join(f"{f} = NULL" for f in (*PROBE_FIELDS, "probe_error", "probed_at",
                                                  "bytes_read"))


def apply_schema(conn: sqlite3.Connection) -> None:
    sql = pkg_resources.files("hybrid_pipelines.sql").joinpath("catalog.sql").read_text()
    conn.executescript(sql)


def has_schema(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                        "name = 'sync_state'").fetchone() is not None


def parent_of(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def prefix_bounds(dir_path: str) -> tuple[str, str]:
    """[lo, hi) covering every path strictly below `dir_path` ('0' sorts right after '/')."""
    return dir_path + "/", dir_path + "0"


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


@dataclass(frozen=True)
class ChangeRow:
    kind: str  # file | content | series | catalog | player
    seq: int
    doc_id: str


class CatalogStore:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def next_seq(self) -> int:
        row = self.conn.execute(
            "UPDATE counters SET value = value + 1 WHERE name = 'seq' RETURNING value").fetchone()
        return int(row[0])

    def reserve_seqs(self, n: int) -> Iterator[int]:
        """n change numbers in one statement (inside the caller's transaction)."""
        if n <= 0:
            return iter(())
        row = self.conn.execute("UPDATE counters SET value = value + ? WHERE name = 'seq' "
                                "RETURNING value", (n,)).fetchone()
        return iter(range(int(row[0]) - n + 1, int(row[0]) + 1))

    def current_seq(self) -> int:
        return int(self.conn.execute("SELECT value FROM counters WHERE name = 'seq'").fetchone()[0])

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

    def files_in_dir(self, dir_path: str) -> dict[str, Known]:
        return {r[0]: Known(r[0], r[1], r[2], r[3], r[4]) for r in self.conn.execute(
            "SELECT path, size, mtime, status, seen_at FROM files WHERE dir = ?", (dir_path,))}

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
                "WHERE partition_key = ? AND status IN ('running', 'failed') "
                "ORDER BY started_at DESC LIMIT 1", (partition_key,)).fetchone()
            if row:
                # A full reconcile stays full when resumed; an incremental one may be upgraded.
                resumed_mode = "full" if "full" in (row[1], mode) else "incremental"
                c.execute("UPDATE scan_checkpoints SET status = 'running', mode = ?, "
                          "attempts = attempts + 1, error = NULL, updated_at = ? "
                          "WHERE scan_id = ?", (resumed_mode, now, row[0]))
                return Checkpoint(row[0], partition_key, resumed_mode, row[2], row[3], row[4],
                                  row[5], row[6], row[7], row[8] + 1, True)
            scan_id = uuid.uuid4().hex
            c.execute("INSERT INTO scan_checkpoints (scan_id, partition_key, mode, status, "
                      "started_at, updated_at) VALUES (?, ?, ?, 'running', ?, ?)",
                      (scan_id, partition_key, mode, now, now))
            return Checkpoint(scan_id, partition_key, mode, None, 0, 0, 0, 0, 0, 1, False)

    def unfinished_scan(self, partition_key: str) -> tuple[str, str | None, str, float] | None:
        """(scan_id, last_path, status, updated_at) of the partition's unfinished scan."""
        row = self.conn.execute(
            "SELECT scan_id, last_path, status, updated_at FROM scan_checkpoints "
            "WHERE partition_key = ? AND status IN ('running', 'failed') "
            "ORDER BY started_at DESC LIMIT 1", (partition_key,)).fetchone()
        return (row[0], row[1], row[2], row[3]) if row else None

    def checkpoint_row(self, scan_id: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT * FROM scan_checkpoints WHERE scan_id = ?",
                                (scan_id,)).fetchone()
        return dict(row) if row else {}

    def finish_checkpoint(self, cp: Checkpoint, folder: str) -> None:
        now = time.time()
        with self.transaction() as c:
            c.execute("UPDATE scan_checkpoints SET status = 'done', finished_at = ?, "
                      "updated_at = ? WHERE scan_id = ?", (now, now, cp.scan_id))
            c.execute("UPDATE folders SET last_scan_at = ?, last_scan_id = ? "
                      "WHERE partition_key = ?", (now, cp.scan_id, cp.partition_key))

    def fail_checkpoint(self, cp: Checkpoint, error: str) -> None:
        with self.transaction() as c:
            c.execute("UPDATE scan_checkpoints SET status = 'failed', error = ?, updated_at = ? "
                      "WHERE scan_id = ?", (error[:2000], time.time(), cp.scan_id))

    # ------------------------------------------------------------------ scan writes

    def write_scan_batch(self, cp: Checkpoint, *, files: Sequence[FileDecision],
                         deleted: Sequence[str], dirs: Sequence[DirState],
                         gone_dirs: Sequence[str], last_path: str | None, processed: int,
                         counts: dict[str, int], dirs_listed: int) -> None:
        """One transaction: file rows, deletions, directory records and the checkpoint."""
        now = time.time()
        with self.transaction() as c:
            seqs = self.reserve_seqs(len(files) + len(deleted))
            for d in files:
                self._write_file(c, cp, d, now, next(seqs))
            for path in deleted:
                self._mark_deleted(c, cp, path, now, next(seqs))
            for gone in gone_dirs:
                lo, hi = prefix_bounds(gone)
                c.execute("DELETE FROM dirs WHERE path = ? OR (path >= ? AND path < ?)",
                          (gone, lo, hi))
            for dstate in dirs:
                c.execute(
                    "INSERT INTO dirs (path, partition_key, parent, mtime, has_subdirs, listed_at) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
                    "mtime = excluded.mtime, has_subdirs = excluded.has_subdirs, "
                    "listed_at = excluded.listed_at",
                    (dstate.path, cp.partition_key, parent_of(dstate.path), dstate.mtime,
                     int(dstate.has_subdirs), now))
            new_last = last_path if last_path is not None else cp.last_path
            c.execute(
                "UPDATE scan_checkpoints SET last_path = ?, processed_files = processed_files + ?,"
                " new_files = new_files + ?, changed_files = changed_files + ?, "
                "deleted_files = deleted_files + ?, dirs_listed = ?, updated_at = ? "
                "WHERE scan_id = ?",
                (new_last, processed, counts.get("new", 0), counts.get("changed", 0),
                 counts.get("deleted", 0), dirs_listed, now, cp.scan_id))
        cp.last_path = new_last
        cp.processed_files += processed
        cp.new_files += counts.get("new", 0)
        cp.changed_files += counts.get("changed", 0)
        cp.deleted_files += counts.get("deleted", 0)
        cp.dirs_listed = dirs_listed

    def _write_file(self, c: sqlite3.Connection, cp: Checkpoint, d: FileDecision,
                    now: float, seq: int) -> None:
        obs = d.obs
        if d.kind == "new":
            name = obs.path.rsplit("/", 1)[-1]
            c.execute(
                "INSERT INTO files (path, file_id, partition_key, dir, name, size, mtime, status,"  # noqa: S608
                " seen_at, first_scan_id, updated_at, seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(path) DO UPDATE SET partition_key = excluded.partition_key, "
                "size = excluded.size, mtime = excluded.mtime, status = excluded.status, "
                "seen_at = excluded.seen_at, first_scan_id = excluded.first_scan_id, "
                "deleted_scan_id = NULL, deleted_at = NULL, renamed_to = NULL, "
                "catalog_id = NULL, series_id = NULL, content_id = NULL, "
                f"updated_at = excluded.updated_at, seq = excluded.seq, {_CLEAR_PROBE}",
                (obs.path, file_id(obs.path), cp.partition_key, parent_of(obs.path), name,
                 obs.size, obs.mtime, d.status, d.seen_at, cp.scan_id, now, seq))
        elif d.kind == "confirmed":
            c.execute("UPDATE files SET status = ?, updated_at = ?, seq = ? WHERE path = ?",
                      (d.status, now, seq, obs.path))
        else:  # changed / growing: new size or mtime, any earlier probe no longer holds
            c.execute(
                "UPDATE files SET size = ?, mtime = ?, status = ?, seen_at = ?, updated_at = ?, "  # noqa: S608
                f"seq = ?, {_CLEAR_PROBE} WHERE path = ?",
                (obs.size, obs.mtime, d.status, d.seen_at, now, seq, obs.path))

    def _mark_deleted(self, c: sqlite3.Connection, cp: Checkpoint, path: str,
                      now: float, seq: int) -> None:
        c.execute("UPDATE files SET status = ?, deleted_at = ?, deleted_scan_id = ?, "
                  "updated_at = ?, seq = ? WHERE path = ? AND status != ?",
                  (DELETED, now, cp.scan_id, now, seq, path, DELETED))

    def drop_partition_dirs(self, partition_key: str) -> None:
        with self.transaction() as c:
            c.execute("DELETE FROM dirs WHERE partition_key = ?", (partition_key,))

    # ------------------------------------------------------------------ renames

    def rename_candidates(self, cp: Checkpoint) -> tuple[list[tuple], list[tuple]]:
        gone = self.conn.execute(
            "SELECT path, size, mtime FROM files WHERE partition_key = ? AND status = ? "
            "AND deleted_scan_id = ? AND renamed_to IS NULL AND probed_at IS NOT NULL",
            (cp.partition_key, DELETED, cp.scan_id)).fetchall()
        new = self.conn.execute(
            "SELECT path, size, mtime FROM files WHERE partition_key = ? AND status = ? "
            "AND first_scan_id = ? AND probed_at IS NULL",
            (cp.partition_key, STABLE, cp.scan_id)).fetchall()
        return [tuple(r) for r in gone], [tuple(r) for r in new]

    def apply_renames(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Carry the probe of a renamed file over to its new path instead of probing again."""
        now = time.time()
        cols = ", ".join((*PROBE_FIELDS, "probe_error", "probed_at", "bytes_read"))
        for start in range(0, len(pairs), 100):
            with self.transaction() as c:
                for old, new in pairs[start:start + 100]:
                    row = c.execute(f"SELECT {cols} FROM files WHERE path = ?",  # noqa: S608 - fixed column list
                                    (old,)).fetchone()
                    values = dict(zip((*PROBE_FIELDS, "probe_error", "probed_at", "bytes_read"),
                                      row, strict=True))
                    status = "invalid" if values["probe_error"] else "valid"
                    sets = ", ".join(f"{k} = ?" for k in values)
                    c.execute(f"UPDATE files SET {sets}, status = ?, updated_at = ?, seq = ? "  # noqa: S608 - fixed column list
                              "WHERE path = ? AND status = ?",
                              (*values.values(), status, now, self.next_seq(), new, STABLE))
                    c.execute("UPDATE files SET renamed_to = ? WHERE path = ?", (new, old))

    # ------------------------------------------------------------------ probes

    def files_to_probe(self, partition_key: str) -> list[tuple[str, int, float]]:
        return [(r[0], r[1], r[2]) for r in self.conn.execute(
            "SELECT path, size, mtime FROM files WHERE partition_key = ? AND status = ? "
            "ORDER BY path", (partition_key, STABLE))]

    def write_probe_results(self, results: Iterable[tuple[str, int, float, dict[str, Any]]]
                            ) -> int:
        """(path, size, mtime, fields) rows; a row is written only if the file still has the
        size and mtime it was probed at. Returns the rows written."""
        now = time.time()
        written = 0
        with self.transaction() as c:
            for path, size, mtime, res in results:
                status = "valid" if res["ok"] else "invalid"
                cur = c.execute(
                    "UPDATE files SET status = ?, format = ?, duration = ?, bit_rate = ?, "
                    "video_codec = ?, width = ?, height = ?, fps = ?, audio_codec = ?, "
                    "channels = ?, sample_rate = ?, probe_error = ?, bytes_read = ?, "
                    "probed_at = ?, updated_at = ?, seq = ? "
                    "WHERE path = ? AND size = ? AND mtime = ? AND status = ?",
                    (status, *(res.get(f) for f in PROBE_FIELDS), res.get("error"),
                     res.get("bytes_read"), now, now, self.next_seq(), path, size, mtime,
                     STABLE))
                written += cur.rowcount
        return written

    def mark_changed_since_scan(self, path: str, size: int, mtime: float) -> None:
        """The file no longer matches its scan (rewritten in place): wait for it to settle."""
        now = time.time()
        with self.transaction() as c:
            c.execute(f"UPDATE files SET size = ?, mtime = ?, status = ?, seen_at = ?, "  # noqa: S608
                      f"updated_at = ?, seq = ?, {_CLEAR_PROBE} WHERE path = ? AND status != ?",
                      (size, mtime, PENDING, now, now, self.next_seq(), path, DELETED))

    # ------------------------------------------------------------------ sync state

    def get_state(self, stream: str) -> tuple[int, str | None]:
        row = self.conn.execute("SELECT cursor, detail FROM sync_state WHERE stream = ?",
                                (stream,)).fetchone()
        return (int(row[0]), row[1]) if row else (0, None)

    def set_state(self, stream: str, cursor: int, detail: str | None = None) -> None:
        with self.transaction() as c:
            c.execute("INSERT INTO sync_state (stream, cursor, detail, updated_at) "
                      "VALUES (?, ?, ?, ?) ON CONFLICT(stream) DO UPDATE SET "
                      "cursor = excluded.cursor, detail = excluded.detail, "
                      "updated_at = excluded.updated_at", (stream, cursor, detail, time.time()))

    # ------------------------------------------------------------------ Firestore feed

    def partition_max_seq(self, partition_key: str) -> int:
        row = self.conn.execute(
            "SELECT MAX(m) FROM (SELECT MAX(seq) AS m FROM files WHERE partition_key = ?1 "
            "UNION ALL SELECT MAX(seq) FROM contents WHERE partition_key = ?1 "
            "UNION ALL SELECT MAX(seq) FROM series WHERE partition_key = ?1 "
            "UNION ALL SELECT MAX(seq) FROM catalogs WHERE partition_key = ?1)",
            (partition_key,)).fetchone()
        return int(row[0] or 0)

    def players_max_seq(self) -> int:
        return int(self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM players").fetchone()[0])

    def partition_changes(self, partition_key: str, after: int, limit: int) -> list[ChangeRow]:
        rows = self.conn.execute(
            "SELECT kind, seq, id FROM ("
            " SELECT 'file' AS kind, seq, file_id AS id FROM files"
            "  WHERE partition_key = ?1 AND seq > ?2"
            " UNION ALL SELECT 'content', seq, content_id FROM contents"
            "  WHERE partition_key = ?1 AND seq > ?2"
            " UNION ALL SELECT 'series', seq, series_id FROM series"
            "  WHERE partition_key = ?1 AND seq > ?2"
            " UNION ALL SELECT 'catalog', seq, catalog_id FROM catalogs"
            "  WHERE partition_key = ?1 AND seq > ?2"
            ") ORDER BY seq LIMIT ?3", (partition_key, after, limit)).fetchall()
        return [ChangeRow(r[0], r[1], r[2]) for r in rows]

    def player_changes(self, after: int, limit: int) -> list[ChangeRow]:
        return [ChangeRow("player", r[0], r[1]) for r in self.conn.execute(
            "SELECT seq, player_id FROM players WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit))]

    def rows_by_id(self, kind: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        table, key = {"file": ("files", "file_id"), "content": ("contents", "content_id"),
                      "series": ("series", "series_id"), "catalog": ("catalogs", "catalog_id"),
                      "player": ("players", "player_id")}[kind]
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.conn.execute(
                    f"SELECT * FROM {table} WHERE {key} IN ({marks})", chunk):  # noqa: S608 - table from a fixed map
                out[r[key]] = dict(r)
        return out

    def live_counts(self, partition_key: str) -> dict[str, int]:
        q = {"files": "SELECT COUNT(*) FROM files WHERE partition_key = ? AND status != 'deleted'",
             "contents": "SELECT COUNT(*) FROM contents WHERE partition_key = ? AND deleted = 0",
             "series": "SELECT COUNT(*) FROM series WHERE partition_key = ? AND deleted = 0"}
        return {k: int(self.conn.execute(sql, (partition_key,)).fetchone()[0])
                for k, sql in q.items()}

    def live_file_ids(self, partition_key: str) -> set[str]:
        return {r[0] for r in self.conn.execute(
            "SELECT file_id FROM files WHERE partition_key = ? AND status != 'deleted'",
            (partition_key,))}

    # ------------------------------------------------------------------ catalog entities

    def files_since(self, partition_key: str, after: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT path, status, catalog_id, series_id, content_id, seq FROM files "
            "WHERE partition_key = ? AND seq > ? ORDER BY path", (partition_key, after)).fetchall()

    def set_file_place(self, path: str, catalog_id: str, series_id: str, content_id: str,
                       bump: bool) -> None:
        if bump:
            self.conn.execute("UPDATE files SET catalog_id = ?, series_id = ?, content_id = ?, "
                              "updated_at = ?, seq = ? WHERE path = ?",
                              (catalog_id, series_id, content_id, time.time(), self.next_seq(),
                               path))
        else:
            self.conn.execute("UPDATE files SET catalog_id = ?, series_id = ?, content_id = ? "
                              "WHERE path = ?", (catalog_id, series_id, content_id, path))

    def live_files_of(self, column: str, value: str) -> list[sqlite3.Row]:
        assert column in ("content_id", "series_id")
        return self.conn.execute(
            f"SELECT path, size, duration, status FROM files WHERE {column} = ? "  # noqa: S608 - fixed column
            "AND status != 'deleted' ORDER BY path", (value,)).fetchall()

    def row(self, table: str, key: str, value: str) -> sqlite3.Row | None:
        assert table in ("contents", "series", "catalogs", "players")
        return self.conn.execute(f"SELECT * FROM {table} WHERE {key} = ?",  # noqa: S608 - fixed names
                                 (value,)).fetchone()

    def upsert_entity(self, table: str, key: str, values: dict[str, Any]) -> bool:
        """Insert or update one entity row; a new change number only if something changed."""
        assert table in ("contents", "series", "catalogs", "players")
        existing = self.row(table, key, values[key])
        if existing is not None and all(existing[k] == v for k, v in values.items()):
            return False
        cols = [*values, "updated_at", "seq"]
        params = [*values.values(), time.time(), self.next_seq()]
        if existing is None:
            self.conn.execute(
                f"INSERT INTO {table} ({', '.join(cols)}) "  # noqa: S608 - fixed names
                f"VALUES ({', '.join('?' * len(cols))})", params)
        else:
            sets = ", ".join(f"{c} = ?" for c in cols)
            self.conn.execute(f"UPDATE {table} SET {sets} WHERE {key} = ?",  # noqa: S608 - fixed names
                              [*params, values[key]])
        return True

    def content_links(self, content_id: str) -> set[str]:
        return {r[0] for r in self.conn.execute(
            "SELECT player_id FROM content_players WHERE content_id = ?", (content_id,))}

    def set_content_links(self, content_id: str, partition_key: str, player_ids: set[str],
                          old: set[str]) -> None:
        for pid in old - player_ids:
            self.conn.execute("DELETE FROM content_players WHERE content_id = ? AND "
                              "player_id = ?", (content_id, pid))
        for pid in player_ids - old:
            self.conn.execute("INSERT OR IGNORE INTO content_players (content_id, player_id, "
                              "partition_key) VALUES (?, ?, ?)", (content_id, pid, partition_key))

    def player_content_count(self, player_id: str) -> int:
        return int(self.conn.execute(
            "SELECT COUNT(*) FROM content_players WHERE player_id = ?",
            (player_id,)).fetchone()[0])

    def series_counts(self, series_id: str) -> tuple[int, int]:
        contents = self.conn.execute(
            "SELECT COUNT(*) FROM contents WHERE series_id = ? AND deleted = 0",
            (series_id,)).fetchone()[0]
        files = self.conn.execute(
            "SELECT COUNT(*) FROM files WHERE series_id = ? AND status != 'deleted'",
            (series_id,)).fetchone()[0]
        return int(contents), int(files)

    def catalog_counts(self, partition_key: str) -> dict[str, int]:
        c = self.conn
        return {
            "series_count": int(c.execute("SELECT COUNT(*) FROM series WHERE partition_key = ? "
                                          "AND deleted = 0", (partition_key,)).fetchone()[0]),
            "content_count": int(c.execute("SELECT COUNT(*) FROM contents WHERE "
                                           "partition_key = ? AND deleted = 0",
                                           (partition_key,)).fetchone()[0]),
            "file_count": self.count_files(partition_key, ("pending", "stable", "valid",
                                                           "invalid")),
            "total_bytes": self.live_bytes(partition_key),
        }

    def partition_player_count(self, partition_key: str) -> int:
        return int(self.conn.execute(
            "SELECT COUNT(DISTINCT player_id) FROM content_players WHERE partition_key = ?",
            (partition_key,)).fetchone()[0])


def json_list(value: str | None) -> list[Any]:
    return json.loads(value) if value else []
