"""Cheap questions the quiet sensors ask every tick: is there work, and what does the newest
work look like (for an idempotent run key)? Each is one statement over a partial index of
file_metadata (sql/hybrid_cache_schema.py): `file_metadata_pending_idx` (the sync queue),
`file_metadata_sync_lease_idx` (rows left 'syncing'), `file_metadata_recache_idx` (re-cache).
An idle platform has no row in any of them, so the answer costs an empty index scan."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

import psycopg

from hybrid_pipelines.hybrid_cache.runtime import prepare
from hybrid_pipelines.resources import PostgresResource

# The daemon evaluates sensors in threads (dagster.yaml: sensors.use_threads); five of them
# preparing the schema at their first tick at once deadlocked on PostgreSQL's catalog locks.
_PREPARE = threading.Lock()


def prepare_serialised(postgres: PostgresResource) -> None:
    """runtime.prepare, one thread at a time (after the first it is a no-op)."""
    with _PREPARE:
        prepare(postgres)

# Mirrors metadata_store.claim_pending: a row the next sync run would claim now. The first
# condition is the partial index's own predicate, so the planner scans only queued rows;
# %(high)s narrows to sync_priority > 0. Constant text, every value a parameter.
_SYNC_DUE_SQL = (
    "SELECT count(*), max(GREATEST(created_at, updated_at)) FROM file_metadata"
    " WHERE COALESCE(nas_status, 'pending') = 'pending' AND cache_status = 'cached'"
    " AND seaweed_fid IS NOT NULL AND COALESCE(sync_attempts, 0) < %(max_attempts)s"
    " AND (COALESCE(sync_attempts, 0) = 0 OR last_sync_at IS NULL"
    "      OR last_sync_at < now() - make_interval(secs => %(delay)s))"
    " AND (sync_priority > 0 OR NOT %(high)s)")
_LEASE_SQL = ("SELECT count(*), max(lease_until) FROM file_metadata"
              " WHERE nas_status = 'syncing' AND lease_until < now()"
              " AND (sync_priority > 0 OR NOT %(high)s)")


@dataclass(frozen=True)
class Probe:
    count: int
    # The newest change among the counted rows (created or updated), as text: a new row, a
    # retried row or a drained batch changes it, so a run key built from it changes exactly
    # when the work does.
    marker: str

    @property
    def idle(self) -> bool:
        return self.count == 0


def _marker(count: int, newest: datetime | None) -> str:
    return f"{count}@{newest.isoformat() if newest else '-'}"


def sync_due(conn: psycopg.Connection, max_attempts: int, retry_delay_s: float,
             *, high_priority_only: bool = False) -> Probe:
    """Rows the sync would claim now (high priority only: sync_priority > 0), plus rows
    whose 'syncing' lease expired (the next run releases and copies them)."""
    params = {"max_attempts": max_attempts, "delay": retry_delay_s,
              "high": high_priority_only}
    row = conn.execute(_SYNC_DUE_SQL, params).fetchone()
    lease = conn.execute(_LEASE_SQL, params).fetchone()
    assert row is not None and lease is not None
    count = int(row[0]) + int(lease[0])
    newest = max((t for t in (row[1], lease[1]) if t is not None), default=None,
                 key=lambda t: t.replace(tzinfo=None))
    return Probe(count, _marker(count, newest))


def recache_due(conn: psycopg.Connection) -> Probe:
    """NAS-only uploads waiting to be copied back into SeaweedFS (file_metadata_recache_idx)."""
    row = conn.execute(
        "SELECT count(*), max(updated_at) FROM file_metadata"
        " WHERE recache_requested AND cache_status IS NULL").fetchone()
    assert row is not None
    return Probe(int(row[0]), _marker(int(row[0]), row[1]))


def cached_bytes(conn: psycopg.Connection) -> int:
    """Bytes the rows say are in the cache: the eviction sensor's proxy for the bucket's size
    (the job itself lists the bucket). A sum, not a count, but one column of one table."""
    row = conn.execute("SELECT COALESCE(sum(size), 0) FROM file_metadata"
                       " WHERE cache_status = 'cached'").fetchone()
    assert row is not None
    return int(row[0])


def metadata_fingerprint(conn: psycopg.Connection) -> str:
    """What the consistency audit looks at, summarised: rows, and the newest write. Every
    job and the platform's file server set updated_at (or created_at) when they change a
    row; a deleted row changes the count. Reads (last_accessed, access_count) do not count:
    they cannot put the metadata out of step with the stores."""
    row = conn.execute("SELECT count(*), max(created_at), max(updated_at)"
                       " FROM file_metadata").fetchone()
    assert row is not None
    stamps = [t.isoformat() if t is not None else "-" for t in row[1:]]
    return f"{int(row[0])}@{'/'.join(stamps)}"
