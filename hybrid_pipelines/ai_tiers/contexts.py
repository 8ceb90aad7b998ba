"""User contexts: warm table -> archive (PostgreSQL) -> gzip JSON lines in the object store.

Archive: each batch is ONE statement that deletes rows from `user_contexts` and inserts them
into `user_contexts_archive` (a data-modifying CTE), so a row is in exactly one table whatever
happens. Overlapping runs are safe: the batch picks its rows with FOR UPDATE SKIP LOCKED, so two
runs take disjoint rows, and a row another run already moved is simply gone. A conversation
that already has an archived twin (same user_id + conversation_id, recreated after archiving)
is merged into it, archived messages first, rather than dropped.

Expiry: per day of archive, the rows are written to one gzip JSON-lines object, the object is
verified (size, sha256, MD5 ETag or read-back), and only then deleted from the archive, in the
same statement that records a tombstone so that reactivation can still find them.
Connections must be autocommit (expiry holds a lock across transactions)."""

from __future__ import annotations

import gzip
import json
import tempfile
import uuid
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import psycopg

from hybrid_pipelines.ai_tiers import tier_copy
from hybrid_pipelines.ai_tiers.db import (
    NS_CONTEXT_EXPIRY,
    NS_CONVERSATION,
    advisory_lock,
    try_advisory_lock,
    unlock,
)
from hybrid_pipelines.ai_tiers.rules.tier_policy import day_bounds, export_key

_COLUMNS = "id, user_id, conversation_id, messages, created_at, updated_at"

# The whole move in one statement; LIMIT bounds memory and lock time per batch. Batches walk
# the (updated_at, id) index from where the previous one stopped, so each reads only its own
# rows: restarting from the top would re-read the dead entries of every earlier batch.
ARCHIVE_BATCH_SQL = f"""
WITH batch AS (
    SELECT id, updated_at FROM user_contexts
    WHERE updated_at <= %(cutoff)s
      AND (updated_at, id) > (coalesce(%(after_ts)s::timestamptz, '-infinity'),
                              coalesce(%(after_id)s::bigint, 0))
    ORDER BY updated_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), moved AS (
    -- = ANY(ARRAY(...)) makes it a primary-key lookup; a join here lets the planner pick a
    -- full scan of the warm table for every batch.
    DELETE FROM user_contexts c WHERE c.id = ANY(ARRAY(SELECT id FROM batch))
    RETURNING c.{_COLUMNS.replace(", ", ", c.")}
), ins AS (
    INSERT INTO user_contexts_archive ({_COLUMNS}, archived_at)
    SELECT {_COLUMNS}, %(archived_at)s FROM moved
    ON CONFLICT (user_id, conversation_id) DO UPDATE SET
        messages = user_contexts_archive.messages || EXCLUDED.messages,
        updated_at = greatest(user_contexts_archive.updated_at, EXCLUDED.updated_at),
        archived_at = EXCLUDED.archived_at
    RETURNING (xmax = 0) AS inserted, octet_length(messages::text) AS bytes
), last AS (
    SELECT updated_at, id FROM batch ORDER BY updated_at DESC, id DESC LIMIT 1
)
SELECT count(*), count(*) FILTER (WHERE NOT inserted), coalesce(sum(bytes), 0),
       (SELECT updated_at FROM last), (SELECT id FROM last)
FROM ins
"""  # noqa: S608 - only fixed column names are interpolated

# The same move as the plain single statement, without batching (the benchmark's baseline).
ARCHIVE_PLAIN_SQL = f"""
WITH moved AS (
    DELETE FROM user_contexts WHERE updated_at <= %(cutoff)s RETURNING {_COLUMNS}
)
INSERT INTO user_contexts_archive ({_COLUMNS}, archived_at)
SELECT {_COLUMNS}, %(archived_at)s FROM moved
ON CONFLICT (user_id, conversation_id) DO UPDATE SET
    messages = user_contexts_archive.messages || EXCLUDED.messages,
    updated_at = greatest(user_contexts_archive.updated_at, EXCLUDED.updated_at),
    archived_at = EXCLUDED.archived_at
"""  # noqa: S608 - only fixed column names are interpolated


