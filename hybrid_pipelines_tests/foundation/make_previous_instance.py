"""Builds previous_instance/: a Dagster instance (SQLite storage) written by the PREVIOUS layout's
code, for test_instance_carry_over.py, and previous_instance/manifest.json, what that code saw.
Run it again only to record a different previous main (about a minute):

    git worktree add /tmp/prev b5c550c
    .venv/bin/python -m hybrid_pipelines_tests.foundation.make_previous_instance /tmp/prev
    git worktree remove --force /tmp/prev

It loads /tmp/prev's own workspace.yaml (code location `hybrid_pipelines`, served by a code
server that imports /tmp/prev's `hybrid_pipelines.definitions`) and does, through the same
instance calls, what the daemon and an operator did there:

  * one sensor-daemon iteration: every sensor (all run by default) gets its daemon-written
    state and a tick. `media_catalog_nas_sensor` finds the NAS folders WSOP and HCL (a local
    NAS; HCL is empty), adds them to the dynamic partitions `media_catalog_folders`, stores its
    JSON cursor and queues a `media_catalog_job` run for each; the sensors that need
    PostgreSQL record failed ticks (every networked backend is pointed at a closed port);
  * the queued WSOP run and a `backend_health_job` run are launched as the run queue does (scan,
    probe and catalog succeed, the Firestore step fails; the health checks record which
    backends are down); the HCL run stays queued, as a run waiting at the upgrade would;
  * `dagster sensor cursor model_promotion_requests_sensor --set 41` and
    `dagster schedule stop pending_sync_schedule` (a default-running schedule).

Then only the SQLite databases stay (history/, schedules/): compute logs and stored outputs
are dropped, the databases vacuumed. This module imports no hybrid_pipelines code."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "previous_instance"
MANIFEST = FIXTURE / "manifest.json"
PREVIOUS_COMMIT = "b5c550c"
LOCATION = "hybrid_pipelines"
REPOSITORY = "__repository__"
PARTITIONS_NAME = "media_catalog_folders"
CATALOG_PARTITION = "WSOP"
EMPTY_FOLDER = "HCL"
PROMOTION_SENSOR, PROMOTION_CURSOR = "model_promotion_requests_sensor", "41"
STOPPED_SCHEDULE = "pending_sync_schedule"
DAGSTER_YAML = "telemetry:\n  enabled: false\n"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment(work: Path) -> dict[str, str]:
    """Local backends in `work`, every networked one on a closed port: nothing can hang."""
    closed = _closed_port()
    nas = work / "nas"
    (nas / CATALOG_PARTITION / "2024").mkdir(parents=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc=size=160x120:rate=10:duration=1", "-pix_fmt", "yuv420p",
                    str(nas / CATALOG_PARTITION / "2024" / "Day1.mp4")], check=True)
    (nas / EMPTY_FOLDER).mkdir()
    for d in ("efs", "hot", "catalog"):
        (work / d).mkdir()
    return {
        "HP_EXECUTOR": "default",
        "HP_NAS_PROTOCOL": "local", "HP_NAS_LOCAL_ROOT": str(nas),
        "HP_SQLITE_CATALOG_PATH": str(work / "catalog" / "catalog.db"),
        "HP_EFS_MOUNT_PATH": str(work / "efs"), "HP_JUICEFS_MOUNT_PATH": str(work / "hot"),
        "HP_PG_HOST": "127.0.0.1", "HP_PG_PORT": str(closed),
        "HP_SEAWEEDFS_S3_ENDPOINT": f"http://127.0.0.1:{closed}",
        "HP_OBJECT_STORE_ENDPOINT": f"http://127.0.0.1:{closed}",
        "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{closed}",
        "HP_CATALOG_MIN_STABLE_S": "0", "HP_CATALOG_QUIET_S": "1",
        "HP_CATALOG_RETRY_DELAYS": "0",
    }


def _check_previous_code(code: Path, env: dict[str, str]) -> None:
    out = subprocess.run([sys.executable, "-c", "import hybrid_pipelines; "
                          "print(hybrid_pipelines.__file__)"], cwd=code, env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(code.resolve()):
        raise SystemExit(f"hybrid_pipelines resolves to {out}, not under {code}")


def _create_run(instance, location, repo, job_name: str):
    """A run of `job_name` as the UI's launchpad creates it (no config, the job's tags)."""
    from dagster._core.definitions.selector import JobSubsetSelector

    remote_job = location.get_job(JobSubsetSelector(
        location_name=location.name, repository_name=repo.name, job_name=job_name,
        op_selection=None))
    plan = location.get_execution_plan(remote_job, {}, step_keys_to_execute=None,
                                       known_state=None, instance=instance)
    return instance.create_run(
        job_name=job_name, run_id=None, run_config={}, resolved_op_selection=None,
        step_keys_to_execute=None, op_selection=None, status=None, root_run_id=None,
        parent_run_id=None, tags=remote_job.tags, job_snapshot=remote_job.job_snapshot,
        execution_plan_snapshot=plan.execution_plan_snapshot,
        parent_job_snapshot=remote_job.parent_job_snapshot,
        remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(),
        asset_selection=None, asset_check_selection=None, asset_graph=repo.asset_graph)


def _wait(instance, run_ids: list[str], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = [instance.get_run_by_id(r) for r in run_ids]
        if all(r.is_finished for r in runs):
            for r in runs:
                print(f"run {r.run_id} {r.job_name}: {r.status.value}")
            return
        time.sleep(1)
    raise SystemExit(f"runs {run_ids} did not finish in {timeout_s} s")


def _materialized(instance) -> dict[str, list[str]]:
    """Asset key -> materialized partitions ([""] for an unpartitioned asset)."""
    from dagster import DagsterEventType, EventRecordsFilter

    out: dict[str, set[str]] = {}
    for rec in instance.get_event_records(
            EventRecordsFilter(event_type=DagsterEventType.ASSET_MATERIALIZATION)):
        mat = rec.asset_materialization
        out.setdefault(mat.asset_key.to_user_string(), set()).add(mat.partition or "")
    return {k: sorted(v) for k, v in sorted(out.items())}


def _check_results(instance) -> dict[str, dict[str, bool]]:
    """Asset key -> check name -> passed."""
    from dagster import DagsterEventType, EventRecordsFilter

    out: dict[str, dict[str, bool]] = {}
    for rec in instance.get_event_records(
            EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION)):
        ev = rec.event_log_entry.dagster_event.event_specific_data
        out.setdefault(ev.asset_key.to_user_string(), {})[ev.check_name] = ev.passed
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def _cli(code: Path, env: dict[str, str], *args: str) -> None:
    dagster = Path(sys.executable).with_name("dagster")
    subprocess.run([str(dagster), *args, "-w", str(code / "workspace.yaml")], cwd=code,
                   env=env, check=True)


def record(code: Path, home: Path, work: Path) -> dict:
    env = {**os.environ, **_environment(work), "DAGSTER_HOME": str(home),
           "PYTHONPATH": str(code)}
    _check_previous_code(code, env)
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    os.environ.update(env)  # the code server and the run workers inherit it

    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster._daemon.sensor import execute_sensor_iteration

    instance = DagsterInstance.get()
    target = WorkspaceFileTarget(paths=[str(code / "workspace.yaml")])
    os.chdir(code)
    with WorkspaceProcessContext(instance, target) as process_ctx:
        ctx = process_ctx.create_request_context()
        location = ctx.get_code_location(LOCATION)
        repo = location.get_repository(REPOSITORY)
        list(execute_sensor_iteration(process_ctx, logging.getLogger("sensor-daemon"),
                                      None, None))
        queued = {r.tags.get("dagster/partition"): r.run_id for r in instance.get_runs(
            filters=RunsFilter(statuses=[DagsterRunStatus.QUEUED]))}
        if sorted(queued) != sorted([CATALOG_PARTITION, EMPTY_FOLDER]):
            raise SystemExit(f"expected queued runs for {CATALOG_PARTITION} and {EMPTY_FOLDER}: "
                             f"{queued}")
        # the WSOP run leaves the queue, the HCL run is still queued at the upgrade
        run_ids = [queued[CATALOG_PARTITION],
                   _create_run(instance, location, repo, "backend_health_job").run_id]
        for run_id in run_ids:
            instance.launch_run(run_id, ctx)
        _wait(instance, run_ids)
        manifest = {
            "commit": PREVIOUS_COMMIT,
            "location": LOCATION, "repository": REPOSITORY,
            "runs": {r.run_id: {"job": r.job_name, "status": r.status.value,
                                "partition": r.tags.get("dagster/partition")}
                     for r in instance.get_runs()},
            "partitions": {PARTITIONS_NAME: instance.get_dynamic_partitions(PARTITIONS_NAME)},
            "materialized": _materialized(instance),
            "check_results": _check_results(instance),
        }
    _cli(code, env, "sensor", "cursor", PROMOTION_SENSOR, "--set", PROMOTION_CURSOR)
    _cli(code, env, "schedule", "stop", STOPPED_SCHEDULE)
    with WorkspaceProcessContext(instance, target) as process_ctx:
        repo = process_ctx.create_request_context().get_code_location(LOCATION) \
            .get_repository(REPOSITORY)
        instigators = {**{s.name: s for s in repo.get_sensors()},
                       **{s.name: s for s in repo.get_schedules()}}
        states = {}
        for name, remote in sorted(instigators.items()):
            state = instance.get_instigator_state(remote.get_remote_origin_id(),
                                                  remote.selector_id)
            if state is None:
                continue
            data = state.instigator_data
            states[name] = {"type": state.instigator_type.value,
                            "status": state.status.value,
                            "cursor": getattr(data, "cursor", None),
                            "selector_id": remote.selector_id,
                            "origin_id": remote.get_remote_origin_id()}
        manifest["instigators"] = states
    if states[PROMOTION_SENSOR]["cursor"] != PROMOTION_CURSOR:
        raise SystemExit(f"cursor of {PROMOTION_SENSOR} not set: {states[PROMOTION_SENSOR]}")
    instance.dispose()
    return manifest


def strip(home: Path) -> None:
    """Only the SQLite databases and dagster.yaml stay."""
    for p in sorted(home.iterdir()):
        if p.name not in ("dagster.yaml", "history", "schedules"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    for db in home.rglob("*.db"):  # fold the write-ahead logs in, then one file per database
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA page_size=1024")  # most pages are empty tables' and indexes'
        conn.execute("VACUUM")
        conn.close()
    left = sorted(str(p.relative_to(home)) for p in home.rglob("*")
                  if p.is_file() and not p.name.endswith(".db") and p.name != "dagster.yaml")
    if left:
        raise SystemExit(f"unexpected files in the instance: {left}")


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit(__doc__)
    code = Path(argv[0]).resolve()
    if not (code / "workspace.yaml").exists():
        raise SystemExit(f"{code} has no workspace.yaml (a checkout of {PREVIOUS_COMMIT}?)")
    with tempfile.TemporaryDirectory(prefix="prev-instance-") as tmp:
        home, work = Path(tmp) / "dagster_home", Path(tmp) / "work"
        work.mkdir()
        manifest = record(code, home, work)
        strip(home)
        if FIXTURE.exists():
            shutil.rmtree(FIXTURE)
        shutil.copytree(home, FIXTURE)
    MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    size = sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file())
    print(f"wrote {FIXTURE} ({size // 1024} KiB)")


if __name__ == "__main__":
    main(sys.argv[1:])
