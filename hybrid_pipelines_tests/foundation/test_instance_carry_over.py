"""An instance created by the previous main keeps working with this code.

previous_instance/ is a Dagster instance (SQLite storage) written by the previous layout's
code (commit b5c550c, through its own workspace.yaml; see make_previous_instance.py, which
also wrote previous_instance/manifest.json, what that code saw). Opened here with the current
code, loaded the way workspace.yaml names it (location and module), it must still show:

  * its runs under jobs of the current code location, with run config the current jobs
    accept and, for the run still queued at the upgrade, the same steps;
  * its materializations and check results on assets and checks of the current asset graph,
    partitioned the same way;
  * every sensor's and schedule's stored state (cursor, stopped by an operator) under the
    selector id of the current sensor or schedule, with its tick history;
  * the dynamic partitions;
  * and a sensor tick evaluated by the current code continues from the old cursor."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.definitions.asset_checks.asset_check_spec import AssetCheckKey
from dagster._core.execution.api import create_execution_plan
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteInstigatorOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.remote_representation.external import RemoteRepository
from dagster._core.scheduler.instigation import InstigatorStatus, TickStatus
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load import location_origins_from_yaml_paths
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FIXTURE = HERE / "previous_instance"
MANIFEST = json.loads((FIXTURE / "manifest.json").read_text())
PROMOTION_SENSOR = "model_promotion_requests_sensor"


def _copy_instance(dest: Path) -> dg.DagsterInstance:
    shutil.copytree(FIXTURE, dest)
    return dg.DagsterInstance.from_config(str(dest))


def _in_process_origin() -> InProcessCodeLocationOrigin:
    """The code location as the root workspace.yaml names it, loaded in this process (no
    code server to wait for, and a test can fake what a sensor reads)."""
    (entry,) = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"]
    module = entry["python_module"]
    return InProcessCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name=module["module_name"],
                             working_directory=str(ROOT)),
        location_name=module["location_name"])


def _deployed_origin_id(instigator: str) -> str:
    """The origin id of a sensor or schedule served from the root workspace.yaml, as the UI
    and the daemon compute it (no code server needed)."""
    (origin,) = location_origins_from_yaml_paths([str(ROOT / "workspace.yaml")])
    repo = RemoteRepositoryOrigin(origin, MANIFEST["repository"])
    return RemoteInstigatorOrigin(repo, instigator).get_id()


def _repository(ctx: WorkspaceProcessContext) -> RemoteRepository:
    location = ctx.create_request_context().get_code_location(MANIFEST["location"])
    return location.get_repository(MANIFEST["repository"])


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[dg.DagsterInstance, RemoteRepository]]:
    instance = _copy_instance(tmp_path_factory.mktemp("carry-over") / "dagster_home")
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(_in_process_origin())
                                 ) as ctx:
        yield instance, _repository(ctx)
    instance.dispose()


@pytest.fixture(scope="module")
def current_defs() -> dg.Definitions:
    from hybrid_pipelines.definitions import defs

    return defs


def test_the_fixture_holds_what_the_previous_main_wrote(loaded) -> None:
    instance, _ = loaded
    runs = {r.run_id: {"job": r.job_name, "status": r.status.value,
                       "partition": r.tags.get("dagster/partition")}
            for r in instance.get_runs()}
    assert runs == MANIFEST["runs"]
    assert MANIFEST["materialized"] and MANIFEST["check_results"]
    assert {s["type"] for s in MANIFEST["instigators"].values()} == {"SENSOR", "SCHEDULE"}


def test_runs_belong_to_jobs_of_the_current_location(loaded, current_defs) -> None:
    instance, repo = loaded
    for run in instance.get_runs():
        origin = run.remote_job_origin
        assert (origin.location_name, origin.repository_origin.repository_name) == \
            (repo.handle.location_name, repo.name), run.run_id
        assert repo.has_job(run.job_name), f"{run.job_name} is gone"
        job = current_defs.resolve_job_def(run.job_name)
        # re-execution and the dequeued run use the stored run config with the current job
        assert dg.validate_run_config(job, run.run_config) is not None
        if "dagster/partition_set" in run.tags:
            assert repo.has_partition_set(run.tags["dagster/partition_set"])
        if "dagster/sensor_name" in run.tags:
            assert repo.has_sensor(run.tags["dagster/sensor_name"])


def test_a_run_queued_at_the_upgrade_runs_the_same_steps(loaded, current_defs) -> None:
    instance, _ = loaded
    queued = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]))
    assert queued, "the fixture has no queued run"
    for run in queued:
        old = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        new = create_execution_plan(current_defs.resolve_job_def(run.job_name),
                                    run_config=run.run_config, instance_ref=None,
                                    tags=run.tags)
        assert sorted(s.key for s in old.steps) == sorted(new.step_keys_to_execute)


def test_materializations_and_check_results_are_on_current_assets(loaded) -> None:
    instance, repo = loaded
    graph = repo.asset_graph
    for key_str, partitions in MANIFEST["materialized"].items():
        key = dg.AssetKey.from_user_string(key_str)
        assert graph.has(key), f"{key_str} is not in the current asset graph"
        if partitions == [""]:
            assert instance.get_latest_materialization_event(key) is not None
            continue
        pdef = graph.get(key).partitions_def
        assert isinstance(pdef, dg.DynamicPartitionsDefinition), key_str
        assert pdef.name in MANIFEST["partitions"]
        assert instance.get_materialized_partitions(key) == set(partitions)
    check_keys = [AssetCheckKey(dg.AssetKey.from_user_string(a), name)
                  for a, checks in MANIFEST["check_results"].items() for name in checks]
    missing = [k for k in check_keys if k not in graph.asset_check_keys]
    assert not missing, f"checks with stored results that the current code lacks: {missing}"
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(check_keys)
    assert set(latest) == set(check_keys)


def test_sensor_and_schedule_states_are_found_by_the_current_selectors(loaded) -> None:
    instance, repo = loaded
    current = {**{s.name: s for s in repo.get_sensors()},
               **{s.name: s for s in repo.get_schedules()}}
    stored = {s.instigator_name: s for s in instance.all_instigator_state()}
    assert set(stored) == set(MANIFEST["instigators"])
    assert not set(stored) - set(current), "stored states of sensors/schedules that are gone"
    for name, old in MANIFEST["instigators"].items():
        remote = current[name]
        # the same location, repository and name: the same selector id, by which states are
        # found; and the origin id the UI and the daemon compute from workspace.yaml
        assert remote.selector_id == old["selector_id"], name
        assert _deployed_origin_id(name) == old["origin_id"], name
        state = instance.get_instigator_state(remote.get_remote_origin_id(), remote.selector_id)
        assert state is not None, name
        assert state.status.value == old["status"], name
        assert getattr(state.instigator_data, "cursor", None) == old["cursor"], name
        ticks = instance.get_ticks(remote.get_remote_origin_id(), remote.selector_id)
        if old["type"] == "SENSOR":
            assert ticks, f"{name}: its tick history is not found"
    assert MANIFEST["instigators"]["media_catalog_nas_sensor"]["cursor"]
    assert MANIFEST["instigators"][PROMOTION_SENSOR]["cursor"] == "41"
    stopped = current["pending_sync_schedule"]
    assert stopped.default_status == dg.DefaultScheduleStatus.RUNNING
    state = instance.get_instigator_state(stopped.get_remote_origin_id(), stopped.selector_id)
    assert not stopped.get_current_instigator_state(state).is_running, \
        "an operator's stop of a default-running schedule is lost"


def test_dynamic_partitions_are_kept(loaded) -> None:
    from hybrid_pipelines.defs.media_catalog.assets import media_catalog_folders

    instance, _ = loaded
    assert MANIFEST["partitions"] == {
        media_catalog_folders.name: instance.get_dynamic_partitions(media_catalog_folders.name)}


def test_a_sensor_tick_of_the_current_code_continues_from_the_old_cursor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sensor daemon's own per-sensor step, with the request table faked: one pending row
    with an id below the stored cursor 41. The new cursor stays 41 only if the old was read."""
    from dagster._daemon.sensor import _process_tick_generator

    from hybrid_pipelines.defs.ai_tiers import sensors

    monkeypatch.setattr(sensors, "_pending", lambda postgres, sql: [(5, "m5")])
    instance = _copy_instance(tmp_path / "dagster_home")
    try:
        with WorkspaceProcessContext(
                instance, InProcessWorkspaceLoadTarget(_in_process_origin())) as ctx:
            remote = _repository(ctx).get_sensor(PROMOTION_SENSOR)
            state = instance.get_instigator_state(remote.get_remote_origin_id(),
                                                  remote.selector_id)
            errors = list(_process_tick_generator(
                ctx, logging.getLogger("carry-over-sensor"), remote, state, None,
                instance.get_tick_retention_settings(state.instigator_type), None))
            assert [e for e in errors if e is not None] == []
            after = instance.get_instigator_state(remote.get_remote_origin_id(),
                                                  remote.selector_id)
            tick = instance.get_ticks(remote.get_remote_origin_id(), remote.selector_id)[0]
        assert tick.status == TickStatus.SUCCESS, tick.error
        assert tick.run_keys == ["model_promotion_requests-5"]
        assert after.instigator_data.cursor == "41"
        assert after.status == InstigatorStatus.DECLARED_IN_CODE
        (run,) = instance.get_runs(filters=dg.RunsFilter(
            tags={"dagster/run_key": "model_promotion_requests-5"}))
        assert run.run_config["ops"]["promote_model"]["config"]["model_id"] == "m5"
    finally:
        instance.dispose()
