"""Load: 50 sensor-triggered runs queued at once; the instance's run coordinator limits from
the project's dagster.yaml hold (8 runs at once, 2 per nas_sync pool) and no run is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hybrid_pipelines.dev.stack.instance_config import write_instance_yaml

from .load_location import POOL_RUNS, RUNS

REPO = Path(__file__).resolve().parents[2]


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = cur = 0
    for _, delta in events:
        cur += delta
        best = max(best, cur)
    return best


@pytest.mark.reliability
def test_fifty_sensor_runs_respect_limits(pg_server, tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    limits = config["concurrency"]["runs"]
    max_runs = limits["max_concurrent_runs"]
    pool_limit = next(t["limit"] for t in limits["tag_concurrency_limits"]
                      if t.get("value") == "nas_sync")
    home = tmp_path / "home"
    home.mkdir()
    write_instance_yaml(home)  # the project's dagster.yaml + Postgres storage, as the stack's
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": {
        "module_name": "hybrid_pipelines_tests.reliability.load_location",
        "working_directory": str(REPO)}}]}))
    import psycopg

    dbname = "dagster_load"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}"')  # noqa: S608 - fixed name
        conn.execute(f'CREATE DATABASE "{dbname}"')  # noqa: S608
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": "127.0.0.1",
           "DAGSTER_PG_PORT": str(pg_server.port), "DAGSTER_PG_USER": "postgres",
           "DAGSTER_PG_PASSWORD": pg_server.password, "DAGSTER_PG_DB": dbname}
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        import dagster as dg

        os.environ_backup = dict(os.environ)  # type: ignore[attr-defined]
        for k in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER",
                  "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
            os.environ[k] = env[k]
        with dg.DagsterInstance.from_config(str(home)) as instance:
            deadline = time.monotonic() + 420
            records = []
            while time.monotonic() < deadline:
                records = instance.get_run_records()
                done = [r for r in records if r.dagster_run.is_finished]
                if len(records) >= RUNS and len(done) == len(records):
                    break
                time.sleep(1)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
        os.environ.clear()
        os.environ.update(os.environ_backup)  # type: ignore[attr-defined]
    from collections import Counter

    progress = Counter(r.dagster_run.status.value for r in records)
    assert len(records) == RUNS, f"{progress}: {len(records)} runs for {RUNS} requests"
    statuses = {r.dagster_run.status.value for r in records}
    assert statuses == {"SUCCESS"}, progress
    pool = [r for r in records
            if r.dagster_run.tags.get("hybrid_pipelines/pool") == "nas_sync"]
    assert len(pool) == POOL_RUNS
    assert _max_overlap([(r.start_time, r.end_time) for r in records]) <= max_runs
    assert _max_overlap([(r.start_time, r.end_time) for r in pool]) <= pool_limit
    # The limit really bound: more pool runs were waiting at once than it lets run.
    waiting = [(r.create_timestamp.timestamp(), r.end_time) for r in pool]
    assert _max_overlap(waiting) > pool_limit
