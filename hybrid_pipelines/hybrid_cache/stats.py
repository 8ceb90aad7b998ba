"""The numbers every hybrid-cache run reports (one aggregate query over file_metadata)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

FAILURE_WINDOW = "24 hours"


@dataclass(frozen=True)
class QueueStats:
    files: int
    pending: int
    syncing: int
    synced: int
    failed: int
    cached_files: int
    cached_bytes: int
    recache_pending: int
    cache_hits: int
    cache_misses: int
    recent_tried: int
    recent_failing: int

    @property
    def sync_queue_size(self) -> int:
        return self.pending + self.syncing

    @property
    def cache_hit_rate(self) -> float | None:
        total = self.cache_hits + self.cache_misses
        return self.cache_hits / total if total else None

    @property
    def sync_failure_rate(self) -> float:
        """Files touched by sync in the last 24 h that failed or are retrying after a failure."""
        return self.recent_failing / self.recent_tried if self.recent_tried else 0.0

    def metadata(self) -> dict[str, int | float]:
        out: dict[str, int | float] = {
            "sync_queue_size": self.sync_queue_size, "files_pending": self.pending,
            "files_syncing": self.syncing, "files_synced": self.synced,
            "files_failed": self.failed, "files_total": self.files,
            "cached_files": self.cached_files, "cached_bytes": self.cached_bytes,
            "recache_pending": self.recache_pending,
            "sync_failure_rate": round(self.sync_failure_rate, 4),
            "cache_hits": self.cache_hits, "cache_misses": self.cache_misses,
        }
        # Without any recorded access there is no hit rate; -1 would plot as a fake dip.
        if self.cache_hit_rate is not None:
            out["cache_hit_rate"] = round(self.cache_hit_rate, 4)
        return out


def queue_stats(conn: psycopg.Connection) -> QueueStats:
    row = conn.execute(
        "SELECT count(*),"
        " count(*) FILTER (WHERE COALESCE(nas_status, 'pending') = 'pending'),"
        " count(*) FILTER (WHERE nas_status = 'syncing'),"
        " count(*) FILTER (WHERE nas_status = 'synced'),"
        " count(*) FILTER (WHERE nas_status = 'failed'),"
        " count(*) FILTER (WHERE cache_status = 'cached'),"
        " COALESCE(sum(size) FILTER (WHERE cache_status = 'cached'), 0),"
        " count(*) FILTER (WHERE recache_requested AND cache_status IS NULL),"
        " COALESCE(sum(cache_hits), 0), COALESCE(sum(cache_misses), 0),"
        " count(*) FILTER (WHERE last_sync_at > now() - %(window)s::interval),"
        " count(*) FILTER (WHERE last_sync_at > now() - %(window)s::interval"
        "   AND (nas_status = 'failed' OR (COALESCE(nas_status, '') <> 'synced'"
        "                              AND sync_attempts > 0)))"
        " FROM file_metadata", {"window": FAILURE_WINDOW}).fetchone()
    assert row is not None
    return QueueStats(*(int(v) for v in row))
