"""Probe results: which files wait for a probe, and writing what the prober found."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from hybrid_pipelines.media_catalog.catalog_store.base import CLEAR_PROBE, PROBE_FIELDS, StoreBase
from hybrid_pipelines.media_catalog.rules.scan_diff import DELETED, PENDING, STABLE


class ProbeStore(StoreBase):
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
                      f"updated_at = ?, seq = ?, {CLEAR_PROBE} WHERE path = ? AND status != ?",
                      (size, mtime, PENDING, now, now, self.next_seq(), path, DELETED))
