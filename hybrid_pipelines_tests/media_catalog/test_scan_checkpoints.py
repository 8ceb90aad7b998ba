"""scan_checkpoints keeps the archive analyzer design's columns and values (scan_id,
last_path, processed_files, status in_progress | completed) beside ours (state), written
truthfully batch by batch; a catalog made by the earlier version is upgraded keeping every
row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hybrid_pipelines.media_catalog.catalog_store import CatalogStore, Checkpoint
from hybrid_pipelines.media_catalog.catalog_store.schema_upgrade import needs_upgrade, upgrade
from hybrid_pipelines.media_catalog.nas_access import NASAccess
from hybrid_pipelines.media_catalog.scan import Scanner
from hybrid_pipelines.media_catalog.settings import CatalogSettings
from hybrid_pipelines.resources import NASResource, SQLiteCatalogResource
from hybrid_pipelines.resources.sqlite_catalog import open_catalog

from .conftest import put

# Verbatim from the catalog.sql of the version before `state` (commit 5a29061).
OLD_TABLE = """
CREATE TABLE IF NOT EXISTS scan_checkpoints (
    scan_id         TEXT PRIMARY KEY,
    partition_key   TEXT NOT NULL,
    mode            TEXT NOT NULL CHECK (mode IN ('incremental', 'full')),
    status          TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    last_path       TEXT,
    processed_files INTEGER NOT NULL DEFAULT 0,
    new_files       INTEGER NOT NULL DEFAULT 0,
    changed_files   INTEGER NOT NULL DEFAULT 0,
    deleted_files   INTEGER NOT NULL DEFAULT 0,
    dirs_listed     INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 1,
    error           TEXT,
    started_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    finished_at     REAL
);
CREATE INDEX IF NOT EXISTS scan_checkpoints_partition ON scan_checkpoints (partition_key, status);
"""
DESIGN = ("scan_id", "last_path", "processed_files", "status")


def test_design_columns_hold_the_designs_values_mid_scan_and_at_the_end(
        local_nas_resource: NASResource, tmp_path: Path) -> None:
    root = Path(local_nas_resource.local_root)
    paths = sorted(f"WSOP/S{d}/E{i:03d}.ts" for d in range(3) for i in range(84))  # 252
    for i, rel in enumerate(paths):
        put(root, rel, b"x" * (i + 1))
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    catalog.apply_schema("catalog")
    seen: list[dict] = []
    with catalog.connect() as conn:
        store = CatalogStore(conn)

        def at_checkpoint(cp: Checkpoint) -> None:
            seen.append(store.checkpoint_row(cp.scan_id))

        report = Scanner(store, NASAccess(local_nas_resource, (0.05,)), CatalogSettings(),
                         on_batch=at_checkpoint).scan("WSOP", "WSOP")
        end = store.checkpoint_row(report.scan_id)
    mid = seen[0]
    assert all(c in mid for c in DESIGN)
    assert (mid["scan_id"], mid["status"], mid["state"]) == (report.scan_id, "in_progress",
                                                            "running")
    assert (mid["processed_files"], mid["last_path"]) == (100, paths[99])
    assert [s["processed_files"] for s in seen] == [100, 200, 252]
    assert (end["status"], end["state"]) == ("completed", "done")
    assert (end["processed_files"], end["last_path"]) == (252, paths[-1])


def test_catalog_of_the_earlier_version_is_upgraded_keeping_every_row(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_TABLE)
        conn.executemany(
            "INSERT INTO scan_checkpoints (scan_id, partition_key, mode, status, last_path, "
            "processed_files, attempts, error, started_at, updated_at, finished_at) "
            "VALUES (?, ?, 'full', ?, ?, ?, ?, ?, ?, ?, ?)",
            [("s1", "WSOP", "done", "WSOP/z.ts", 500, 1, None, 1.0, 2.0, 2.0),
             ("s2", "HCL", "failed", "HCL/a/b.ts", 300, 2, "SMBConnectionClosed", 3.0, 4.0, None),
             ("s3", "PAD", "running", None, 0, 1, None, 5.0, 6.0, None)])
    SQLiteCatalogResource(path=str(path)).apply_schema("catalog", force=True)  # leaves it as is
    conn = open_catalog(path)
    try:
        assert needs_upgrade(conn)
        store = CatalogStore(conn)  # upgrades
        assert not needs_upgrade(conn) and upgrade(conn) == []
        rows = {r["scan_id"]: dict(r) for r in conn.execute("SELECT * FROM scan_checkpoints")}
        assert {k: (r["status"], r["state"]) for k, r in rows.items()} == {
            "s1": ("completed", "done"), "s2": ("in_progress", "failed"),
            "s3": ("in_progress", "running")}
        assert (rows["s2"]["last_path"], rows["s2"]["processed_files"], rows["s2"]["error"],
                rows["s2"]["attempts"]) == ("HCL/a/b.ts", 300, "SMBConnectionClosed", 2)
        assert rows["s1"]["finished_at"] == 2.0
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(scan_checkpoints)")}
        assert "scan_checkpoints_partition" in indexes
        cp = store.open_checkpoint("HCL", "incremental")  # the failed scan resumes
        assert (cp.scan_id, cp.resumed, cp.last_path, cp.processed_files) == \
            ("s2", True, "HCL/a/b.ts", 300)
        assert store.checkpoint_row("s2")["status"] == "in_progress"
    finally:
        conn.close()


class _DiesOnDrop:
    """A connection whose DROP of the old table fails: the upgrade dies mid-transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql.startswith("DROP TABLE scan_checkpoints"):
            raise sqlite3.OperationalError("disk I/O error (injected)")
        return self.conn.execute(sql, *args)


@pytest.mark.fault("catalog upgrade fails mid-rebuild -> old table and rows intact, rerun "
                   "upgrades", kind="patched exception")
def test_upgrade_failing_mid_way_leaves_the_old_table(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_TABLE)
        conn.execute("INSERT INTO scan_checkpoints (scan_id, partition_key, mode, status, "
                     "started_at, updated_at) VALUES ('s1', 'WSOP', 'full', 'failed', 1, 1)")
    conn = open_catalog(path)
    try:
        with pytest.raises(sqlite3.OperationalError, match="injected"):
            upgrade(_DiesOnDrop(conn))  # type: ignore[arg-type]
        assert needs_upgrade(conn)
        rows = conn.execute("SELECT status FROM scan_checkpoints").fetchall()
        assert [tuple(r) for r in rows] == [("failed",)]
        assert conn.execute("SELECT name FROM sqlite_master WHERE name LIKE "
                            "'scan_checkpoints_upgrade'").fetchone() is None
        assert upgrade(conn)
        rows = conn.execute("SELECT status, state FROM scan_checkpoints").fetchall()
        assert [tuple(r) for r in rows] == [("in_progress", "failed")]
    finally:
        conn.close()
