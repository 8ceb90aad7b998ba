"""User contexts: warm table -> archive (PostgreSQL) -> gzip JSON lines in the object store.

Archive: each batch is ONE statement that deletes rows from `user_contexts` and inserts them
into `user_contexts_archive` (a data-modifying CTE), so a row is in exactly one table whatever
happens. Its DELETE is the arbiter: a row another transaction holds is waited for, then
re-checked (PostgreSQL's EvalPlanQual): moved by an overlapping run, it is gone; touched by
the platform meanwhile, it no longer matches the cutoff and stays warm. The wait is bounded
(BATCH_LOCK_WAIT): a batch that would wait longer is redone picking its rows with FOR UPDATE
SKIP LOCKED, so a long platform transaction never holds up a batch holding 10,000 row locks,
and its rows are left for the next run. A conversation
that already has an archived twin (same user_id + conversation_id, recreated after archiving)
is merged into it, archived messages first, rather than dropped.

Expiry: context_expiry.py (re-exported here). Reactivation brings a conversation back from
the archive and from every export of it in one transaction.
Connections must be autocommit (reactivation holds a lock across transactions)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from hybrid_pipelines.ai_tiers import tier_copy
from hybrid_pipelines.ai_tiers.context_expiry import ExpiryReport as ExpiryReport
from hybrid_pipelines.ai_tiers.context_expiry import expire_archive as expire_archive
from hybrid_pipelines.ai_tiers.db import (
    NS_CONVERSATION,
    advisory_lock,
)
from hybrid_pipelines.ai_tiers.rules.tier_policy import as_utc, naive_utc

# The platform's columns, without `id`: each table numbers its own rows (SERIAL), and the
# platform's own archiver inserts into the archive letting its sequence pick the id, so an id
# copied from the warm table would collide with the next one it takes.
_MOVED = "user_id, conversation_id, messages, created_at, updated_at"

# The whole move in one statement; LIMIT bounds memory and lock time per batch. Batches walk
# the (updated_at, id) index from where the previous one stopped, so each reads only its own
# rows: restarting from the top would re-read the dead entries of every earlier batch.
# {pick}: the rows are not locked when picked (locking each one first is a WAL record and a
# page write per row: bench/archive.py, 1M rows, 0.90x -> 0.94x of the plain statement's
# rows/s); the skip-locked variant below locks them, skipping held ones.
_BATCH_SQL = f"""
WITH batch AS (
    SELECT id, updated_at, ctid FROM user_contexts
    WHERE updated_at <= %(cutoff)s
      AND (updated_at, id) > (coalesce(%(after_ts)s::timestamp, '-infinity'),
                              coalesce(%(after_id)s::integer, 0))
    ORDER BY updated_at, id
    LIMIT %(limit)s{{pick}}
), moved AS (
    -- By ctid: a TID scan reads each row's page directly instead of a primary-key lookup
    -- per row. A row updated since it was picked has a new ctid, and the cutoff is checked
    -- again on the version the delete meets, so a conversation the platform touched in
    -- between stays warm. = ANY(ARRAY(...)): a join here lets the planner pick a full scan
    -- of the warm table for every batch.
    DELETE FROM user_contexts c WHERE c.ctid = ANY(ARRAY(SELECT ctid FROM batch))
      AND c.updated_at <= %(cutoff)s
    RETURNING c.{_MOVED.replace(", ", ", c.")}
), ins AS (
    INSERT INTO user_contexts_archive ({_MOVED}, archived_at)
    SELECT {_MOVED}, %(archived_at)s FROM moved
    ON CONFLICT (user_id, conversation_id) DO UPDATE SET
        messages = user_contexts_archive.messages || EXCLUDED.messages,
        updated_at = greatest(coalesce(user_contexts_archive.updated_at,
                                       user_contexts_archive.archived_at), EXCLUDED.updated_at),
        archived_at = EXCLUDED.archived_at
    -- pg_column_size: the stored size, read from the datum's header (rendering the JSONB
    -- as text to measure it cost more CPU than the move itself saves per row).
    RETURNING (xmax = 0) AS inserted, pg_column_size(messages) AS bytes
), last AS (
    SELECT updated_at, id FROM batch ORDER BY updated_at DESC, id DESC LIMIT 1
)
SELECT count(*), count(*) FILTER (WHERE NOT inserted), coalesce(sum(bytes), 0),
       (SELECT updated_at FROM last), (SELECT id FROM last), (SELECT count(*) FROM batch)
