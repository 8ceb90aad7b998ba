"""The operator's path: `hybrid-pipelines stack up/status/down` on real servers in a temp
state dir. `hybrid-pipelines dev` (what `make dev` runs) bringing up the UI and Ctrl-C
stopping everything is proven on the e2e package's one instance (e2e/conftest.py loads the
code location through the UI's GraphQL; test_ui_browser's last test, or that fixture's
teardown, sends Ctrl-C to the process group and finds no process of the stack or of Dagster
left), and with stop signals ignored at launch in e2e/test_dev_shutdown.py: a dev start of its
own here only repeated that (about 45 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from hybrid_pipelines_tests.conftest import require_all_backends

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "hybrid-pipelines")


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=REPO)


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


def recorded_pids(state: Path) -> list[int]:
    return [r["pid"] for r in json.loads((state / "stack.json").read_text()).values() if r["pid"]]


@pytest.fixture(scope="module")
def stack_state(tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("localstack")
    up = run_cli("stack", "up", "--state-dir", str(state))
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        yield state, up.stdout
    finally:
        run_cli("stack", "down", "--state-dir", str(state))


def test_stack_up_reports_time_and_every_server_healthy(stack_state) -> None:
    state, out = stack_state
    assert "all healthy in" in out
    status = run_cli("stack", "status", "--state-dir", str(state))
    assert status.returncode == 0, status.stdout
    for server in ("postgres", "seaweedfs", "samba", "firestore", "juicefs"):
        line = next(line for line in status.stdout.splitlines() if line.startswith(server))
        assert "healthy" in line, line
        assert "127.0.0.1" in line or server == "juicefs", line  # juicefs: its mount path
    if require_all_backends():  # a fallback (no Samba, no emulator, no FUSE) is a WARNING line
        assert "WARNING" not in out, out
    env = read_env(state / "stack.env")
    for var in ("DAGSTER_PG_HOST", "HP_PG_PASSWORD", "HP_NAS_PORT", "HP_SEAWEEDFS_S3_ENDPOINT",
                "HP_OBJECT_STORE_BUCKET", "HP_JUICEFS_MOUNT_PATH", "FIRESTORE_EMULATOR_HOST",
                "HP_SQLITE_CATALOG_PATH", "DAGSTER_HOME"):
        assert env.get(var), var
    for private in ("stack.env", "secrets.json", "stack.json", "seaweedfs/s3.json"):
        assert oct((state / private).stat().st_mode)[-3:] == "600", private  # passwords, keys
    assert oct(state.stat().st_mode)[-3:] == "700"
    share = state / "samba" / "share"
    assert (share / "WSOP/WSOP 2024/Main Event/Day2.mp4").stat().st_size > 0
    assert (share / "HCL/HCL 2025/Episode 01.ts").exists()


def test_definitions_validate_and_materialize_on_postgres_instance(stack_state) -> None:
    state, _ = stack_state
    env = {**read_env(state / "stack.env")}
    dagster = str(Path(sys.executable).parent / "dagster")
    full_env = {**os.environ, **env}
    res = subprocess.run([dagster, "definitions", "validate", "-w", "workspace.yaml"],
                         capture_output=True, text=True, env=full_env, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Validation successful" in res.stderr + res.stdout
    # A real run recorded in the Postgres instance storage (psycopg2 scheme), with every
    # backend healthy through its resource.
    res = subprocess.run([dagster, "asset", "materialize", "--select", "backend_health",
                          "-m", "hybrid_pipelines.definitions"],
                         capture_output=True, text=True, env=full_env, cwd=REPO, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "RUN_SUCCESS" in res.stderr + res.stdout
    import psycopg

    with psycopg.connect(host=env["DAGSTER_PG_HOST"], port=env["DAGSTER_PG_PORT"],
                         user=env["DAGSTER_PG_USER"], password=env["DAGSTER_PG_PASSWORD"],
                         dbname=env["DAGSTER_PG_DB"]) as conn:
        runs = conn.execute("SELECT status FROM runs").fetchall()
        checks = conn.execute(
            "SELECT check_name, execution_status FROM asset_check_executions").fetchall()
    assert ("SUCCESS",) in runs
    from hybrid_pipelines.defs.operations.backend_health import BACKENDS

    assert len(checks) == len(BACKENDS), checks  # one check per backend
    assert all(status == "SUCCEEDED" for _, status in checks), checks


def test_stack_down_leaves_no_process_and_up_reuses_data(stack_state) -> None:
    state, _ = stack_state
    pids = recorded_pids(state)
    secret_before = (state / "secrets.json").read_text()
    marker = state / "samba" / "share" / "keep-me.txt"
    marker.write_text("survives a restart")
    down = run_cli("stack", "down", "--state-dir", str(state))
    assert down.returncode == 0, down.stderr
    assert not [p for p in pids if psutil.pid_exists(p) and
                psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert run_cli("stack", "status", "--state-dir", str(state)).returncode == 1
    up = run_cli("stack", "up", "--state-dir", str(state))
    assert up.returncode == 0, up.stderr
    assert "seeded" not in up.stdout  # the share kept its files
    assert marker.read_text() == "survives a restart"
    assert (state / "secrets.json").read_text() == secret_before


def test_dagster_cli_in_project_folder_without_stack_env_uses_a_throwaway_instance() -> None:
    """The README's promise: no DAGSTER_HOME, no DAGSTER_PG_*: a throwaway instance, not a
    traceback about a missing variable of the stack's Postgres storage."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DAGSTER_", "HP_")) and k != "FIRESTORE_EMULATOR_HOST"}
    dagster = str(Path(sys.executable).parent / "dagster")
    res = subprocess.run([dagster, "definitions", "validate", "-m", "hybrid_pipelines.definitions"],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Validation successful" in res.stderr + res.stdout
    assert "DAGSTER_PG" not in res.stderr + res.stdout


def test_stack_instance_is_the_project_policies_plus_postgres(tmp_path: Path) -> None:
    import yaml

    from hybrid_pipelines.dev.stack.instance_config import PROJECT_YAML, write_instance_yaml

    (tmp_path / "dagster.yaml").symlink_to(PROJECT_YAML)  # what earlier versions left
    config = yaml.safe_load(write_instance_yaml(tmp_path).read_text())
    project = yaml.safe_load(PROJECT_YAML.read_text())
    assert "storage" not in project
    assert {k: v for k, v in config.items() if k != "storage"} == project
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert not (tmp_path / "dagster.yaml").is_symlink()


def test_private_files_are_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    from hybrid_pipelines.dev.stack.process import write_private

    old = os.umask(0)
    try:
        write_private(tmp_path / "new", "secret")
        existing = tmp_path / "existing"
        existing.write_text("old")
        existing.chmod(0o644)
        write_private(existing, "secret")
    finally:
        os.umask(old)
    for path in (tmp_path / "new", existing):
        assert oct(path.stat().st_mode)[-3:] == "600" and path.read_text() == "secret"