@dataclass
class ArchiveReport:
    moved: int = 0
    merged_into_twins: int = 0
    bytes_moved: int = 0
    batches: int = 0


def archive_contexts(conn: psycopg.Connection, cutoff: datetime, archived_at: datetime,
                     batch_size: int = 10_000, max_batches: int | None = None
                     ) -> ArchiveReport:
    """Move contexts not updated since `cutoff` into the archive, one committed batch at a
    time (a crash loses nothing: committed batches are archived, the rest is still warm)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    report = ArchiveReport()
    params: dict[str, Any] = {"cutoff": cutoff, "limit": batch_size, "archived_at": archived_at,
                              "after_ts": None, "after_id": None}
    while max_batches is None or report.batches < max_batches:
        with conn.transaction():
            row = conn.execute(ARCHIVE_BATCH_SQL, params).fetchone()
        assert row is not None
        moved, merged, size = int(row[0]), int(row[1]), int(row[2])
        if moved == 0:
            break
        params["after_ts"], params["after_id"] = row[3], row[4]
        report.batches += 1
        report.moved += moved
        report.merged_into_twins += merged
        report.bytes_moved += size
    return report


def context_sizes(conn: psycopg.Connection) -> dict[str, int]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM user_contexts), "
        "(SELECT count(*) FROM user_contexts_archive), "
        "(SELECT count(*) FROM user_context_exports), "
        "pg_total_relation_size('user_contexts'), "
        "pg_total_relation_size('user_contexts_archive')").fetchone()
    assert row is not None
    keys = ("warm_rows", "archive_rows", "exported_rows", "warm_table_bytes",
            "archive_table_bytes")
    return {k: int(v) for k, v in zip(keys, row, strict=True)}


def twins_count(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT count(*) FROM user_contexts w JOIN user_contexts_archive a "
        "USING (user_id, conversation_id)").fetchone()
    return int(row[0]) if row else 0


# ---- expiry ------------------------------------------------------------------------------------

@dataclass
class ExpiryReport:
    days_exported: list[str] = field(default_factory=list)
    rows_exported: int = 0
    objects_written: int = 0
    bytes_uploaded: int = 0
    storage_class: str | None = None
    skipped_locked: bool = False


def _row_line(row: tuple[Any, ...]) -> bytes:
    rid, user_id, conv, messages, created, updated, archived = row[:7]
    return json.dumps({"id": rid, "user_id": user_id, "conversation_id": conv,
                       "messages": messages, "created_at": created.isoformat(),
                       "updated_at": updated.isoformat(), "archived_at": archived.isoformat()},
                      ensure_ascii=False, separators=(",", ":")).encode()


def _day_rows(conn: psycopg.Connection, day: date, cutoff: datetime) -> Iterator[tuple[Any, ...]]:
    start, end = day_bounds(day)
    with conn.transaction(), conn.cursor(name="expiry_day") as cur:
        cur.itersize = 2000
        cur.execute(f"SELECT {_COLUMNS}, archived_at, xmin::text::bigint "  # noqa: S608
                    "FROM user_contexts_archive "
                    "WHERE archived_at >= %s AND archived_at < %s AND archived_at <= %s "
                    "ORDER BY id", (start, end, cutoff))
        yield from cur


def _existing_object(client: Any, bucket: str, key: str, tmpdir: Path) -> Path | None:
    """A previous run's object for this day, downloaded, if it is a verified export of ours
    (its bytes hash to the sha256 in its metadata): its rows were deleted, so its lines must
    be carried over. Anything else there (a failed, unverified upload) is copied aside rather
    than overwritten, so nothing is ever lost."""
    head = tier_copy.head_object(client, bucket, key)
    if head is None:
        return None
    path = tmpdir / "existing.jsonl.gz"
    client.download_file(bucket, key, str(path))
    want = (head.get("Metadata") or {}).get(tier_copy.SHA256_META)
    if want and tier_copy.digest_file(path).sha256 == want:
        return path
    path.unlink()
    client.copy_object(Bucket=bucket, Key=f"{key}.unverified-{uuid.uuid4().hex[:8]}",
                       CopySource={"Bucket": bucket, "Key": key})
    return None


def _export_day(conn: psycopg.Connection, client: Any, bucket: str, key: str, day: date,
                cutoff: datetime, tmpdir: Path, storage_class: str | None
                ) -> tuple[array, array, int, str | None]:
    """Write, upload and verify the day's object; returns (ids and row versions (xmin)
    exported, bytes, storage class)."""
    ids: array = array("q")
    versions: array = array("q")
    path = tmpdir / f"{day.isoformat()}.jsonl.gz"
    existing = _existing_object(client, bucket, key, tmpdir)

    def lines() -> Iterator[bytes]:
        for row in _day_rows(conn, day, cutoff):
            ids.append(row[0])
            versions.append(row[7])
            yield _row_line(row)
        if existing is not None:
            fresh = set(ids)
            with gzip.open(existing, "rb") as old:
                for line in old:
                    if line.strip() and json.loads(line)["id"] not in fresh:
                        yield line.rstrip(b"\n")

    tier_copy.gzip_jsonl_file(path, lines())
    digest = tier_copy.digest_file(path)
    applied = tier_copy.upload_file(client, bucket, key, path, digest,
                                    storage_class=storage_class)
    tier_copy.verify_object(client, bucket, key, digest)
    path.unlink()
    if existing is not None:
        existing.unlink()
    return ids, versions, digest.size, applied


_DELETE_CHUNK = 50_000
# Deletes a row only in the version we exported (same xmin): a row merged with a twin or
# re-archived since then stays, and the next run exports its new version.
_DELETE_EXPORTED_SQL = """
WITH gone AS (
    DELETE FROM user_contexts_archive a
    USING unnest(%(ids)s::bigint[], %(versions)s::bigint[]) AS t(id, version)
    WHERE a.id = t.id AND a.xmin::text::bigint = t.version
    RETURNING a.id, a.user_id, a.conversation_id
)
INSERT INTO user_context_exports (user_id, conversation_id, archive_id, object_key, exported_at)
SELECT user_id, conversation_id, id, %(key)s, %(now)s FROM gone
ON CONFLICT (user_id, conversation_id) DO UPDATE SET
    archive_id = EXCLUDED.archive_id, object_key = EXCLUDED.object_key,
    exported_at = EXCLUDED.exported_at
