"""media_catalog_job runs its four steps in the run's process (in-process executor), through
Dagster's real executor (execute_job, as a launched run does), against the real Samba and
Firestore emulator: a partition run succeeds end to end, and a failing step fails the run
with its own error while the steps after it never run."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from hybrid_pipelines.defs.media_catalog.assets import media_catalog_job
from hybrid_pipelines.media_catalog.settings import PARTITIONS_NAME
from hybrid_pipelines.resources import (
    FFprobeResource,
    FirestoreResource,
    NASResource,
    SQLiteCatalogResource,
)

from .conftest import CHAIN, put, unique

_ENV = "HP_TEST_EXECUTOR_RESOURCES"


def catalog_job() -> dg.JobDefinition:
    """The job as the code location defines it, with the test's servers (from _ENV): a
    module-level function, so execute_job can reconstruct it like a launched run."""
    cfg = json.loads(os.environ[_ENV])
    defs = dg.Definitions(assets=CHAIN, jobs=[media_catalog_job], resources={
        "nas": NASResource(**cfg["nas"]),
        "sqlite_catalog": SQLiteCatalogResource(path=cfg["catalog"]),
        "ffprobe": FFprobeResource(),
        "firestore": FirestoreResource(**cfg["firestore"])})
    return defs.resolve_job_def("media_catalog_job")


@pytest.fixture()
def setup(samba_server, nas_resource: NASResource, firestore_resource: FirestoreResource,
          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    root = unique("mc-exec")
    monkeypatch.setenv("HP_CATALOG_NAS_ROOT", root)
    monkeypatch.setenv("HP_CATALOG_RETRY_DELAYS", "0.05")
    monkeypatch.setenv(_ENV, json.dumps({
        "nas": {k: getattr(nas_resource, k) for k in ("protocol", "host", "port", "share",
                                                      "username", "password")},
        "catalog": str(tmp_path / "catalog.db"),
        "firestore": {"project": firestore_resource.project,
                      "emulator_host": firestore_resource.emulator_host}}))
    with dg.instance_for_test() as instance:
        yield {"share": samba_server.share_dir / root, "instance": instance}


def _execute(s: dict, partition: str) -> dg.ExecutionResult:
    s["instance"].add_dynamic_partitions(PARTITIONS_NAME, [partition])
    job = dg.reconstructable(catalog_job)
    with dg.execute_job(job, instance=s["instance"], tags={"dagster/partition": partition},
                        raise_on_error=False) as result:
        events = [(e.step_key, e.event_type_value, e.event_specific_data)
                  for e in result.all_events]
        return result.success, events


def test_the_job_runs_its_steps_in_the_run_process() -> None:
    assert media_catalog_job.executor_def is dg.in_process_executor


def test_a_partition_run_succeeds_end_to_end(setup: dict, media: dict[str, Path]) -> None:
    put(setup["share"], "Show/S1/E1.mp4", media["mp4"])  # an hour old: stable at first sight
    ok, events = _execute(setup, "Show")
    assert ok
    done = [k for k, t, _ in events if t == "STEP_SUCCESS"]
    assert done == ["nas_media_files", "media_probes", "catalog_db", "firestore_catalog"]
    # All four in one process: the in-process executor, no step subprocesses.
    assert not [k for k, t, _ in events if t == "STEP_WORKER_STARTED"]


@pytest.mark.fault("the catalogued root is missing -> the scan step fails the run with its "
                   "error; no later step runs", kind="state edited")
def test_a_failed_step_fails_the_run_with_its_error(setup: dict,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HP_CATALOG_NAS_ROOT", unique("mc-exec-missing"))
    ok, events = _execute(setup, "Show")
    assert not ok
    failures = [(k, d) for k, t, d in events if t == "STEP_FAILURE"]
    assert [k for k, _ in failures] == ["nas_media_files"]
    assert "refusing to mark the files" in failures[0][1].error.to_string()
    assert not [k for k, t, _ in events if t == "STEP_START" and k != "nas_media_files"]
    assert any(t == dg.DagsterEventType.RUN_FAILURE.value for _, t, _ in events)