FROM ins
"""  # noqa: S608 - only fixed column names are interpolated
ARCHIVE_BATCH_SQL = _BATCH_SQL.replace("{pick}", "")
ARCHIVE_BATCH_SKIP_LOCKED_SQL = _BATCH_SQL.replace("{pick}", "\n    FOR UPDATE SKIP LOCKED")
# How long a batch may wait for a row another transaction holds before it is redone with
# ARCHIVE_BATCH_SKIP_LOCKED_SQL: an overlapping run's batch commits well within it.
BATCH_LOCK_WAIT = "2s"

# The same move as the plain single statement, without batching (the benchmark's baseline).
ARCHIVE_PLAIN_SQL = f"""
WITH moved AS (
    DELETE FROM user_contexts WHERE updated_at <= %(cutoff)s RETURNING {_MOVED}
)
INSERT INTO user_contexts_archive ({_MOVED}, archived_at)
SELECT {_MOVED}, %(archived_at)s FROM moved
ON CONFLICT (user_id, conversation_id) DO UPDATE SET
    messages = user_contexts_archive.messages || EXCLUDED.messages,
    updated_at = greatest(coalesce(user_contexts_archive.updated_at,
                                   user_contexts_archive.archived_at), EXCLUDED.updated_at),
    archived_at = EXCLUDED.archived_at
"""  # noqa: S608 - only fixed column names are interpolated


@dataclass
class ArchiveReport:
    moved: int = 0
    merged_into_twins: int = 0
    bytes_moved: int = 0
    batches: int = 0
    skip_locked_batches: int = 0  # redone skipping rows held past BATCH_LOCK_WAIT


def archive_contexts(conn: psycopg.Connection, cutoff: datetime, archived_at: datetime,
                     batch_size: int = 10_000, max_batches: int | None = None,
                     on_batch: Callable[[int], None] | None = None) -> ArchiveReport:
    """Move contexts not updated since `cutoff` into the archive, one committed batch at a
    time (a crash loses nothing: committed batches are archived, the rest is still warm).
    `bytes_moved` counts the messages' stored (possibly compressed) bytes. `on_batch(moved)`
    after each committed batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    report = ArchiveReport()
    params: dict[str, Any] = {"cutoff": naive_utc(cutoff), "limit": batch_size,
                              "archived_at": naive_utc(archived_at),
                              "after_ts": None, "after_id": None}
    while max_batches is None or report.batches < max_batches:
        try:
            row = _batch(conn, ARCHIVE_BATCH_SQL, params, BATCH_LOCK_WAIT)
        except psycopg.errors.LockNotAvailable:
            row = _batch(conn, ARCHIVE_BATCH_SKIP_LOCKED_SQL, params, None)
            report.skip_locked_batches += 1
        assert row is not None
        moved, merged, size = int(row[0]), int(row[1]), int(row[2])
        if int(row[5]) == 0:
            break  # none picked: the end (a batch whose rows another run moved moves none)
        params["after_ts"], params["after_id"] = row[3], row[4]
        report.batches += 1
        report.moved += moved
        report.merged_into_twins += merged
        report.bytes_moved += size
        if on_batch is not None:
            on_batch(moved)
    return report


def _batch(conn: psycopg.Connection, sql: str, params: dict[str, Any],
           lock_wait: str | None) -> tuple[Any, ...] | None:
    with conn.transaction():
        # A batch does not wait for its WAL flush: one statement deletes and inserts, so a
        # crash can only undo whole recent batches (their rows are warm again, moved by the
        # next run), never split one; the next durable commit on the server (the export's,
        # any other) flushes them anyway. Not waiting for a disk flush per batch is most of
        # what batches cost over one statement.
        conn.execute("SET LOCAL synchronous_commit = off")
        if lock_wait is not None:
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (lock_wait,))
        return conn.execute(sql, params).fetchone()


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


# ---- reactivation ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reactivation:
    user_id: str
    conversation_id: str
    source: str  # 'archive' | 'export' | 'warm' | 'missing'
    merged: bool = False
    exports_merged: int = 0  # exported lives brought back (a conversation may have several)


_REACTIVATE_SQL = """
WITH moved AS (
    DELETE FROM user_contexts_archive WHERE user_id = %(user)s AND conversation_id = %(conv)s
    RETURNING user_id, conversation_id, messages, created_at,
              coalesce(updated_at, archived_at) AS updated_at
)
INSERT INTO user_contexts (user_id, conversation_id, messages, created_at, updated_at)
SELECT user_id, conversation_id, messages, created_at, greatest(updated_at, %(now)s)
FROM moved
ON CONFLICT (user_id, conversation_id) DO UPDATE SET
    messages = EXCLUDED.messages || user_contexts.messages,
    updated_at = greatest(user_contexts.updated_at, EXCLUDED.updated_at)
RETURNING (xmax = 0) AS inserted
"""


def reactivate_context(conn: psycopg.Connection, client: Any, bucket: str, user_id: str,
                       conversation_id: str, now: datetime) -> Reactivation:
    """Bring one conversation back to the warm table from the archive and from every export
    of it (a conversation that expired twice has two), in one transaction: exported messages
    first, oldest export first. updated_at becomes `now` so the next archive run leaves it
    warm."""
    with advisory_lock(conn, NS_CONVERSATION, f"{user_id}\x1f{conversation_id}"):
        return _reactivate(conn, client, bucket, user_id, conversation_id, now)