"""


def expire_archive(conn: psycopg.Connection, client: Any, bucket: str, cutoff: datetime,
                   now: datetime, prefix: str = "contexts",
                   storage_class: str | None = "GLACIER_IR") -> ExpiryReport:
    """Export archived contexts archived at or before `cutoff`, one object per archive day,
    then delete them. One expiry at a time (another run finds the lock taken and skips)."""
    report = ExpiryReport()
    if not try_advisory_lock(conn, NS_CONTEXT_EXPIRY, "expiry"):
        report.skipped_locked = True
        return report
    try:
        days = [r[0] for r in conn.execute(
            "SELECT DISTINCT (archived_at AT TIME ZONE 'UTC')::date FROM user_contexts_archive "
            "WHERE archived_at <= %s ORDER BY 1", (cutoff,))]
        with tempfile.TemporaryDirectory(prefix="hp-expiry-") as tmp:
            for day in days:
                key = export_key(prefix, day)
                ids, versions, size, applied = _export_day(conn, client, bucket, key, day,
                                                           cutoff, Path(tmp), storage_class)
                if not ids:
                    continue
                with conn.transaction():
                    deleted = 0
                    for start in range(0, len(ids), _DELETE_CHUNK):
                        cur = conn.execute(_DELETE_EXPORTED_SQL, {
                            "ids": ids[start:start + _DELETE_CHUNK].tolist(),
                            "versions": versions[start:start + _DELETE_CHUNK].tolist(),
                            "key": key, "now": now})
                        deleted += cur.rowcount
                report.days_exported.append(day.isoformat())
                report.rows_exported += deleted
                report.objects_written += 1
                report.bytes_uploaded += size
                report.storage_class = applied
    finally:
        unlock(conn, NS_CONTEXT_EXPIRY, "expiry")
    return report


# ---- reactivation ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reactivation:
    user_id: str
    conversation_id: str
    source: str  # 'archive' | 'export' | 'warm' | 'missing'
    merged: bool = False


_REACTIVATE_SQL = f"""
WITH moved AS (
    DELETE FROM user_contexts_archive WHERE user_id = %(user)s AND conversation_id = %(conv)s
    RETURNING {_COLUMNS}
)
INSERT INTO user_contexts ({_COLUMNS})
SELECT id, user_id, conversation_id, messages, created_at, greatest(updated_at, %(now)s)
FROM moved
ON CONFLICT (user_id, conversation_id) DO UPDATE SET
    messages = EXCLUDED.messages || user_contexts.messages,
    updated_at = greatest(user_contexts.updated_at, EXCLUDED.updated_at)
