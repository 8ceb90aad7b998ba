"""`hybrid-pipelines catalog reprobe` and the nightly reconcile's re-probe option, over the
real Samba share, the real ffprobe and the Firestore emulator: each selects exactly the
files asked for, and a Dagster run (on a DAGSTER_HOME instance for the command) re-probes
exactly those."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from hybrid_pipelines.cli import main
from hybrid_pipelines.defs.media_catalog.schedules import media_catalog_nightly_reconcile
from hybrid_pipelines.defs.pools import TRIGGER_TAG
from hybrid_pipelines.dev.stack.firestore import FirestoreEmulator
from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.media_catalog.catalog_store import CatalogStore
from hybrid_pipelines.media_catalog.settings import PARTITIONS_NAME
from hybrid_pipelines.resources import FirestoreResource, NASResource, SQLiteCatalogResource

from .conftest import CHAIN, chain_resources, instance_with, metadata_of, put, unique
from .reprobe_support import file_doc, rows

FILES = {"good.mp4": "mp4", "Broken/cut.mp4": "truncated", "Broken/noise.mp4": "random",
         "Broken/zero.mp4": "zero", "Other/b.mkv": "mkv"}


@pytest.fixture()
def probed(samba_server: SambaServer, nas_resource: NASResource,
           firestore_resource: FirestoreResource, media: dict[str, Path],
           tmp_path: Path) -> dict:
    folder = unique("Reprobe")
    for rel, kind in FILES.items():
        put(samba_server.share_dir, f"{folder}/{rel}", media[kind])
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    resources = chain_resources(nas_resource, catalog, firestore_resource)
    instance = instance_with(folder)
    assert dg.materialize(CHAIN, partition_key=folder, instance=instance,
                          resources=resources).success
    return {"folder": folder, "catalog": catalog, "resources": resources,
            "instance": instance, "before": rows(catalog.path)}


def _reprobed(before: dict, after: dict) -> set[str]:
    return {n for n in after if after[n]["probed_at"] != before[n]["probed_at"]}


def _command_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: SambaServer,
                 emulator: FirestoreEmulator, catalog: SQLiteCatalogResource) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    for name in ("HP_NAS_ROOT_DIR", "NAS_ROOT_PATH", "HP_CATALOG_NAS_ROOT", "HP_FFPROBE_PATH",
                 "HP_RESOURCES_MODE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
            "DAGSTER_HOME": str(home), "HP_SQLITE_CATALOG_PATH": catalog.path,
            "HP_NAS_PROTOCOL": "smb", "HP_NAS_HOST": "127.0.0.1", "HP_NAS_PORT": str(server.port),
            "HP_NAS_SHARE": server.share, "HP_NAS_USERNAME": server.username,
            "HP_NAS_PASSWORD": server.password, "HP_FIRESTORE_PROJECT": emulator.project_id,
            "FIRESTORE_EMULATOR_HOST": emulator.address}.items():
        monkeypatch.setenv(name, value)
    return home


def test_catalog_reprobe_error_runs_a_dagster_run_for_exactly_those_files(
        probed: dict, samba_server: SambaServer, firestore_emulator: FirestoreEmulator,
        firestore_resource: FirestoreResource, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    folder, catalog, before = probed["folder"], probed["catalog"], probed["before"]
    assert {n for n, r in before.items() if r["status"] == "invalid"} == \
        {"cut.mp4", "noise.mp4", "zero.mp4"}
    _command_env(monkeypatch, tmp_path, samba_server, firestore_emulator, catalog)

    assert main(["catalog", "reprobe", folder, "--error", "TRUNCATED"]) == 0
    out = capsys.readouterr().out
    assert f"{folder}: 1 invalid file(s) whose error contains 'TRUNCATED' marked" in out
    instance = dg.DagsterInstance.get()
    runs = instance.get_runs(filters=dg.RunsFilter(tags={TRIGGER_TAG: "reprobe"}))
    assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS
    assert runs[0].job_name == "media_catalog_job"
    assert runs[0].tags["dagster/partition"] == folder
    assert f"run {runs[0].run_id} of media_catalog_job succeeded" in out
    after = rows(catalog.path)
    assert _reprobed(before, after) == {"cut.mp4"}
    assert after["cut.mp4"]["probe_retry_after"] is None  # done: nothing left due
    assert after["cut.mp4"]["probe_failure_class"] == "corrupt"
    doc = file_doc(firestore_resource, folder, f"{folder}/Broken/cut.mp4")
    assert doc["seq"] == after["cut.mp4"]["seq"]  # the run's sync step carried it on

    # Without --error: every invalid file below Broken/; --no-run only marks them.
    assert main(["catalog", "reprobe", f"{folder}/Broken", "--invalid", "--no-run"]) == 0
    out = capsys.readouterr().out
    assert f"{folder}: 3 invalid file(s) marked for re-probe" in out
    assert f"--select 'nas_media_files*' --partition {folder}" in out
    assert len(instance.get_runs()) == 1  # no new run
    with catalog.connect() as conn:
        assert CatalogStore(conn).count_due_reprobes(folder) == 3  # the sensor sees them
    result = dg.materialize(CHAIN, partition_key=folder, instance=probed["instance"],
                            resources=probed["resources"])
    assert metadata_of(result, "media_probes")["reprobed"] == 3
    assert _reprobed(after, rows(catalog.path)) == {"cut.mp4", "noise.mp4", "zero.mp4"}

    # A folder alone: its probed files, valid ones included; no instance: no run.
    monkeypatch.delenv("DAGSTER_HOME")
    assert main(["catalog", "reprobe", f"{folder}/Other"]) == 0
    out = capsys.readouterr().out
    assert f"{folder}: 1 file(s) marked for re-probe" in out
    assert "no run launched (DAGSTER_HOME is not set)" in out


def test_nightly_reconcile_option_reprobes_the_selected_invalid_files(
        probed: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder, catalog, before = probed["folder"], probed["catalog"], probed["before"]
    monkeypatch.setenv("HP_CATALOG_NIGHTLY_REPROBE", "error:zero-byte")
    # The daemon's kind of instance (one with a ref). Not instance_for_test(): its exit
    # leaves its defs-state storage current, which breaks later Definitions in the process.
    (tmp_path / "scheduler").mkdir()
    scheduler_instance = dg.DagsterInstance.local_temp(str(tmp_path / "scheduler"))
    scheduler_instance.add_dynamic_partitions(PARTITIONS_NAME, [folder])
    context = dg.build_schedule_context(
        instance=scheduler_instance,
        scheduled_execution_time=datetime(2026, 11, 30, 3, tzinfo=UTC))
    requests = media_catalog_nightly_reconcile(context)
    monkeypatch.setenv("HP_CATALOG_NIGHTLY_REPROBE", "invalid")
    second = media_catalog_nightly_reconcile(context)
    monkeypatch.setenv("HP_CATALOG_NIGHTLY_REPROBE", "sometimes")
    with pytest.raises(ValueError, match="HP_CATALOG_NIGHTLY_REPROBE='sometimes'"):
        media_catalog_nightly_reconcile(context)
    assert [r.partition_key for r in requests] == [folder]
    config = requests[0].run_config
    assert config["ops"]["media_probes"]["config"]["reprobe_error"] == "zero-byte"
    assert config["ops"]["nas_media_files"]["config"]["full_reconcile"] is True
    result = dg.materialize(CHAIN, partition_key=folder, instance=probed["instance"],
                            resources=probed["resources"], run_config=config)
    assert metadata_of(result, "media_probes")["reprobed"] == 1
    assert _reprobed(before, rows(catalog.path)) == {"zero.mp4"}

    config = second[0].run_config
    result = dg.materialize(CHAIN, partition_key=folder, instance=probed["instance"],
                            resources=probed["resources"], run_config=config)
    assert metadata_of(result, "media_probes")["reprobed"] == 3
