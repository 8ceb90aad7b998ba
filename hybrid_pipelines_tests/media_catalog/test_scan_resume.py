"""A scan killed mid-way (smbd killed) resumes from its checkpoint with no duplicates, and a
NAS that stays down fails the run with a clear error after the reconnect attempts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from hybrid_pipelines.defs.media_catalog.assets import nas_media_files
from hybrid_pipelines.dev.stack.process import free_port
from hybrid_pipelines.media_catalog.catalog_store import CatalogStore, Checkpoint
from hybrid_pipelines.media_catalog.nas_access import NASAccess
from hybrid_pipelines.media_catalog.scan import Scanner
from hybrid_pipelines.media_catalog.settings import CatalogSettings
from hybrid_pipelines.resources import BackendError, NASResource, SQLiteCatalogResource
from hybrid_pipelines_tests.conftest import ServerFactory, nas_resource_for

from .conftest import instance_with, metadata_of, put

# 360 files: three batches of 100 and a remainder, in directories small enough that the
# listings the scan still needs after two batches outnumber its lookahead (4 below): the
# killed server is met mid-walk, not after the pipeline already listed everything.
DIRS, PER_DIR = 36, 10


@pytest.fixture(scope="module")
def nas(server_factory: ServerFactory) -> dict:
    server = server_factory("samba")  # private: this module kills it
    folder = "Archive"
    for d in range(DIRS):
        for i in range(PER_DIR):
            put(server.share_dir, f"{folder}/Season {d:02d}/Episode {i:03d} 회차.ts",
                b"x" * (i + 1))
    return {"server": server, "folder": folder, "total": DIRS * PER_DIR}


@pytest.mark.fault("media catalog: smbd killed mid-scan, restarted", kind="server stopped")
def test_killed_scan_resumes_without_duplicates(nas: dict, tmp_path: Path,
                                                quick_retries: None) -> None:
    server, folder = nas["server"], nas["folder"]
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    catalog.apply_schema("catalog")
    settings = CatalogSettings.from_env()
    assert settings.retry_delays_s == (0.05, 0.05, 0.05)
    commits: list[int] = []

    def kill_after_second_batch(cp: Checkpoint) -> None:
        commits.append(cp.processed_files)
        if len(commits) == 2:
            server.kill()  # abrupt: no goodbye to the client

    with catalog.connect() as conn:
        store = CatalogStore(conn)
        access = NASAccess(nas_resource_for(server), settings.retry_delays_s)
        with pytest.raises(BackendError) as err:
            Scanner(store, access, settings, on_batch=kill_after_second_batch,
                    lookahead=4).scan(folder, folder)
        cp = store.checkpoint_row(store.unfinished_scan(folder)[0])
    message = str(err.value)
    assert f"127.0.0.1:{server.port}" in message and "gave up after 4 attempts" in message
    assert "HP_NAS_HOST" in message and server.password not in message
    assert access.reconnects == 3
    # The batch after the second may have been on its way to SQLite when smbd died (the
    # writes run one batch behind the walk, scan_writer.py): committed whole or not at all.
    assert commits[-1] == 200 and cp["state"] == "failed"
    assert cp["processed_files"] in (200, 300)
    assert cp["status"] == "in_progress"  # the design's value: the next run resumes it
    with sqlite3.connect(catalog.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM files").fetchone()[0] == \
            cp["processed_files"]

    server.start()  # same port, same share
    instance = instance_with(folder)
    result = dg.materialize([nas_media_files], partition_key=folder, instance=instance,
                            resources={"nas": nas_resource_for(server), "sqlite_catalog": catalog})
    meta = metadata_of(result, "nas_media_files")
    assert (meta["resumed"], meta["attempts"]) == (1, 2)
    # Counters continue from the checkpoint: every file counted exactly once.
    assert meta["processed_files"] == meta["new"] == meta["found"] == nas["total"]
    with sqlite3.connect(catalog.path) as conn:
        rows = conn.execute("SELECT path, first_scan_id FROM files").fetchall()
        status = conn.execute("SELECT status, state, COUNT(*) FROM scan_checkpoints "
                              "GROUP BY status, state").fetchall()
    assert len(rows) == len({r[0] for r in rows}) == nas["total"]
    assert {r[1] for r in rows} == {cp["scan_id"]}  # one scan, resumed, not a second one
    assert status == [("completed", "done", 1)]
    expected = {f"{folder}/Season {d:02d}/Episode {i:03d} 회차.ts" for d in range(DIRS)
                for i in range(PER_DIR)}
    assert {r[0] for r in rows} == expected


def test_nas_down_fails_the_run_with_a_clear_error(nas: dict, tmp_path: Path,
                                                   quick_retries: None) -> None:
    server = nas["server"]
    up = nas_resource_for(server)
    # Nothing listens on the next port: every attempt is refused.
    down = NASResource(protocol="smb", host=up.host, port=free_port(), share=up.share,
                       username=up.username, password=up.password)
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    result = dg.materialize([nas_media_files], partition_key=nas["folder"],
                            instance=instance_with(nas["folder"]), raise_on_error=False,
                            resources={"nas": down, "sqlite_catalog": catalog})
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error
    text = ""
    while error is not None:
        text += error.message
        error = error.cause
    assert "NAS at smb://127.0.0.1" in text
    assert "cannot connect: the SMB server is down" in text
    assert "gave up after 4 attempts (waited 0.05, 0.05, 0.05 s" in text
    assert "HP_NAS_HOST" in text
