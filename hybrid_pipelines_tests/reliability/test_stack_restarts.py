"""`hybrid-pipelines stack up` starts every time: each server waits for what it depends on.

Once in about ten starts JuiceFS was formatted against the SeaweedFS S3 port before anything
listened there. No fault is injected here: the stack is started and stopped ten times in one
state folder (the first start fresh, the rest reusing data and ports, as a developer's
restarts do) and every start must come up whole."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psutil
import pytest

from hybrid_pipelines.dev.stack.juicefs import JuiceFSMount
from hybrid_pipelines.dev.stack.local_stack import LocalStack
from hybrid_pipelines.dev.stack.seaweedfs import SeaweedFSServer
from hybrid_pipelines_tests.conftest import require_all_backends

RESTARTS = 10


@pytest.mark.slow
def test_stack_starts_and_stops_ten_times_without_a_failure() -> None:
    state = Path(tempfile.mkdtemp(prefix="hp-restarts-"))  # mode 0700, like a user's home
    stack = LocalStack(state)
    failures: list[str] = []
    try:
        for attempt in range(RESTARTS):
            stack = LocalStack.load(state)
            try:
                stack.up(log=lambda _m: None)
            except RuntimeError as exc:
                failures.append(f"start {attempt + 1}: {exc}")
                continue
            rows = stack.status()
            unhealthy = [r["server"] for r in rows if not r["healthy"]]
            if unhealthy:
                failures.append(f"start {attempt + 1}: unhealthy {unhealthy}")
            sw, jfs = stack.servers["seaweedfs"], stack.servers["juicefs"]
            assert isinstance(sw, SeaweedFSServer) and isinstance(jfs, JuiceFSMount)
            assert jfs.bucket_url == f"{sw.address}/jfs"  # the gateway that is running now
            if jfs.mounted:  # the mount really serves files through SeaweedFS
                probe = jfs.mount_path / f"restart-{attempt}.txt"
                probe.write_text("x")
                assert probe.read_text() == "x"
            elif require_all_backends():
                failures.append(f"start {attempt + 1}: JuiceFS is not mounted")
            pids = [s.pid for s in stack.servers.values() if s.pid]
            stack.down(log=lambda _m: None)
            left = [p for p in pids if psutil.pid_exists(p)
                    and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
            assert not left, f"start {attempt + 1}: processes left after stack down: {left}"
            assert not os.path.ismount(jfs.mount_path)
    finally:
        LocalStack.load(state).down(log=lambda _m: None)
        shutil.rmtree(state, ignore_errors=True)
    assert not failures, "\n".join(failures)
