"""A run process killed with SIGKILL in the middle of a NAS scan: no goodbye, no `finally`,
no failed checkpoint written. The next run resumes from the last committed checkpoint and
the catalog ends with every file exactly once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from hybrid_pipelines.defs.media_catalog.assets import nas_media_files
from hybrid_pipelines.resources import NASResource, SQLiteCatalogResource
from hybrid_pipelines.resources.nas_fs import NAS_SENTINEL
from hybrid_pipelines_tests.media_catalog.conftest import instance_with, metadata_of

FOLDER = "Archive"
DIRS, PER_DIR = 100, 100  # 10,000 tiny files: a scan of a second or two, killed early
BATCH = 20

# The run process: the production wiring (resources from HP_* variables, a Dagster
# instance in DAGSTER_HOME), materializing one partition of the scan asset.
CHILD = f"""
import dagster as dg
from hybrid_pipelines.defs.media_catalog.assets import nas_media_files
from hybrid_pipelines.media_catalog.settings import PARTITIONS_NAME
from hybrid_pipelines.resources.build import build_resources

instance = dg.DagsterInstance.get()
instance.add_dynamic_partitions(PARTITIONS_NAME, [{FOLDER!r}])
res = build_resources()
dg.materialize([nas_media_files], partition_key={FOLDER!r}, instance=instance,
               resources={{"nas": res["nas"], "sqlite_catalog": res["sqlite_catalog"]}},
               run_config={{"ops": {{"nas_media_files": {{"config": {{"batch_size": {BATCH}}}}}}}}})
"""


@pytest.fixture(scope="module")
def nas_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    root = tmp_path_factory.mktemp("killed-run") / "nas"
    root.mkdir()
    (root / NAS_SENTINEL).touch()  # a plain directory standing in for the mounted share
    old = time.time() - 7200  # finished copies: stable at first sight
    paths = set()
    for d in range(DIRS):
        folder = root / FOLDER / f"Season {d:03d}"
        folder.mkdir(parents=True)
        for i in range(PER_DIR):
            rel = f"{FOLDER}/Season {d:03d}/Episode {i:03d} 회차.ts"
            target = root / rel
            target.write_bytes(b"x" * (i + 1))
            os.utime(target, (old, old))
            paths.add(rel)
    return root, paths


def _processed(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("SELECT MAX(processed_files) FROM scan_checkpoints").fetchone()
        return int(row[0] or 0)
    except sqlite3.OperationalError:  # the run has not created the catalog yet
        return 0


@pytest.mark.fault("run process SIGKILLed mid NAS scan -> resumes from checkpoint, no "
                   "duplicate rows", kind="killed mid-I/O")
def test_sigkilled_scan_run_resumes_from_its_checkpoint(nas_tree: tuple[Path, set[str]],
                                                        tmp_path: Path) -> None:
    root, expected = nas_tree
    db = tmp_path / "catalog.db"
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "HP_NAS_PROTOCOL": "local",
           "HP_NAS_LOCAL_ROOT": str(root), "HP_SQLITE_CATALOG_PATH": str(db)}
    child = subprocess.Popen([sys.executable, "-c", CHILD], env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _processed(db) < 2000:  # a fifth of the tree committed
            assert child.poll() is None, f"the run ended early: {child.stderr.read()!r}"
            assert time.monotonic() < deadline, "the run committed no batch in 120 s"
            time.sleep(0.002)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    with sqlite3.connect(db) as conn:
        cp = conn.execute("SELECT scan_id, status, state, processed_files FROM scan_checkpoints"
                          ).fetchall()
        rows = conn.execute("SELECT COUNT(*) FROM files").fetchone()[0]
    assert len(cp) == 1
    scan_id, status, state, processed = cp[0]
    # Killed mid-way: the checkpoint still says running (nobody could mark it failed), and
    # it agrees with the rows, which committed in the same transactions.
    assert (status, state) == ("in_progress", "running"), "the kill landed after the scan ended"
    assert 0 < processed < len(expected)
    assert rows == processed

    catalog = SQLiteCatalogResource(path=str(db))
    nas = NASResource(protocol="local", local_root=str(root))
    result = dg.materialize([nas_media_files], partition_key=FOLDER,
                            instance=instance_with(FOLDER),
                            resources={"nas": nas, "sqlite_catalog": catalog},
                            run_config={"ops": {"nas_media_files": {"config": {
                                "batch_size": BATCH}}}})
    meta = metadata_of(result, "nas_media_files")
    assert (meta["resumed"], meta["attempts"]) == (1, 2)
    assert meta["processed_files"] == meta["new"] == meta["found"] == len(expected)
    with sqlite3.connect(db) as conn:
        files = conn.execute("SELECT path, first_scan_id FROM files").fetchall()
        statuses = conn.execute("SELECT status, COUNT(*) FROM scan_checkpoints "
                                "GROUP BY status").fetchall()
        bad = conn.execute("PRAGMA integrity_check").fetchone()[0]
    assert bad == "ok"
    assert len(files) == len({p for p, _ in files}) == len(expected)
    assert {p for p, _ in files} == expected
    assert {s for _, s in files} == {scan_id}  # the killed scan, resumed, not a new one
    assert statuses == [("completed", 1)]

    again = dg.materialize([nas_media_files], partition_key=FOLDER,
                           instance=instance_with(FOLDER),
                           resources={"nas": nas, "sqlite_catalog": catalog})
    meta = metadata_of(again, "nas_media_files")
    assert (meta["new"], meta["changed"], meta["deleted"], meta["found"]) == \
        (0, 0, 0, len(expected))
