"""file_metadata in PostgreSQL: every state change of the sync queue as one conditional,
parameterised statement, so concurrent runs and crashes can only leave states we expect.

Functions take an open psycopg connection in autocommit mode (each statement is its own
transaction) unless they say otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

# The queue: the platform writes 'pending'; a NULL nas_status (a row written oddly) is not
# synced, so COALESCE(nas_status, 'pending') queues it too, never treats it as synced.
# sync_attempts is nullable on the platform's table (DEFAULT 0 only): NULL is no attempt yet.


def as_utc(value: datetime | None) -> datetime | None:
    """The platform's TIMESTAMP columns hold UTC without a zone (sessions run in UTC): attach
    it, so they compare with our timestamptz values and with time.time()."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class FileRow:
    id: UUID
    original_name: str
    stored_name: str
    size: int
    hash: str | None
    seaweed_fid: str | None
    nas_path: str | None
    sync_attempts: int
    sync_priority: int
    created_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> FileRow:
        values = {k: row[k] for k in cls.__dataclass_fields__}
        values["created_at"] = as_utc(values["created_at"]) or datetime.now(UTC)
        values["sync_attempts"] = values["sync_attempts"] or 0
        return cls(**values)


def release_expired_leases(conn: psycopg.Connection) -> int:
    """Rows left 'syncing' by a run that died go back to the queue. No attempt is charged: the
    file did nothing wrong, the run stopped."""
    cur = conn.execute(
        "UPDATE file_metadata SET nas_status = 'pending', claimed_by = NULL, claimed_at = NULL,"
        " lease_until = NULL, last_error = 'lease expired: the run that claimed it stopped',"
        " updated_at = now()"
        " WHERE nas_status = 'syncing' AND lease_until < now()")
    return cur.rowcount


def claim_pending(conn: psycopg.Connection, owner: str, batch_size: int, lease_s: float,
                  max_attempts: int, retry_delay_s: float = 0.0,
                  exclude: list[UUID] | None = None) -> list[FileRow]:
    """Claim up to `batch_size` pending rows, high priority first, then FIFO. SKIP LOCKED lets a
    concurrent run claim the next rows instead of waiting for, or duplicating, these. A row
    that failed less than `retry_delay_s` ago, or is in `exclude`, waits for a later run."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "UPDATE file_metadata SET nas_status = 'syncing', claimed_by = %(owner)s,"
            " claimed_at = now(), lease_until = now() + make_interval(secs => %(lease)s),"
            " updated_at = now()"
            " WHERE id IN (SELECT id FROM file_metadata"
            "   WHERE COALESCE(nas_status, 'pending') = 'pending' AND cache_status = 'cached'"
            "     AND seaweed_fid IS NOT NULL AND COALESCE(sync_attempts, 0) < %(max_attempts)s"
            "     AND (COALESCE(sync_attempts, 0) = 0 OR last_sync_at IS NULL"
            "          OR last_sync_at < now() - make_interval(secs => %(delay)s))"
            "     AND NOT (id = ANY(%(exclude)s))"
            "   ORDER BY sync_priority DESC, created_at, id"
            "   LIMIT %(batch)s FOR UPDATE SKIP LOCKED)"
            " RETURNING id, original_name, stored_name, size, hash, seaweed_fid, nas_path,"
            "   sync_attempts, sync_priority, created_at",
            {"owner": owner, "lease": float(lease_s), "max_attempts": max_attempts,
             "delay": float(retry_delay_s), "exclude": exclude or [], "batch": batch_size})
        rows = [FileRow.from_row(r) for r in cur.fetchall()]
    # RETURNING has no order; process in queue order.
    rows.sort(key=lambda r: (-r.sync_priority, r.created_at, str(r.id)))
    return rows


def renew_lease(conn: psycopg.Connection, owner: str, ids: list[UUID], lease_s: float) -> set[UUID]:
    """Extend our lease on `ids`; returns the ids we still hold."""
    cur = conn.execute(
        "UPDATE file_metadata SET lease_until = now() + make_interval(secs => %s)"
        " WHERE id = ANY(%s) AND nas_status = 'syncing' AND claimed_by = %s RETURNING id",
        (float(lease_s), ids, owner))
    return {r[0] for r in cur.fetchall()}


def assign_nas_path(conn: psycopg.Connection, file_id: UUID, owner: str, nas_path: str) -> bool:
    cur = conn.execute(
        "UPDATE file_metadata SET nas_path = %s, updated_at = now()"
        " WHERE id = %s AND claimed_by = %s AND nas_status = 'syncing' AND nas_path IS NULL",
        (nas_path, file_id, owner))
    return cur.rowcount == 1


def reserve_nas_path(conn: psycopg.Connection, key: str, file_id: UUID, nas_path: str) -> UUID:
    """Reserve the NAS name `key` (rules.nas_keys.canonical_key) for `file_id`; returns the
    file that holds it now: `file_id` itself (new, or already ours), or another file. One
    statement, so two runs racing for a key cannot both get it. A reservation whose file is
    gone or failed for good is taken over."""
    row = conn.execute(
        "INSERT INTO nas_path_reservations AS r (canonical_key, file_id, nas_path)"
        " VALUES (%(key)s, %(id)s, %(path)s)"
        " ON CONFLICT (canonical_key) DO UPDATE"
        "   SET file_id = EXCLUDED.file_id, nas_path = EXCLUDED.nas_path, reserved_at = now()"
        "   WHERE r.file_id = EXCLUDED.file_id"
        "      OR NOT EXISTS (SELECT 1 FROM file_metadata f"
        "                     WHERE f.id = r.file_id"
        "                       AND COALESCE(f.nas_status, 'pending') <> 'failed')"
        " RETURNING file_id", {"key": key, "id": file_id, "path": nas_path}).fetchone()
    if row is None:
        row = conn.execute("SELECT file_id FROM nas_path_reservations WHERE canonical_key = %s",
                           (key,)).fetchone()
    if row is None:  # the holder gave it up between the two statements: try once more
        return reserve_nas_path(conn, key, file_id, nas_path)
    if row[0] == file_id:
        # A row whose nas_path was corrected lets go of the name it held before.
        conn.execute("DELETE FROM nas_path_reservations WHERE file_id = %s"
                     " AND canonical_key <> %s", (file_id, key))
    return row[0]


def release_reservations(conn: psycopg.Connection, file_id: UUID) -> int:
    """A row that failed for good placed nothing: its NAS name is free for another file."""
    cur = conn.execute("DELETE FROM nas_path_reservations WHERE file_id = %s", (file_id,))
    return cur.rowcount


def lock_own_lease(conn: psycopg.Connection, file_id: UUID, owner: str) -> bool:
    """Inside a transaction: lock the row if `owner` still holds an unexpired lease on it. Until
    the transaction ends no other run can release or claim the row, so a rename done under
    this lock is done by the row's one owner."""
    row = conn.execute(
        "SELECT 1 FROM file_metadata WHERE id = %s AND nas_status = 'syncing'"
        " AND claimed_by = %s AND lease_until > now() FOR UPDATE", (file_id, owner)).fetchone()
    return row is not None