def _reactivate(conn: psycopg.Connection, client: Any, bucket: str, user_id: str,
                conversation_id: str, now: datetime) -> Reactivation:
    params = {"user": user_id, "conv": conversation_id, "now": naive_utc(now)}
    tombs = _tombstones(conn, user_id, conversation_id)
    records = _exported_records(client, bucket, user_id, conversation_id, tombs)
    with conn.transaction():
        row = conn.execute(_REACTIVATE_SQL, params).fetchone()
        inserted = None
        if records:
            inserted = conn.execute(_RESTORE_SQL, _restore_params(records, params)).fetchone()
            conn.execute(
                "DELETE FROM user_context_export_history h USING unnest(%s::bigint[], "
                "%s::text[]) AS t(archive_id, object_key) WHERE h.user_id = %s AND "
                "h.conversation_id = %s AND h.archive_id = t.archive_id AND "
                "h.object_key = t.object_key",
                ([t[0] for t in tombs], [t[1] for t in tombs], user_id, conversation_id))
            conn.execute("DELETE FROM user_context_exports WHERE user_id = %s AND "
                         "conversation_id = %s AND (archive_id, object_key) IN "
                         "(SELECT * FROM unnest(%s::bigint[], %s::text[]))",
                         (user_id, conversation_id, [t[0] for t in tombs],
                          [t[1] for t in tombs]))
    if row is not None:
        return Reactivation(user_id, conversation_id, "archive", merged=not row[0],
                            exports_merged=len(records))
    if records:
        return Reactivation(user_id, conversation_id, "export",
                            merged=bool(inserted and not inserted[0]),
                            exports_merged=len(records))
    warm = conn.execute("SELECT 1 FROM user_contexts WHERE user_id = %s AND "
                        "conversation_id = %s", (user_id, conversation_id)).fetchone()
    return Reactivation(user_id, conversation_id, "warm" if warm else "missing")


def _tombstones(conn: psycopg.Connection, user_id: str, conversation_id: str
                ) -> list[tuple[int, str, datetime]]:
    """Every export of the conversation, oldest first: the history, plus a pointer written
    before the history existed."""
    rows = conn.execute(
        "SELECT archive_id, object_key, exported_at FROM user_context_export_history "
        "WHERE user_id = %(u)s AND conversation_id = %(c)s UNION "
        "SELECT archive_id, object_key, exported_at FROM user_context_exports "
        "WHERE user_id = %(u)s AND conversation_id = %(c)s ORDER BY 3, 1",
        {"u": user_id, "c": conversation_id}).fetchall()
    seen: set[tuple[int, str]] = set()
    out = []
    for archive_id, key, exported_at in rows:
        if (archive_id, key) not in seen:
            seen.add((archive_id, key))
            out.append((int(archive_id), str(key), exported_at))
    return out


def _exported_records(client: Any, bucket: str, user_id: str, conversation_id: str,
                      tombs: list[tuple[int, str, datetime]]) -> list[dict[str, Any]]:
    """The exported lines of the conversation, in the order of `tombs` (each object read
    once); ColdCopyMissing naming the object when one lacks its line."""
    wanted: dict[str, set[int]] = {}
    for archive_id, key, _at in tombs:
        wanted.setdefault(key, set()).add(archive_id)
    found: dict[tuple[int, str], dict[str, Any]] = {}
    for key, ids in wanted.items():
        for line in tier_copy.read_gzip_jsonl(client, bucket, key):
            item = json.loads(line)
            if item["id"] in ids and item.get("user_id", user_id) == user_id and \
                    item.get("conversation_id", conversation_id) == conversation_id:
                found[(item["id"], key)] = item
    for archive_id, key, _at in tombs:
        if (archive_id, key) not in found:
            raise tier_copy.ColdCopyMissing(
                f"conversation {user_id}/{conversation_id}: exported object "
                f"{tier_copy.s3_url(bucket, key)} has no line with id {archive_id}; nothing was "
                "moved (restore the object, or delete that row of user_context_export_history)")
    return [found[(archive_id, key)] for archive_id, key, _at in tombs]


# Exported lives are older than whatever is warm now (an archived twin just moved back
# included), so their messages go first.
_RESTORE_SQL = """
INSERT INTO user_contexts (user_id, conversation_id, messages, created_at, updated_at)
VALUES (%(user)s, %(conv)s, %(messages)s,
        %(created)s::timestamptz AT TIME ZONE 'UTC',
        greatest(%(updated)s::timestamptz AT TIME ZONE 'UTC', %(now)s))
ON CONFLICT (user_id, conversation_id) DO UPDATE SET
    messages = EXCLUDED.messages || user_contexts.messages,
    updated_at = greatest(user_contexts.updated_at, EXCLUDED.updated_at)
RETURNING (xmax = 0)
"""


def _restore_params(records: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    messages: list[Any] = []
    for record in records:
        messages += record["messages"]
    # Export lines carry ISO instants (older ones naive = UTC): compared as instants.
    created = [as_utc(datetime.fromisoformat(r["created_at"])) for r in records]
    updated = [as_utc(datetime.fromisoformat(r["updated_at"])) for r in records]
    return {**params, "messages": psycopg.types.json.Jsonb(messages),
            "created": min(created), "updated": max(updated)}
