"""What every part of the catalog store shares: the schema, the path helpers, the probe
columns, and the connection with its transactions and change numbers."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources as pkg_resources

PROBE_FIELDS = ("format", "duration", "bit_rate", "video_codec", "width", "height", "fps",
                "audio_codec", "channels", "sample_rate")
# Resets every probe column: a file whose bytes changed must be probed again. Both the scan
# (changed files) and the prober (file rewritten under it) write it.
CLEAR_PROBE = ", ".join(f"{f} = NULL" for f in (*PROBE_FIELDS, "probe_error", "probed_at",
                                                 "bytes_read", "probe_tool_version",
                                                 "probe_failure_class", "probe_retry_after")
                        ) + ", probe_attempts = 0"
# What a probe leaves beside the media fields (a rename carries them over with the probe).
PROBE_STATE = ("probe_error", "probed_at", "bytes_read", "probe_tool_version",
               "probe_failure_class", "probe_attempts", "probe_retry_after")


def apply_schema(conn: sqlite3.Connection) -> None:
    from hybrid_pipelines.media_catalog.catalog_store.schema_upgrade import upgrade

    sql = pkg_resources.files("hybrid_pipelines.sql").joinpath("catalog.sql").read_text()
    conn.executescript(sql)
    upgrade(conn)


def has_schema(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                        "name = 'sync_state'").fetchone() is not None


def parent_of(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def prefix_bounds(dir_path: str) -> tuple[str, str]:
    """[lo, hi) covering every path strictly below `dir_path` ('0' sorts right after '/')."""
    return dir_path + "/", dir_path + "0"


class StoreBase:
    """The connection and the change-number counter; each part of CatalogStore builds on it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        from hybrid_pipelines.media_catalog.catalog_store.schema_upgrade import upgrade

        self.conn = conn
        # Whoever applied catalog.sql (the resource does, per process), a catalog made by an
        # earlier version is brought up to date before any statement of ours meets it.
        if has_schema(conn):
            upgrade(conn)

    # ------------------------------------------------------------------ plumbing

    def get_state(self, stream: str) -> tuple[int, str | None]:
        """A sync_state row (a change-feed cursor, a cached figure): (cursor, detail)."""
        row = self.conn.execute("SELECT cursor, detail FROM sync_state WHERE stream = ?",
                                (stream,)).fetchone()
        return (int(row[0]), row[1]) if row else (0, None)

    def set_state(self, stream: str, cursor: int, detail: str | None = None) -> None:
        with self.transaction() as c:
            c.execute("INSERT INTO sync_state (stream, cursor, detail, updated_at) "
                      "VALUES (?, ?, ?, ?) ON CONFLICT(stream) DO UPDATE SET "
                      "cursor = excluded.cursor, detail = excluded.detail, "
                      "updated_at = excluded.updated_at", (stream, cursor, detail, time.time()))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def next_seq(self) -> int:
        row = self.conn.execute(
            "UPDATE counters SET value = value + 1 WHERE name = 'seq' RETURNING value").fetchone()
        return int(row[0])

    def reserve_seqs(self, n: int) -> Iterator[int]:
        """n change numbers in one statement (inside the caller's transaction)."""
        if n <= 0:
            return iter(())
        row = self.conn.execute("UPDATE counters SET value = value + ? WHERE name = 'seq' "
                                "RETURNING value", (n,)).fetchone()
        return iter(range(int(row[0]) - n + 1, int(row[0]) + 1))

    def current_seq(self) -> int:
        return int(self.conn.execute("SELECT value FROM counters WHERE name = 'seq'").fetchone()[0])
