"""The NAS sensor (dynamic partitions, runs only for changed folders, cursor) and the nightly
full-reconcile schedule, evaluated with Dagster's test contexts against a real share."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest

from hybrid_pipelines.definitions import defs
from hybrid_pipelines.defs.media_catalog.assets import FULL_RECONCILE_CONFIG
from hybrid_pipelines.defs.media_catalog.schedules import media_catalog_nightly_reconcile
from hybrid_pipelines.defs.pools import CATALOG_TAG
from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.media_catalog.rules.catalog_paths import file_id, partition_key_for
from hybrid_pipelines.media_catalog.settings import PARTITIONS_NAME
from hybrid_pipelines.resources import FirestoreResource, NASResource, SQLiteCatalogResource
from hybrid_pipelines_tests.media_catalog.conftest import CHAIN

from .conftest import chain_resources, metadata_of, put, tick, unique

WEIRD = "Wait... 포커 100%"  # a folder name that is not a valid partition key as it is


@pytest.fixture()
def setup(samba_server: SambaServer, nas_resource: NASResource,
          firestore_resource: FirestoreResource, media: dict[str, Path], tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    root = unique("mc-sensor")
    monkeypatch.setenv("HP_CATALOG_NAS_ROOT", root)
    share = samba_server.share_dir / root
    put(share, "WSOP/2024/Day1.mp4", media["mp4"])
    put(share, "WSOP/2024/Day2.mp4", media["mkv"])
    put(share, f"{WEIRD}/S1/E1.mp4", media["mp4"])
    put(share, "loose.mp4", media["mp4"])  # at the root: belongs to no catalog
    (share / ".recycle").mkdir()  # hidden: not a catalog
    resources = chain_resources(nas_resource, SQLiteCatalogResource(
        path=str(tmp_path / "catalog.db")), firestore_resource)
    with dg.instance_for_test() as instance:  # schedules need an instance with a ref
        yield {"share": share, "root": root, "resources": resources, "instance": instance}


def _run(s: dict, key: str, run_config: dg.RunConfig | None = None) -> dg.ExecuteInJobResult:
    result = dg.materialize(CHAIN, partition_key=key, instance=s["instance"],
                            resources=s["resources"], run_config=run_config)
    assert result.success
    return result


def test_sensor_requests_runs_only_for_changed_folders(setup: dict,
                                                       firestore_resource: FirestoreResource
                                                       ) -> None:
    s, share, instance = setup, setup["share"], setup["instance"]
    weird = partition_key_for(WEIRD)
    requests, cursor = tick(instance, None, s["resources"])
    assert sorted(instance.get_dynamic_partitions(PARTITIONS_NAME)) == sorted(["WSOP", weird])
    assert sorted(r.partition_key for r in requests) == sorted(["WSOP", weird])
    assert all(r.tags[CATALOG_TAG] == "sqlite" for r in requests)

    again, cursor = tick(instance, cursor, s["resources"])
    assert again == []  # same state: already requested

    _run(s, "WSOP")
    _run(s, weird)
    quiet, cursor = tick(instance, cursor, s["resources"])
    assert quiet == []

    put(share, f"{WEIRD}/S1/E2.mp4", b"not media")
    changed, cursor = tick(instance, cursor, s["resources"])
    assert [r.partition_key for r in changed] == [weird]
    assert metadata_of(_run(s, weird), "media_probes")["invalid"] == 1

    (share / "WSOP" / "2024" / "Day2.mp4").unlink()
    deleted, cursor = tick(instance, cursor, s["resources"])
    assert [r.partition_key for r in deleted] == ["WSOP"]
    assert metadata_of(_run(s, "WSOP"), "nas_media_files")["deleted"] == 1

    shutil.rmtree(share / "WSOP")  # a whole catalog removed from the NAS
    gone, cursor = tick(instance, cursor, s["resources"])
    assert [r.partition_key for r in gone] == ["WSOP"]
    result = _run(s, "WSOP")
    assert metadata_of(result, "nas_media_files")["found"] == 0
    assert metadata_of(result, "firestore_catalog")["firestore_files"] == 0
    day1 = f"{s['root']}/WSOP/2024/Day1.mp4"
    assert not firestore_resource.client().collection("files").document(file_id(day1)).get(
    ).exists
    after, cursor = tick(instance, cursor, s["resources"])
    assert after == []


def test_nightly_schedule_runs_a_full_reconcile_per_folder(setup: dict,
                                                           firestore_resource: FirestoreResource
                                                           ) -> None:
    s, instance = setup, setup["instance"]
    empty = dg.build_schedule_context(instance=instance)
    assert isinstance(media_catalog_nightly_reconcile(empty), dg.SkipReason)

    tick(instance, None, s["resources"])
    when = datetime(2026, 3, 1, 3, 0)
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
    requests = media_catalog_nightly_reconcile(context)
    assert sorted(r.partition_key for r in requests) == \
        sorted(["WSOP", partition_key_for(WEIRD)])
    job = defs.resolve_job_def("media_catalog_job")
    for req in requests:
        assert req.run_config == FULL_RECONCILE_CONFIG.to_config_dict()
        assert req.run_key == f"reconcile:{req.partition_key}:2026-03-01"
        assert req.tags[CATALOG_TAG] == "sqlite"
        dg.validate_run_config(job, req.run_config)

    _run(s, "WSOP")
    # A document Firestore holds for this folder but SQLite does not know: a full reconcile
    # deletes it.
    stray = firestore_resource.client().collection("files").document("stray-" + s["root"])
    stray.set({"partition": "WSOP", "path": "WSOP/gone.mp4"})
    result = _run(s, "WSOP", FULL_RECONCILE_CONFIG)
    scan = metadata_of(result, "nas_media_files")
    assert (scan["full_reconcile"], scan["dirs_skipped"], scan["new"]) == (1, 0, 0)
    sync = metadata_of(result, "firestore_catalog")
    assert (sync["full_resync"], sync["strays_deleted"]) == (1, 1)
    assert not stray.get().exists


def test_sensor_waits_for_a_scan_in_progress_and_resumes_a_dead_one(setup: dict) -> None:
    from hybrid_pipelines.media_catalog.catalog_store import CatalogStore
    from hybrid_pipelines.resources.sqlite_catalog import open_catalog

    s, instance = setup, setup["instance"]
    tick(instance, None, s["resources"])
    _run(s, "WSOP")
    conn = open_catalog(s["resources"]["sqlite_catalog"].path)
    try:
        store = CatalogStore(conn)
        cp = store.open_checkpoint("WSOP", "incremental")  # as a run that is scanning now
        requests, cursor = tick(instance, None, s["resources"])
        assert "WSOP" not in [r.partition_key for r in requests]
        with store.transaction() as c:  # ... and whose process died 20 minutes ago
            c.execute("UPDATE scan_checkpoints SET updated_at = updated_at - 1200 "
                      "WHERE scan_id = ?", (cp.scan_id,))
        requests, cursor = tick(instance, cursor, s["resources"])
        assert "WSOP" in [r.partition_key for r in requests]
    finally:
        conn.close()
    meta = metadata_of(_run(s, "WSOP"), "nas_media_files")
    assert (meta["resumed"], meta["attempts"], meta["new"]) == (1, 2, 0)
