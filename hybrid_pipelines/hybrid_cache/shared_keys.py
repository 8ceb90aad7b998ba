"""Cache keys shared by several file_metadata rows.

Nothing on the platform's table makes seaweed_fid unique (a file server that deduplicates
uploads by content may point two rows at one object, and old data may hold duplicates), so an
object is only ever deleted on behalf of every row that references it. A row is "safe on the
NAS" when it is synced and its NAS copy verified; any other row on a key keeps the object.

Every lookup matches `(seaweed_fid COLLATE "C")`, the expression of file_metadata_fid_idx, so
each one is an index probe however large the table is."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg

# For a query over `file_metadata f`: another row on f's key that still needs the object,
# because it is not synced with a verified NAS copy (its NAS copy may not be a copy at all).
ANOTHER_ROW_NEEDS_KEY = (
    "EXISTS (SELECT 1 FROM file_metadata o"
    " WHERE (o.seaweed_fid COLLATE \"C\") = (f.seaweed_fid COLLATE \"C\") AND o.id <> f.id"
    # COALESCE: a NULL nas_status is not synced, so that row needs the object (NOT over a
    # NULL would drop it from the EXISTS and let the object go).
    "   AND NOT (COALESCE(o.nas_status, '') = 'synced' AND o.nas_verified_at IS NOT NULL))")


@dataclass(frozen=True)
class KeyRow:
    id: UUID
    key: str
    size: int
    hash: str | None
    nas_path: str | None
    nas_status: str | None
    cache_status: str | None
    nas_verified_at: datetime | None

    @property
    def safe_on_nas(self) -> bool:
        return self.nas_status == "synced" and self.nas_verified_at is not None

    def state(self) -> tuple[Any, ...]:
        """What must not change between the NAS re-check and the delete (nas_verified_at
        itself may be renewed by the re-check; that it is set is what counts)."""
        return (self.id, self.size, self.hash, self.nas_path, self.nas_status,
                self.cache_status, self.nas_verified_at is not None)


_SELECT = ("SELECT id, seaweed_fid, size, hash, nas_path, nas_status, cache_status,"
           " nas_verified_at FROM file_metadata WHERE (seaweed_fid COLLATE \"C\") = ANY(%s)")


def key_rows(conn: psycopg.Connection, keys: list[str], lock: bool = False
             ) -> dict[str, list[KeyRow]]:
    """Every row on `keys`, by key. `lock` takes their row locks, skipping rows another
    session holds (call inside a transaction): compare with an unlocked read to tell."""
    if not keys:
        return {}
    query = _SELECT + " FOR UPDATE SKIP LOCKED" if lock else _SELECT
    rows = conn.execute(query, (keys,)).fetchall()
    out: dict[str, list[KeyRow]] = defaultdict(list)
    for r in rows:
        out[r[1]].append(KeyRow(*r))
    return dict(out)


def states(rows: list[KeyRow] | None) -> set[tuple[Any, ...]]:
    return {r.state() for r in rows or []}


def requeue_from_cache(conn: psycopg.Connection, row: KeyRow, reason: str) -> bool:
    """A NAS copy that failed its re-check: no longer verified, and back in the sync queue so
    the cached object (kept) is copied to the NAS again. Applies only if the row is still as
    it was checked; the sync treats a file of other bytes at the path as a conflict, so an
    editor's replacement is reported, not overwritten."""
    cur = conn.execute(
        "UPDATE file_metadata SET nas_status = 'pending', nas_verified_at = NULL,"
        " synced_at = NULL, sync_attempts = 0, cache_status = 'cached', last_error = %s,"
        " updated_at = now()"
        " WHERE id = %s AND nas_status = 'synced' AND nas_verified_at IS NOT NULL"
        "   AND (seaweed_fid COLLATE \"C\") = %s",
        (f"eviction re-check: {reason}; object {row.key} kept, re-queued to copy it to the "
         "NAS again"[:2000], row.id, row.key))
    return cur.rowcount == 1


def renew_verified(conn: psycopg.Connection, row: KeyRow) -> None:
    """The copy was modified after its verification but hashes right: verified again now."""
    conn.execute("UPDATE file_metadata SET nas_verified_at = now() WHERE id = %s"
                 " AND nas_status = 'synced' AND nas_verified_at IS NOT NULL", (row.id,))


_OTHERS = "SELECT id FROM file_metadata WHERE (seaweed_fid COLLATE \"C\") = %s AND id <> %s"


def referenced_by_others(conn: psycopg.Connection, key: str, file_id: UUID,
                         lock: bool = False) -> list[UUID]:
    """Other rows on `key`. With `lock` (inside a transaction) they are locked, waiting for a
    session that holds one, so none can change state before the caller's transaction ends."""
    query = _OTHERS + " FOR UPDATE" if lock else _OTHERS
    rows = conn.execute(query, (key, file_id)).fetchall()
    return [r[0] for r in rows]


def count_shared_keys(conn: psycopg.Connection) -> int:
    """Keys referenced by more than one row (an index-only walk of file_metadata_fid_idx)."""
    row = conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM file_metadata WHERE seaweed_fid IS NOT NULL"
        " GROUP BY (seaweed_fid COLLATE \"C\") HAVING count(*) > 1) AS shared").fetchone()
    return int(row[0]) if row else 0
