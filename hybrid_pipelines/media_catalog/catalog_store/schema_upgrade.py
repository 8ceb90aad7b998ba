"""Upgrades of a catalog made by an earlier version, run after sql/catalog.sql (whose
CREATE ... IF NOT EXISTS statements leave an existing table as it was).

SQLite has no ADD COLUMN IF NOT EXISTS: a column is added only when PRAGMA table_info lacks
it (ADD_COLUMNS). One change cannot be a column added: scan_checkpoints.status must hold the
archive analyzer design's values (in_progress | completed), and a catalog made before held ours
(running | done | failed) under a CHECK that refuses the design's. SQLite cannot change a
CHECK in place, so that table, and only it, is rebuilt as SQLite documents it (new table, rows
copied, old dropped, new renamed) in ONE transaction: every row is kept, our value moves to
`state`, `status` takes the design's (done -> completed, running or failed -> in_progress).
A crash mid-way rolls back to the old table, and the next open upgrades it again.
"""

from __future__ import annotations

import re
import sqlite3
from importlib import resources as pkg_resources

# (table, column, declaration) added to catalogs that lack them (as in catalog.sql).
ADD_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("files", "probe_tool_version", "TEXT"),
    ("files", "probe_failure_class", "TEXT"),
    ("files", "probe_attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("files", "probe_retry_after", "REAL"),
)
_TABLE = "scan_checkpoints"


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]  # fixed names


def _table_sql(conn: sqlite3.Connection, table: str) -> str | None:
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                       (table,)).fetchone()
    return row[0] if row else None


def needs_upgrade(conn: sqlite3.Connection) -> bool:
    sql = _table_sql(conn, _TABLE)
    if sql is not None and "'in_progress'" not in sql:
        return True
    return any(_table_sql(conn, t) is not None and c not in _columns(conn, t)
               for t, c, _ in ADD_COLUMNS)


def _checkpoint_ddl(name: str) -> tuple[str, str]:
    """The current CREATE TABLE and CREATE INDEX of scan_checkpoints, from catalog.sql."""
    text = pkg_resources.files("hybrid_pipelines.sql").joinpath("catalog.sql").read_text()
    table = re.search(rf"CREATE TABLE IF NOT EXISTS {_TABLE} \(.*?\n\);", text, re.DOTALL)
    index = re.search(rf"CREATE INDEX IF NOT EXISTS \w+ ON {_TABLE} [^;]*;", text)
    assert table and index, "catalog.sql lost its scan_checkpoints statements"
    return (table.group(0).replace(f"IF NOT EXISTS {_TABLE} (", f"{name} (", 1),
            index.group(0))


def upgrade(conn: sqlite3.Connection) -> list[str]:
    """Apply what an older catalog lacks; returns what was done (empty when current).
    Read-only when nothing is needed, so a sensor never waits on a scan's write lock."""
    if not needs_upgrade(conn):
        return []
    done: list[str] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        sql = _table_sql(conn, _TABLE)
        if sql is not None and "'in_progress'" not in sql:
            create, index = _checkpoint_ddl(f"{_TABLE}_upgrade")
            old_cols = _columns(conn, _TABLE)
            keep = [c for c in old_cols if c != "status"]
            conn.execute(f"DROP TABLE IF EXISTS {_TABLE}_upgrade")
            conn.execute(create)
            cols = ", ".join(keep)
            conn.execute(
                f"INSERT INTO {_TABLE}_upgrade ({cols}, status, state) "  # noqa: S608 - names from the schema
                f"SELECT {cols}, CASE status WHEN 'done' THEN 'completed' "
                f"ELSE 'in_progress' END, status FROM {_TABLE}")
            rows = conn.execute(f"SELECT COUNT(*) FROM {_TABLE}").fetchone()[0]  # noqa: S608
            conn.execute(f"DROP TABLE {_TABLE}")
            conn.execute(f"ALTER TABLE {_TABLE}_upgrade RENAME TO {_TABLE}")
            conn.execute(index)
            done.append(f"{_TABLE}: status holds in_progress|completed, state ours "
                        f"({rows} row(s) kept)")
        for table, column, decl in ADD_COLUMNS:
            if _table_sql(conn, table) is not None and column not in _columns(conn, table):
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
                done.append(f"{table}.{column} added")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return done
