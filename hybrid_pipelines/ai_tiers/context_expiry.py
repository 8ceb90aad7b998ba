"""Expiry of archived user contexts into the object store (gzip JSON lines).

Each run writes its OWN objects: one per archive day, under a key that carries the run's id
(`export_key(prefix, day, run_id)`), so no run ever overwrites an object an earlier run wrote
and verified. An object is verified (size, sha256, MD5 ETag or read-back) before anything
points at it; then ONE transaction deletes the exported archive rows (only in the version
exported, pinned by xmin), records every exported conversation in
`user_context_export_history` (one row per export, so a conversation that expires twice keeps
both) and moves the `user_context_exports` pointer to the newest export. A pointer written
before the history existed is copied into the history in that same statement before it
moves, so reactivation finds every earlier export. An object whose verification fails is
deleted again (nothing points at it and its rows are still in the archive).
Connections must be autocommit (expiry holds a lock across transactions)."""

from __future__ import annotations

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
from hybrid_pipelines.ai_tiers.db import NS_CONTEXT_EXPIRY, try_advisory_lock, unlock
from hybrid_pipelines.ai_tiers.rules.tier_policy import (
    as_utc,
    day_bounds,
    export_key,
    naive_utc,
)

# The platform's own archiver leaves our updated_at NULL: archived_at stands in for it.
_COLUMNS = ("id, user_id, conversation_id, messages, created_at, "
            "coalesce(updated_at, archived_at)")


@dataclass
class ExpiryReport:
    days_exported: list[str] = field(default_factory=list)
    rows_exported: int = 0
    objects_written: int = 0
    bytes_uploaded: int = 0
    storage_class: str | None = None
    skipped_locked: bool = False
    run_id: str = ""
    object_keys: list[str] = field(default_factory=list)


def _row_line(row: tuple[Any, ...]) -> bytes:
    rid, user_id, conv, messages, created, updated, archived = row[:7]
    return json.dumps({"id": rid, "user_id": user_id, "conversation_id": conv,
                       "messages": messages, "created_at": as_utc(created).isoformat(),
                       "updated_at": as_utc(updated).isoformat(),
                       "archived_at": as_utc(archived).isoformat()},
                      ensure_ascii=False, separators=(",", ":")).encode()


def _day_rows(conn: psycopg.Connection, day: date, cutoff: datetime) -> Iterator[tuple[Any, ...]]:
    start, end = day_bounds(day)
    with conn.transaction(), conn.cursor(name="expiry_day") as cur:
        cur.itersize = 2000
        cur.execute(f"SELECT {_COLUMNS}, archived_at, xmin::text::bigint "  # noqa: S608
                    "FROM user_contexts_archive "
                    "WHERE archived_at >= %s AND archived_at < %s AND archived_at <= %s "
                    "ORDER BY id", (naive_utc(start), naive_utc(end), naive_utc(cutoff)))
        yield from cur


def _export_day(conn: psycopg.Connection, client: Any, bucket: str, key: str, day: date,
                cutoff: datetime, tmpdir: Path, storage_class: str | None
                ) -> tuple[array, array, int, str | None]:
    """Write, upload and verify the day's object of this run; returns (ids and row versions
    (xmin) exported, bytes, storage class). No rows: nothing is uploaded."""
    ids: array = array("q")
    versions: array = array("q")
    path = tmpdir / f"{day.isoformat()}.jsonl.gz"

    def lines() -> Iterator[bytes]:
        for row in _day_rows(conn, day, cutoff):
            ids.append(row[0])
            versions.append(row[7])
            yield _row_line(row)

    try:
        tier_copy.gzip_jsonl_file(path, lines())
        if not ids:
            return ids, versions, 0, None
        digest = tier_copy.digest_file(path)
        applied = tier_copy.upload_file(client, bucket, key, path, digest,
                                        storage_class=storage_class)
        try:
            tier_copy.verify_object(client, bucket, key, digest)
        except tier_copy.CopyError:
            # This run's own key, which nothing points at; its rows are still archived.
            client.delete_object(Bucket=bucket, Key=key)
            raise
    finally:
        path.unlink(missing_ok=True)
    return ids, versions, digest.size, applied


_DELETE_CHUNK = 50_000
# Deletes a row only in the version we exported (same xmin): a row merged with a twin or
# re-archived since then stays, and the next run exports its new version. The sub-statements
# share one snapshot, so `legacy` sees the pointers before the final upsert moves them.
_DELETE_EXPORTED_SQL = """
WITH gone AS (
    DELETE FROM user_contexts_archive a
    USING unnest(%(ids)s::bigint[], %(versions)s::bigint[]) AS t(id, version)
    WHERE a.id = t.id AND a.xmin::text::bigint = t.version
    RETURNING a.id, a.user_id, a.conversation_id
), legacy AS (
    INSERT INTO user_context_export_history
        (user_id, conversation_id, archive_id, object_key, exported_at, run_id)
    SELECT e.user_id, e.conversation_id, e.archive_id, e.object_key, e.exported_at, ''
    FROM user_context_exports e JOIN gone g USING (user_id, conversation_id)
    WHERE NOT EXISTS (
        SELECT 1 FROM user_context_export_history h
        WHERE h.user_id = e.user_id AND h.conversation_id = e.conversation_id
          AND h.archive_id = e.archive_id AND h.object_key = e.object_key)
), history AS (
    INSERT INTO user_context_export_history
        (user_id, conversation_id, archive_id, object_key, exported_at, run_id)
    SELECT user_id, conversation_id, id, %(key)s, %(now)s, %(run)s FROM gone
)
INSERT INTO user_context_exports (user_id, conversation_id, archive_id, object_key, exported_at)
SELECT user_id, conversation_id, id, %(key)s, %(now)s FROM gone
ON CONFLICT (user_id, conversation_id) DO UPDATE SET
    archive_id = EXCLUDED.archive_id, object_key = EXCLUDED.object_key,
    exported_at = EXCLUDED.exported_at
"""


def expire_archive(conn: psycopg.Connection, client: Any, bucket: str, cutoff: datetime,
                   now: datetime, prefix: str = "contexts",
                   storage_class: str | None = "GLACIER_IR",
                   run_id: str | None = None) -> ExpiryReport:
    """Export archived contexts archived at or before `cutoff`, one new object per archive
    day and run, then delete them. One expiry at a time (another run finds the lock taken
    and skips)."""
    report = ExpiryReport(run_id=run_id or uuid.uuid4().hex)
    if not try_advisory_lock(conn, NS_CONTEXT_EXPIRY, "expiry"):
        report.skipped_locked = True
        return report
    try:
        days = [r[0] for r in conn.execute(
            "SELECT DISTINCT archived_at::date FROM user_contexts_archive "
            "WHERE archived_at <= %s ORDER BY 1", (naive_utc(cutoff),))]
        with tempfile.TemporaryDirectory(prefix="hp-expiry-") as tmp:
            for day in days:
                key = export_key(prefix, day, report.run_id)
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
                            "key": key, "now": now, "run": report.run_id})
                        deleted += cur.rowcount
                report.days_exported.append(day.isoformat())
                report.object_keys.append(key)
                report.rows_exported += deleted
                report.objects_written += 1
                report.bytes_uploaded += size
                report.storage_class = applied
    finally:
        unlock(conn, NS_CONTEXT_EXPIRY, "expiry")
    return report
