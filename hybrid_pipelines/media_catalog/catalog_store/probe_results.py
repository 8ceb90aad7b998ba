"""Probe results: which files wait for a probe, writing what the prober found, and marking
files for a re-probe (rules/reprobe.py says which failures are retried and when)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hybrid_pipelines.media_catalog.catalog_store.base import (
    CLEAR_PROBE,
    PROBE_FIELDS,
    StoreBase,
    prefix_bounds,
)
from hybrid_pipelines.media_catalog.rules.scan_diff import DELETED, PENDING, STABLE

# A probed file is probed again when its retry time has come (a retryable failure, or an
# operator's request), or when it failed under another ffprobe than the one running now.
_DUE = ("(status IN ('valid', 'invalid') AND probe_retry_after IS NOT NULL "
        "AND probe_retry_after <= ?)")
_OTHER_FFPROBE = ("(status = 'invalid' AND (probe_tool_version IS NULL "
                  "OR probe_tool_version != ?))")


@dataclass(frozen=True)
class ProbeTask:
    """A file to probe and what its row said when it was picked (the result is written only
    if the row still says so)."""

    path: str
    size: int
    mtime: float
    status: str = STABLE
    attempts: int = 0  # retryable failures in a row so far (0: a first or requested probe)


@dataclass(frozen=True)
class ReprobeSelection:
    """Files an operator wants probed again: under `folder` (share-relative; None: all),
    only invalid ones, only those whose error contains `error` (case-insensitive)."""

    folder: str | None = None
    invalid_only: bool = False
    error: str | None = None
    partition_key: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        sql = ["status IN ('valid', 'invalid')"]
        args: list[Any] = []
        if self.partition_key is not None:
            sql.append("partition_key = ?")
            args.append(self.partition_key)
        if self.folder:
            lo, hi = prefix_bounds(self.folder.rstrip("/"))
            sql.append("(path = ? OR (path >= ? AND path < ?))")
            args += [self.folder.rstrip("/"), lo, hi]
        if self.invalid_only or self.error:
            sql.append("status = 'invalid'")
        if self.error:
            sql.append("instr(lower(probe_error), lower(?)) > 0")
            args.append(self.error)
        return " AND ".join(sql), args


class ProbeStore(StoreBase):
    def files_to_probe(self, partition_key: str) -> list[tuple[str, int, float]]:
        """The stable files (never probed since their last change)."""
        return [(r[0], r[1], r[2]) for r in self.conn.execute(
            "SELECT path, size, mtime FROM files WHERE partition_key = ? AND status = ? "
            "ORDER BY path", (partition_key, STABLE))]

    def probe_tasks(self, partition_key: str, tool_version: str | None,
                    now: float | None = None) -> list[ProbeTask]:
        """Stable files, files whose re-probe is due, and invalid files another ffprobe
        judged (tool_version None: skip that last test)."""
        now = time.time() if now is None else now
        sql = f"status = ? OR {_DUE}"  # noqa: S608 - fixed fragments
        args: list[Any] = [STABLE, now]
        if tool_version is not None:
            sql += f" OR {_OTHER_FFPROBE}"
            args.append(tool_version)
        rows = self.conn.execute(
            "SELECT path, size, mtime, status, probe_attempts, probe_retry_after FROM files "  # noqa: S608
            f"WHERE partition_key = ? AND ({sql}) ORDER BY path", (partition_key, *args))
        # Only a scheduled retry continues the count; a new version or a request starts over.
        return [ProbeTask(r[0], r[1], r[2], r[3], int(r[4] or 0) if r[5] is not None and
                          r[3] == "invalid" else 0) for r in rows]

    def count_due_reprobes(self, partition_key: str, tool_version: str | None = None,
                           now: float | None = None) -> int:
        now = time.time() if now is None else now
        sql, args = _DUE, [now]
        if tool_version is not None:
            sql += f" OR {_OTHER_FFPROBE}"
            args.append(tool_version)
        return int(self.conn.execute(
            f"SELECT COUNT(*) FROM files WHERE partition_key = ? AND ({sql})",  # noqa: S608
            (partition_key, *args)).fetchone()[0])

    def write_probe_results(self, results: Iterable[tuple[str, int, float, dict[str, Any]]]
                            ) -> int:
        """(path, size, mtime, fields) rows; a row is written only if the file still has the
        size and mtime it was probed at, and the status it had when it was picked
        (fields["prior_status"], stable by default). Returns the rows written."""
        now = time.time()
        written = 0
        with self.transaction() as c:
            for path, size, mtime, res in results:
                status = "valid" if res["ok"] else "invalid"
                cur = c.execute(
                    "UPDATE files SET status = ?, format = ?, duration = ?, bit_rate = ?, "
                    "video_codec = ?, width = ?, height = ?, fps = ?, audio_codec = ?, "
                    "channels = ?, sample_rate = ?, probe_error = ?, bytes_read = ?, "
                    "probed_at = ?, updated_at = ?, seq = ?, probe_tool_version = ?, "
                    "probe_failure_class = ?, probe_attempts = ?, probe_retry_after = ? "
                    "WHERE path = ? AND size = ? AND mtime = ? AND status = ?",
                    (status, *(res.get(f) for f in PROBE_FIELDS), res.get("error"),
                     res.get("bytes_read"), now, now, self.next_seq(),
                     res.get("tool_version"), None if res["ok"] else res.get("failure_class"),
                     int(res.get("attempts") or 0), res.get("retry_after"),
                     path, size, mtime, res.get("prior_status", STABLE)))
                written += cur.rowcount
        return written

    def mark_for_reprobe(self, selection: ReprobeSelection,
                         now: float | None = None) -> dict[str, int]:
        """Make the selected files due now (attempts start over); {partition: files}. The
        next probe of each partition picks them up."""
        now = time.time() if now is None else now
        where, args = selection.where()
        with self.transaction() as c:
            counts = {r[0]: int(r[1]) for r in c.execute(
                f"SELECT partition_key, COUNT(*) FROM files WHERE {where} "  # noqa: S608
                "GROUP BY partition_key ORDER BY partition_key", args)}
            c.execute(f"UPDATE files SET probe_retry_after = ?, probe_attempts = 0 "  # noqa: S608
                      f"WHERE {where}", (now, *args))
        return counts

    def mark_changed_since_scan(self, path: str, size: int, mtime: float) -> None:
        """The file no longer matches its scan (rewritten in place): wait for it to settle."""
        now = time.time()
        with self.transaction() as c:
            c.execute(f"UPDATE files SET size = ?, mtime = ?, status = ?, seen_at = ?, "  # noqa: S608
                      f"updated_at = ?, seq = ?, {CLEAR_PROBE} WHERE path = ? AND status != ?",
                      (size, mtime, PENDING, now, now, self.next_seq(), path, DELETED))
