"""`hybrid-pipelines stack up --platform` as an operator runs it, in a temp state dir, on one
stack start: a plain `stack up` leaves the platform out; `--platform` on the running stack
creates the platform's tables and starts the writer, whose rows appear within seconds;
`stack status` lists it; `stack down` leaves no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "hybrid-pipelines")


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240):
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=REPO)


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def connect(env: dict[str, str], dbname: str) -> psycopg.Connection:
    return psycopg.connect(host=env["HP_PG_HOST"], port=env["HP_PG_PORT"],
                           user=env["HP_PG_USER"], password=env["HP_PG_PASSWORD"],
                           dbname=dbname, connect_timeout=5, autocommit=True)


def count(env: dict[str, str], dbname: str, table: str) -> int | None:
    """Rows in `table`, None while it does not exist."""
    with connect(env, dbname) as conn:
        if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:
            return None
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def session_processes(pid: int) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == pid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (OSError, psutil.Error):
            continue
    return out


def platform_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.strip().startswith("platform ")]


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("simstack")
    up = run_cli("stack", "up", "--state-dir", str(path), env={"HP_STACK_PLATFORM": ""})
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        assert not platform_lines(up.stdout), up.stdout
        yield path
    finally:
        run_cli("stack", "down", "--state-dir", str(path))


def test_stack_up_platform_runs_the_writer_and_down_stops_it(state: Path) -> None:
    env = read_env(state / "stack.env")
    ai_db = env.get("HP_AI_PG_DATABASE", "ai_platform")
    # Without --platform nothing of the platform's is there.
    assert "platform" not in json.loads((state / "stack.json").read_text())
    assert count(env, env["HP_PG_DATABASE"], "file_metadata") is None

    up = run_cli("stack", "up", "--state-dir", str(state), "--platform",
                 "--platform-interval", "0.1")
    assert up.returncode == 0, up.stderr + up.stdout
    assert platform_lines(up.stdout), up.stdout
    record = json.loads((state / "stack.json").read_text())["platform"]
    assert psutil.pid_exists(record["pid"])

    status = run_cli("stack", "status", "--state-dir", str(state))
    assert status.returncode == 0, status.stdout
    line = next(x for x in status.stdout.splitlines() if x.startswith("platform"))
    assert "healthy" in line and str(record["pid"]) in line, line

    # The writer keeps writing, as the platform's services do.
    files0 = count(env, env["HP_PG_DATABASE"], "file_metadata") or 0
    wait_for(lambda: (count(env, env["HP_PG_DATABASE"], "file_metadata") or 0) > files0,
             20, "file_metadata rows from the simulated file server")
    ai0 = {t: count(env, ai_db, t) or 0 for t in ("model_locations", "user_contexts")}
    wait_for(lambda: any((count(env, ai_db, t) or 0) > n for t, n in ai0.items()),
             20, "model_locations / user_contexts rows from the simulated AI backend")
    with connect(env, env["HP_PG_DATABASE"]) as conn:
        row = conn.execute("SELECT cache_status, nas_status, sync_attempts FROM file_metadata "
                           "ORDER BY created_at LIMIT 1").fetchone()
    assert row == ("cached", "pending", 0), row  # an upload, as the file server makes it

    beat = json.loads((state / "platform" / "heartbeat.json").read_text())
    assert beat["errors"] == 0 and beat["file_server"] > 0 and beat["ai_backend"] > 0, beat

    down = run_cli("stack", "down", "--state-dir", str(state))
    assert down.returncode == 0, down.stderr
    assert platform_lines(down.stdout), down.stdout
    assert not psutil.pid_exists(record["pid"]) or \
        psutil.Process(record["pid"]).status() == psutil.STATUS_ZOMBIE
    assert session_processes(record["pid"]) == []
    assert json.loads((state / "stack.json").read_text())["platform"]["pid"] is None
    assert "platform simulator stopped" in (state / "platform" / "platform.log").read_text()
