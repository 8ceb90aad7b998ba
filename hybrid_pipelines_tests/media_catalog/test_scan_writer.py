"""The scan's batches commit on a thread and connection of their own, one behind the walk
(scan_writer.py): a write that fails stops the scan with SQLite's error, keeps every batch
committed before it, and the next scan resumes without a duplicate; the walk sees each
commit in its own thread."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from hybrid_pipelines.media_catalog.catalog_store import CatalogStore, Checkpoint
from hybrid_pipelines.media_catalog.nas_access import NASAccess
from hybrid_pipelines.media_catalog.scan import Scanner
from hybrid_pipelines.media_catalog.scan_writer import database_file
from hybrid_pipelines.media_catalog.settings import CatalogSettings
from hybrid_pipelines.resources import NASResource, SQLiteCatalogResource

from .conftest import put


@pytest.mark.fault("another connection holds the catalog's write lock mid-scan -> the scan "
                   "fails with SQLite's error, committed batches kept, resume completes",
                   kind="concurrency")
def test_a_failed_batch_write_stops_the_scan_and_the_next_one_resumes(
        local_nas_resource: NASResource, tmp_path: Path) -> None:
    root = Path(local_nas_resource.local_root)
    paths = sorted(f"WSOP/S{d}/E{i:03d}.ts" for d in range(3) for i in range(84))  # 252
    for i, rel in enumerate(paths):
        put(root, rel, b"x" * (i + 1))
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"), timeout_s=0.3)
    catalog.apply_schema("catalog")
    locker = sqlite3.connect(catalog.path, isolation_level=None)
    threads: list[threading.Thread] = []
    commits: list[int] = []

    def at_commit(cp: Checkpoint) -> None:
        threads.append(threading.current_thread())
        commits.append(cp.processed_files)
        if len(commits) == 1:
            locker.execute("BEGIN IMMEDIATE")  # a real writer elsewhere, holding the lock

    try:
        with catalog.connect() as conn:
            store = CatalogStore(conn)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                Scanner(store, NASAccess(local_nas_resource, (0.05,)), CatalogSettings(),
                        on_batch=at_commit).scan("WSOP", "WSOP")
            assert commits == [100] and threads == [threading.main_thread()]
            rows = conn.execute("SELECT path FROM files ORDER BY path").fetchall()
            assert [r[0] for r in rows] == paths[:100]  # the first batch, whole
            scan_id = store.unfinished_scan("WSOP")[0]
            assert store.checkpoint_row(scan_id)["processed_files"] == 100
        locker.execute("ROLLBACK")

        with catalog.connect() as conn:
            report = Scanner(CatalogStore(conn), NASAccess(local_nas_resource, (0.05,)),
                             CatalogSettings()).scan("WSOP", "WSOP")
            rows = conn.execute("SELECT path, first_scan_id FROM files").fetchall()
    finally:
        locker.close()
    assert report.resumed and report.scan_id == scan_id
    assert report.processed_files == report.new == report.found == len(paths)
    assert sorted(r[0] for r in rows) == paths
    assert {r[1] for r in rows} == {scan_id}


def test_an_in_memory_catalog_is_written_by_the_walk_itself(
        local_nas_resource: NASResource) -> None:
    put(Path(local_nas_resource.local_root), "WSOP/S1/E001.ts", b"x")
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.executescript((Path(__file__).parents[2] / "hybrid_pipelines/sql/catalog.sql")
                       .read_text())
    assert database_file(conn) == ""  # no file for a second connection to open
    report = Scanner(CatalogStore(conn), NASAccess(local_nas_resource, (0.05,)),
                     CatalogSettings()).scan("WSOP", "WSOP")
    assert report.new == 1
    assert conn.execute("SELECT path FROM files").fetchone()[0] == "WSOP/S1/E001.ts"
