"""Catalog entities built from the files: contents, series, catalogs, players and the
content-player links, plus the counts their documents carry."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hybrid_pipelines.media_catalog.catalog_store.base import StoreBase


class EntityStore(StoreBase):
    if TYPE_CHECKING:
        # catalog_counts reuses the scan's file counts; CatalogStore gets them from ScanStore.
        def count_files(self, partition_key: str, statuses: Sequence[str]) -> int: ...
        def live_bytes(self, partition_key: str) -> int: ...

    # ------------------------------------------------------------------ catalog entities

    def files_since(self, partition_key: str, after: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT path, status, catalog_id, series_id, content_id, seq FROM files "
            "WHERE partition_key = ? AND seq > ? ORDER BY path", (partition_key, after)).fetchall()

    def set_file_place(self, path: str, catalog_id: str, series_id: str, content_id: str,
                       bump: bool) -> None:
        if bump:
            self.conn.execute("UPDATE files SET catalog_id = ?, series_id = ?, content_id = ?, "
                              "updated_at = ?, seq = ? WHERE path = ?",
                              (catalog_id, series_id, content_id, time.time(), self.next_seq(),
                               path))
        else:
            self.conn.execute("UPDATE files SET catalog_id = ?, series_id = ?, content_id = ? "
                              "WHERE path = ?", (catalog_id, series_id, content_id, path))

    def live_files_of(self, column: str, value: str) -> list[sqlite3.Row]:
        assert column in ("content_id", "series_id")
        return self.conn.execute(
            f"SELECT path, size, duration, status FROM files WHERE {column} = ? "  # noqa: S608 - fixed column
            "AND status != 'deleted' ORDER BY path", (value,)).fetchall()

    def row(self, table: str, key: str, value: str) -> sqlite3.Row | None:
        assert table in ("contents", "series", "catalogs", "players")
        return self.conn.execute(f"SELECT * FROM {table} WHERE {key} = ?",  # noqa: S608 - fixed names
                                 (value,)).fetchone()

    def upsert_entity(self, table: str, key: str, values: dict[str, Any]) -> bool:
        """Insert or update one entity row; a new change number only if something changed."""
        assert table in ("contents", "series", "catalogs", "players")
        existing = self.row(table, key, values[key])
        if existing is not None and all(existing[k] == v for k, v in values.items()):
            return False
        cols = [*values, "updated_at", "seq"]
        params = [*values.values(), time.time(), self.next_seq()]
        if existing is None:
            self.conn.execute(
                f"INSERT INTO {table} ({', '.join(cols)}) "  # noqa: S608 - fixed names
                f"VALUES ({', '.join('?' * len(cols))})", params)
        else:
            sets = ", ".join(f"{c} = ?" for c in cols)
            self.conn.execute(f"UPDATE {table} SET {sets} WHERE {key} = ?",  # noqa: S608 - fixed names
                              [*params, values[key]])
        return True

    def content_links(self, content_id: str) -> set[str]:
        return {r[0] for r in self.conn.execute(
            "SELECT player_id FROM content_players WHERE content_id = ?", (content_id,))}

    def set_content_links(self, content_id: str, partition_key: str, player_ids: set[str],
                          old: set[str]) -> None:
        for pid in old - player_ids:
            self.conn.execute("DELETE FROM content_players WHERE content_id = ? AND "
                              "player_id = ?", (content_id, pid))
        for pid in player_ids - old:
            self.conn.execute("INSERT OR IGNORE INTO content_players (content_id, player_id, "
                              "partition_key) VALUES (?, ?, ?)", (content_id, pid, partition_key))

    def player_content_count(self, player_id: str) -> int:
        return int(self.conn.execute(
            "SELECT COUNT(*) FROM content_players WHERE player_id = ?",
            (player_id,)).fetchone()[0])

    def series_counts(self, series_id: str) -> tuple[int, int]:
        contents = self.conn.execute(
            "SELECT COUNT(*) FROM contents WHERE series_id = ? AND deleted = 0",
            (series_id,)).fetchone()[0]
        files = self.conn.execute(
            "SELECT COUNT(*) FROM files WHERE series_id = ? AND status != 'deleted'",
            (series_id,)).fetchone()[0]
        return int(contents), int(files)

    def catalog_counts(self, partition_key: str) -> dict[str, int]:
        c = self.conn
        return {
            "series_count": int(c.execute("SELECT COUNT(*) FROM series WHERE partition_key = ? "
                                          "AND deleted = 0", (partition_key,)).fetchone()[0]),
            "content_count": int(c.execute("SELECT COUNT(*) FROM contents WHERE "
                                           "partition_key = ? AND deleted = 0",
                                           (partition_key,)).fetchone()[0]),
            "file_count": self.count_files(partition_key, ("pending", "stable", "valid",
                                                           "invalid")),
            "total_bytes": self.live_bytes(partition_key),
        }

    def partition_player_count(self, partition_key: str) -> int:
        return int(self.conn.execute(
            "SELECT COUNT(DISTINCT player_id) FROM content_players WHERE partition_key = ?",
            (partition_key,)).fetchone()[0])


def json_list(value: str | None) -> list[Any]:
    """A JSON list column (contents.player_ids) as a list; NULL or empty text as []."""
    return json.loads(value) if value else []
