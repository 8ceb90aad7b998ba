"""The change feed: every row carries the change number (seq) of its last change, and each
consumer (the catalog build, the Firestore sync) keeps a cursor in sync_state of how far it
has read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hybrid_pipelines.media_catalog.catalog_store.base import StoreBase


@dataclass(frozen=True)
class ChangeRow:
    kind: str  # file | content | series | catalog | player
    seq: int
    doc_id: str


class ChangeFeedStore(StoreBase):
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

    # ------------------------------------------------------------------ id migration

    def partition_entity_rows(self, partition_key: str) -> dict[str, list[dict[str, Any]]]:
        """Every row of the partition that may have a Firestore document, tombstones too
        (a tombstone not yet synced still has its document)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for table in ("contents", "series", "catalogs"):
            out[table] = [dict(r) for r in self.conn.execute(
                f"SELECT * FROM {table} WHERE partition_key = ?",  # noqa: S608 - fixed names
                (partition_key,))]
        out["files"] = [dict(r) for r in self.conn.execute(
            "SELECT file_id FROM files WHERE partition_key = ? AND catalog_id IS NOT NULL",
            (partition_key,))]
        return out

    def all_player_rows(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM players")]
