"""`hybrid-pipelines dagster ...`: Dagster's CLI with its errors as one clear line.

The console script itself runs as a process of its own in the --traceback test; the other
calls go to the same entry point (`hybrid_pipelines.cli:main`) in one CLI driver process
(cli_driver.py), which spares each its own Dagster import."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cli_driver import CLIDriver

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "hybrid-pipelines")
MODULE = ["-m", "hybrid_pipelines.definitions"]


def home(path: Path) -> dict[str, str]:
    (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {**os.environ, "DAGSTER_HOME": str(path)}


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The console script, a process of its own."""
    return subprocess.run([CLI, "dagster", *args], capture_output=True, text=True,
                          env=home(tmp_path), cwd=REPO, timeout=180)


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CLIDriver]:
    """`hybrid-pipelines dagster ...` through the console script's entry point, in-process.
    One instance for all: none of these commands gets as far as a run."""
    root = tmp_path_factory.mktemp("wrapper")
    with CLIDriver(home(root), root / "driver") as cli:
        yield cli


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith(("error:", "Error:"))]


@pytest.mark.parametrize("args, expected", [
    (["asset", "materialize", *MODULE, "--select", "no_such_asset"], "no_such_asset"),
    (["job", "execute", *MODULE, "-j", "no_such_job"], "no_such_job"),
], ids=["bad selection", "unknown job"])
def test_bad_selection_is_one_line(driver: CLIDriver, args: list[str], expected: str) -> None:
    proc = driver.run("hybrid-pipelines", "dagster", *args)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = error_lines(proc)
    assert len(lines) == 1 and expected in lines[0], proc.stderr[-2000:]


def test_bad_run_config_names_the_field(driver: CLIDriver, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("ops:\n  cache_evictions:\n    config:\n      no_such_field: 1\n")
    proc = driver.run("hybrid-pipelines", "dagster", "job", "execute", *MODULE,
                      "-j", "cache_eviction", "-c", str(config))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    (line,) = error_lines(proc)
    assert "DagsterInvalidConfigError" in line and "no_such_field" in line


def test_traceback_on_request_and_help_passes_through(driver: CLIDriver, tmp_path: Path
                                                      ) -> None:
    proc = run(tmp_path, "asset", "materialize", *MODULE, "--select", "nope", "--traceback")
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    helped = driver.run("hybrid-pipelines", "dagster", "job", "execute", "--help")
    assert helped.returncode == 0 and "hybrid-pipelines dagster job execute" in helped.stdout
