"""The operator's command line against the stack that `hybrid-pipelines dev` runs: Dagster's
own CLI on the Postgres instance (materialize, execute, schedules, sensors; the on-demand
AI-tier jobs with a run config file naming items seeded in the stack's stores) and the
project's `hybrid-pipelines` commands (help, one-line errors)."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from hybrid_pipelines.cli import build_parser

from . import ai_tier_jobs, project
from .cli_driver import CLIDriver
from .dev_instance import REPO, ensure_partition, schedule_status, sensor_state

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
MODULE = ["-m", "hybrid_pipelines.definitions"]
WORKSPACE = ["-w", str(REPO / "workspace.yaml")]
RUN_ID = re.compile(r"\b([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b")
# Python warnings from libraries (e.g. platformdirs without XDG_RUNTIME_DIR) are not the
# command's own output.
QUIET = {"PYTHONWARNINGS": "ignore"}


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 180):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, **QUIET, **(env or {})})


def dagster(*args: str, env: dict[str, str], timeout: float = 180):
    return run([str(BIN / "dagster"), *args], env=env, timeout=timeout)


def lines(res: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list:
    out = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += command_paths(sub, (*prefix, name))
    return out


def runnable_jobs() -> list[str]:
    """Every unpartitioned job. Partitioned jobs (media_catalog_job) run through the partition
    backfill of the browser test and the partitioned `asset materialize` below, not here: a
    skip would fail CI. A job that needs run config runs with a scenario of ai_tier_jobs
    (seeded items, a config file naming them); one without a scenario fails its test."""
    return [job.name for job in project.job_defs() if job.partitions_def is None]


def write_run_config(path: Path, run_config: dict[str, Any], in_process: bool) -> Path:
    """A run config file as the operator writes one for `dagster job execute -c`."""
    if in_process:
        run_config = {**run_config, "execution": {"config": {"in_process": {}}}}
    path.write_text(yaml.safe_dump(run_config, sort_keys=False))
    return path


# --- the project's own commands -----------------------------------------------------------

def test_every_project_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    # The console script itself, once (each process imports every domain's commands).
    top = run([str(BIN / "hybrid-pipelines"), "--help"], timeout=120)
    assert top.returncode == 0 and top.stdout.startswith("usage: hybrid-pipelines"), top.stderr
    parser = build_parser()
    paths = command_paths(parser)
    assert ("stack",) in paths and ("dev",) in paths
    for path in paths[1:]:
        if path == ("dagster",):
            continue  # passes every argument, --help too, to Dagster: test_dagster_wrapper.py
        shown = " ".join(("hybrid-pipelines", *path))
        assert path[0] in top.stdout, f"{path[0]} is not in `hybrid-pipelines --help`"
        with pytest.raises(SystemExit) as done:
            build_parser().parse_args([*path, "--help"])
        out = capsys.readouterr().out
        assert done.value.code == 0, f"`{shown} --help` exited {done.value.code}"
        assert out.startswith(f"usage: {shown}"), out[:300]
        assert len(out.splitlines()) > 2, f"`{shown} --help` explains nothing"


def test_project_commands_fail_with_one_clear_line(tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    cases = [
        (["stack", "status", "--state-dir", "/nonexistent/hp"], "/nonexistent/hp"),
        # A state dir that is a file (a typo): an error line naming it, not a traceback.
        (["stack", "up", "--state-dir", str(a_file)], str(a_file)),
    ]
    for argv, named in cases:
        res = run([str(BIN / "hybrid-pipelines"), *argv], timeout=60)
        out = lines(res)
        shown = "hybrid-pipelines " + " ".join(argv)
        assert res.returncode != 0, f"`{shown}` succeeded"
        assert "Traceback" not in res.stdout + res.stderr, f"`{shown}` printed a traceback:\n" \
            + "\n".join(out[-8:])
        assert len(out) == 1 and named in out[0], f"`{shown}` should print one line naming " \
                                                  f"{named}, got: {out}"
    bad_port = run([str(BIN / "hybrid-pipelines"), "dev", "--port", "notanumber"], timeout=60)
    assert bad_port.returncode == 2
    assert lines(bad_port)[-1].startswith("hybrid-pipelines dev: error: argument --port")


def test_dagster_errors_name_the_bad_selection_and_config(tmp_path: Path) -> None:
    """Dagster prints its own traceback for these (we cannot change that); what we check is
    that the run is refused and the last line names the bad input."""
    # One instance each: two processes creating one fresh SQLite instance race on its schema.
    homes = []
    for name in ("sel", "cfg"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        homes.append({"DAGSTER_HOME": str(tmp_path / name)})
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("ops:\n  no_such_op:\n    config: {}\n")
    with ThreadPoolExecutor(2) as pool:
        sel = pool.submit(dagster, "asset", "materialize", "--select", "no_such_asset", *MODULE,
                          env=homes[0])
        cfg = pool.submit(dagster, "job", "execute", "-j", "backend_health_job", *MODULE,
                          "-c", str(bad_config), env=homes[1])
    sel, cfg = sel.result(), cfg.result()
    assert sel.returncode != 0 and "no_such_asset" in lines(sel)[-1], lines(sel)[-3:]
    assert cfg.returncode != 0
    assert any("no_such_op" in ln for ln in lines(cfg)[-3:]), lines(cfg)[-3:]
    assert "RUN_START" not in cfg.stdout + cfg.stderr, "a run started with invalid config"


# --- Dagster's CLI on the stack's instance -------------------------------------------------

def test_stack_env_provides_every_resource_variable(e2e) -> None:
    from hybrid_pipelines_tests.deploy.deploy_files import (
        FIRESTORE_ALTERNATIVES,
        env_vars_read_by_code,
    )

    env = e2e.dev.env()
    read = {n for n, mods in env_vars_read_by_code().items()
            if any("/resources/" in m for m in mods)}
    missing = sorted(read - FIRESTORE_ALTERNATIVES - set(env))
    assert not missing, f".local/stack.env lacks {missing}"
    assert env.keys() & FIRESTORE_ALTERNATIVES
    assert (Path(env["DAGSTER_HOME"]) / "dagster.yaml").exists()


def run_status(e2e, run_id: str) -> str:
    return e2e.dev.graphql("""query($id: ID!) { runOrError(runId: $id) { ... on Run {
      status } } }""", {"id": run_id})["runOrError"].get("status", "missing")


def finished_run_id(res: subprocess.CompletedProcess, what: str) -> str:
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"`{what}` failed:\n{out[-3000:]}"
    done = [ln for ln in out.splitlines() if "RUN_SUCCESS" in ln]
    assert done, f"`{what}` printed no RUN_SUCCESS:\n{out[-2000:]}"
    return RUN_ID.search(done[0]).group(1)


@pytest.fixture(scope="module")
def stores(e2e) -> ai_tier_jobs.Stores:
    return ai_tier_jobs.Stores.of(e2e.dev.env())


@pytest.fixture(scope="module")
def config_scenarios(stores) -> dict[str, tuple[Any, dict[str, Any]]]:
    """The on-demand jobs' items, seeded in the stack's stores before any CLI run starts."""
    return ai_tier_jobs.seed_all(stores)


@pytest.fixture(scope="module")
def cli_runs(e2e, config_scenarios, tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, tuple[str, Any]]:
    """Every `dagster asset materialize` / `dagster job execute` / `dagster schedule|sensor`
    call of this module against the stack's instance. `asset materialize --select
    backend_health` runs the real `dagster` console script in a process of its own, as the
    operator runs it (test_dagster_errors_name_the_bad_selection_and_config runs two more);
    the rest go through Dagster's same click CLI in two driver processes (cli_driver.py: one
    Dagster import each instead of one a command, which cost minutes). Jobs on the default
    executor get `in_process` run config: one process per run instead of one per step. The
    jobs that need run config get a file of their own: their scenario's plus that."""
    configs = tmp_path_factory.mktemp("cli")
    in_process = write_run_config(configs / "in_process.yaml", {}, in_process=True)
    env = e2e.dev.env()
    binary = ["asset", "materialize", "--select", "backend_health", *MODULE]
    commands: dict[str, list[str]] = {"asset:backend_health": binary}
    if e2e.chain.present:
        # The cheapest folder. The browser tests' backfill comes after this module's runs.
        key = project.nas_folders(e2e.dev.state_dir)[0].name
        ensure_partition(e2e.dev, e2e.chain.partitions_def_name, key)
        commands[f"partition:{key}"] = ["asset", "materialize", "--select", project.CHAIN[0],
                                        "--partition", key, *MODULE]
    for name in runnable_jobs():
        job = next(j for j in project.job_defs() if j.name == name)
        default_executor = job.executor_def.name == "multi_or_in_process_executor"
        if name in config_scenarios:
            config = ["-c", str(write_run_config(
                configs / f"{name}.yaml", config_scenarios[name][1], default_executor))]
        elif project.job_needs_config(job):
            continue  # test_job_execute fails it: no scenario says what to run it on
        else:
            config = ["-c", str(in_process)] if default_executor else []
        commands[f"job:{name}"] = ["job", "execute", "-j", name, *MODULE, *config]
    on_drivers = [k for k in commands if k != "asset:backend_health"]
    driver_env = {**os.environ, **QUIET, **env}
    drivers = [CLIDriver(driver_env, configs / f"driver{i}") for i in range(2)]
    targets = automation_targets(e2e)

    def on_driver(i: int) -> dict[str, Any]:
        # Switching a schedule or sensor is sequential but independent of the runs: it goes
        # first (one target a driver) so that it overlaps with the runs.
        done: dict[str, Any] = {"automation": switch_from_cli(
            e2e, lambda *argv: drivers[i].run("dagster", *argv), targets[i::2])}
        for k in on_drivers[i::2]:
            done[k] = drivers[i].run("dagster", *commands[k])
        return done

    try:
        with ThreadPoolExecutor(3) as pool:
            real = pool.submit(dagster, *binary, env=env)
            halves = [pool.submit(on_driver, i) for i in range(2)]
            done = [h.result() for h in halves]
            results: dict[str, tuple[str, Any]] = {
                "asset:backend_health": ("dagster " + " ".join(binary), real.result())}
    finally:
        for driver in drivers:
            driver.close()
    for k in on_drivers:
        res = next(d[k] for d in done if k in d)
        results[k] = ("dagster " + " ".join(commands[k]) + " (in a CLI driver)", res)
    results["automation"] = ("dagster schedule|sensor start|stop",
                             [step for d in done for step in d["automation"]])
    return results


def test_asset_materialize_records_the_run_in_the_stack_instance(e2e, cli_runs) -> None:
    what, res = cli_runs["asset:backend_health"]
    # The webserver reads the same Postgres instance: the CLI's run is visible there.
    assert run_status(e2e, finished_run_id(res, what)) == "SUCCESS"


def test_asset_materialize_one_partition(e2e, cli_runs) -> None:
    if not e2e.chain.present:
        pytest.skip(e2e.chain.skip_reason)
    (key, (what, res)), = [(k.split(":", 1)[1], v) for k, v in cli_runs.items()
                           if k.startswith("partition:")]
    run = e2e.dev.graphql("""query($id: ID!) { runOrError(runId: $id) { ... on Run {
      status tags { key value } } } }""", {"id": finished_run_id(res, what)})["runOrError"]
    assert run["status"] == "SUCCESS"
    assert {"key": "dagster/partition", "value": key} in run["tags"]


@pytest.mark.parametrize("job_name", runnable_jobs())
def test_job_execute(e2e, cli_runs, config_scenarios, stores, job_name: str) -> None:
    """`dagster job execute` of every job; the on-demand AI-tier jobs with a run config file
    naming seeded items, and their effect checked in the stores themselves."""
    if f"job:{job_name}" not in cli_runs:
        pytest.fail(f"{job_name} needs run config and ai_tier_jobs.py has no scenario for it "
                    "(items to seed and the run config naming them)")
    what, res = cli_runs[f"job:{job_name}"]
    assert run_status(e2e, finished_run_id(res, what)) == "SUCCESS"
    if job_name in config_scenarios:
        config_scenarios[job_name][0].verify(stores)


def automation_targets(e2e) -> list[tuple[str, str]]:
    """One schedule and one sensor to switch from the CLI."""
    schedules, sensors = project.schedule_names(), project.sensor_names()
    targets = []
    if schedules:
        targets.append(("schedule", "backend_health_job_schedule"
                        if "backend_health_job_schedule" in schedules else schedules[0]))
    if sensors:
        # Not the NAS sensor: the browser test starts that one from the UI.
        targets.append(("sensor", next((n for n in sensors if n != project.nas_sensor()),
                                       sensors[0])))
    return targets


def switch_from_cli(e2e, dagster_cli: Callable[..., subprocess.CompletedProcess[str]],
                    targets: list[tuple[str, str]]) -> list[tuple[str, str, str, Any, str]]:
    """`dagster schedule|sensor start`, then `stop`; the state the webserver sees after each.
    With `-w workspace.yaml`, as the operator types it: the state lands on the code location
    that `dagster dev` serves (each such call starts a code server of its own)."""

    def status(kind: str, name: str) -> str:
        return schedule_status(e2e.dev, name) if kind == "schedule" \
            else sensor_state(e2e.dev, name)["status"]

    steps = []
    for kind, name in targets:
        steps.append((kind, name, "before", None, status(kind, name)))
        for action in ("start", "stop"):
            res = dagster_cli(kind, action, name, *WORKSPACE)
            steps.append((kind, name, action, res, status(kind, name)))
    return steps


def test_schedule_and_sensor_start_and_stop_from_cli(e2e, cli_runs) -> None:
    """`dagster schedule|sensor start|stop` write the state the webserver and daemon read."""
    if not automation_targets(e2e):
        pytest.skip("no schedule or sensor in hybrid_pipelines.definitions")
    expected = {"before": "STOPPED", "start": "RUNNING", "stop": "STOPPED"}
    for kind, name, action, res, status in cli_runs["automation"][1]:
        if res is not None:
            assert res.returncode == 0, f"`dagster {kind} {action} {name}`: {lines(res)[-5:]}"
        assert status == expected[action], f"{kind} {name} is {status} after {action}"