def nas_path_taken_by(conn: psycopg.Connection, nas_path: str, file_id: UUID) -> UUID | None:
    """Another file already placed at `nas_path` (renaming onto it would destroy it)."""
    row = conn.execute(
        # COLLATE "C" equality is plain byte equality and can use the audit's C-ordered index.
        "SELECT id FROM file_metadata WHERE (nas_path COLLATE \"C\") = %s AND id <> %s"
        " AND nas_status = 'synced' LIMIT 1", (nas_path, file_id)).fetchone()
    return row[0] if row else None


def mark_synced(conn: psycopg.Connection, file_id: UUID, owner: str, sha256: str,
                nas_path: str) -> bool:
    """Only the run that still holds the lease may mark the row, and only after the NAS copy
    was verified; False means the lease was lost (another run owns the row now)."""
    cur = conn.execute(
        "UPDATE file_metadata SET nas_status = 'synced', nas_path = COALESCE(nas_path, %s),"
        " synced_at = now(),"
        " last_sync_at = now(), nas_verified_at = now(), hash = COALESCE(hash, %s),"
        " last_error = NULL, claimed_by = NULL, claimed_at = NULL, lease_until = NULL,"
        " updated_at = now()"
        " WHERE id = %s AND nas_status = 'syncing' AND claimed_by = %s",
        (nas_path, sha256, file_id, owner))
    return cur.rowcount == 1


def record_failure(conn: psycopg.Connection, file_id: UUID, owner: str, error: str,
                   max_attempts: int, permanent: bool = False) -> str | None:
    """Count a failed attempt: back to 'pending', or 'failed' once attempts reach the limit (at
    once for a permanent error). Returns the new status, None if the lease was lost."""
    row = conn.execute(
        "UPDATE file_metadata SET sync_attempts = COALESCE(sync_attempts, 0) + 1,"
        " last_sync_at = now(),"
        " last_error = %(error)s, claimed_by = NULL, claimed_at = NULL, lease_until = NULL,"
        " nas_status = CASE WHEN %(permanent)s OR COALESCE(sync_attempts, 0) + 1 >= %(max)s"
        "                   THEN 'failed' ELSE 'pending' END,"
        " updated_at = now()"
        " WHERE id = %(id)s AND nas_status = 'syncing' AND claimed_by = %(owner)s"
        " RETURNING nas_status",
        {"error": error[:2000], "permanent": permanent, "max": max_attempts, "id": file_id,
         "owner": owner}).fetchone()
    return row[0] if row else None


def release(conn: psycopg.Connection, ids: list[UUID], owner: str, reason: str) -> int:
    """Hand rows back to the queue without charging an attempt (a backend went down)."""
    if not ids:
        return 0
    cur = conn.execute(
        "UPDATE file_metadata SET nas_status = 'pending', claimed_by = NULL, claimed_at = NULL,"
        " lease_until = NULL, last_error = %s, updated_at = now()"
        " WHERE id = ANY(%s) AND nas_status = 'syncing' AND claimed_by = %s",
        (reason[:2000], ids, owner))
    return cur.rowcount


def retry_failed(conn: psycopg.Connection) -> int:
    """Operator's reset after fixing the cause: failed rows go back to the queue."""
    cur = conn.execute(
        "UPDATE file_metadata SET nas_status = 'pending', sync_attempts = 0, updated_at = now()"
        " WHERE nas_status = 'failed'")
    return cur.rowcount


def record_access(conn: psycopg.Connection, file_id: UUID, hit: bool) -> None:
    """What the file server does on every read (the counters behind cache_hit_rate)."""
    conn.execute(
        "UPDATE file_metadata SET access_count = COALESCE(access_count, 0) + 1,"
        " last_accessed = now(),"
        " cache_hits = cache_hits + %s, cache_misses = cache_misses + %s WHERE id = %s",
        (int(hit), int(not hit), file_id))