RETURNING (xmax = 0) AS inserted
"""  # noqa: S608 - only fixed column names are interpolated


def reactivate_context(conn: psycopg.Connection, client: Any, bucket: str, user_id: str,
                       conversation_id: str, now: datetime) -> Reactivation:
    """Bring one conversation back to the warm table, from the archive or, once expired, from
    its exported object. updated_at becomes `now` so the next archive run leaves it warm."""
    with advisory_lock(conn, NS_CONVERSATION, f"{user_id}\x1f{conversation_id}"):
        return _reactivate(conn, client, bucket, user_id, conversation_id, now)


def _reactivate(conn: psycopg.Connection, client: Any, bucket: str, user_id: str,
                conversation_id: str, now: datetime) -> Reactivation:
    params = {"user": user_id, "conv": conversation_id, "now": now}
    with conn.transaction():
        row = conn.execute(_REACTIVATE_SQL, params).fetchone()
    if row is not None:
        return Reactivation(user_id, conversation_id, "archive", merged=not row[0])
    tomb = conn.execute("SELECT archive_id, object_key FROM user_context_exports "
                        "WHERE user_id = %s AND conversation_id = %s",
                        (user_id, conversation_id)).fetchone()
    if tomb is None:
        warm = conn.execute("SELECT 1 FROM user_contexts WHERE user_id = %s AND "
                            "conversation_id = %s", (user_id, conversation_id)).fetchone()
        return Reactivation(user_id, conversation_id, "warm" if warm else "missing")
    archive_id, key = tomb
    record = None
    for line in tier_copy.read_gzip_jsonl(client, bucket, key):
        item = json.loads(line)
        if item["id"] == archive_id:
            record = item
    if record is None:
        raise tier_copy.ColdCopyMissing(
            f"conversation {user_id}/{conversation_id}: exported object "
            f"{tier_copy.s3_url(bucket, key)} has no line with id {archive_id}")
    with conn.transaction():
        cur = conn.execute(
            f"INSERT INTO user_contexts ({_COLUMNS}) "  # noqa: S608 - fixed column names
            "VALUES (%(id)s, %(user)s, %(conv)s, %(messages)s, %(created)s, "
            "greatest(%(updated)s::timestamptz, %(now)s)) "
            "ON CONFLICT (user_id, conversation_id) DO UPDATE SET "
            "messages = EXCLUDED.messages || user_contexts.messages, "
            "updated_at = greatest(user_contexts.updated_at, EXCLUDED.updated_at) "
            "RETURNING (xmax = 0)",
            {"id": record["id"], "user": user_id, "conv": conversation_id,
             "messages": psycopg.types.json.Jsonb(record["messages"]),
             "created": record["created_at"], "updated": record["updated_at"], "now": now})
        inserted = cur.fetchone()
        conn.execute("DELETE FROM user_context_exports WHERE user_id = %s AND "
                     "conversation_id = %s", (user_id, conversation_id))
    return Reactivation(user_id, conversation_id, "export",
                        merged=bool(inserted and not inserted[0]))
