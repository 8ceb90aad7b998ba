"""`hybrid-pipelines dev` stops everything it started, in bounded time, on SIGTERM or Ctrl-C
(SIGINT): Dagster's whole process group and every server of the local stack.

`hybrid-pipelines dev` is started here with SIGINT and SIGTERM ignored, as `cmd &` from a
non-interactive shell (or `trap "" INT TERM`) starts it. Children inherit ignored signals, so
unless it restores the defaults for `dagster dev`, Dagster never hears the stop request."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import requests

from hybrid_pipelines.dev.stack.process import free_port, port_open

from .dev_instance import BIN, REPO, alive

pytestmark = pytest.mark.slow

START_TIMEOUT = 240.0  # stack up + `dagster dev` serving its UI, on a busy 2-core machine
STOP_TIMEOUT = 60.0


def missing_backend() -> str | None:
    """Why the local stack cannot start on this machine, or None."""
    try:
        from hybrid_pipelines.dev.stack.juicefs import juicefs_binary
        from hybrid_pipelines.dev.stack.postgres import unprivileged_prefix
        from hybrid_pipelines.dev.stack.seaweedfs import weed_binary

        weed_binary()
        juicefs_binary()
        unprivileged_prefix()
    except (ImportError, FileNotFoundError, RuntimeError) as exc:
        return str(exc)
    return None


@pytest.fixture(scope="module")
def state_dir() -> Iterator[Path]:
    """One data folder for both tests: the second start reuses it, as an operator's restart
    does (and skips initdb). A short path outside pytest's temp root (sockets live there); mode
    0700, like a user's home."""
    if why := missing_backend():
        pytest.skip(f"`hybrid-pipelines dev` needs the local stack: {why}")
    root = Path(tempfile.mkdtemp(prefix="hp-dev-shutdown-"))
    yield root / "state"
    stack_down(root / "state")  # no-op after a clean stop
    if not mounts_under(root):  # never delete through a mount that is still there
        shutil.rmtree(root, ignore_errors=True)


def ignore_stop_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def wait_for(check: Callable[[], bool], deadline: float) -> bool:
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def wait_for_ui(dev: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    def answers() -> bool:
        assert dev.poll() is None, \
            f"`hybrid-pipelines dev` exited with {dev.returncode}:\n{log_path.read_text()[-3000:]}"
        try:
            return requests.get(f"http://127.0.0.1:{port}/server_info", timeout=5).ok
        except requests.RequestException:
            return False

    assert wait_for(answers, time.monotonic() + START_TIMEOUT), \
        f"no UI on port {port} after {START_TIMEOUT:.0f}s:\n{log_path.read_text()[-3000:]}"


def group_members(pgid: int) -> list[psutil.Process]:
    """Live processes of a process group (zombies waiting for init's reaping do not count)."""
    out = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return out


def stack_servers(state_dir: Path) -> dict[str, tuple[psutil.Process | None, list[int]]]:
    """Each server recorded in stack.json: its process (identified by PID and start time, so
    a reused PID does not count) and the ports it listens on."""
    out = {}
    for name, rec in json.loads((state_dir / "stack.json").read_text()).items():
        proc = psutil.Process(rec["pid"]) if rec.get("pid") else None
        ports = [v for k, v in rec.items() if k.endswith("port") and isinstance(v, int) and v]
        out[name] = (proc, ports)
    return out


def mounts_under(path: Path) -> list[str]:
    return [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(f"{path}/")]


def stack_down(state_dir: Path) -> None:
    """The operator's `stack down`, in a fresh process (it reads the code as it is now)."""
    subprocess.run([str(BIN / "hybrid-pipelines"), "stack", "down", "--state-dir",
                    str(state_dir)], cwd=REPO, capture_output=True, timeout=180, check=False)


def kill_leftovers(dev: subprocess.Popen[bytes], pgid: int | None,
                   tracked: list[psutil.Process], state_dir: Path) -> None:
    """After a failed stop, so one broken test does not leak a UI or servers. The stack goes
    down by its recorded PIDs before anything is killed: that also stops the servers' own
    children, which it cannot find once their parent is gone."""
    if dev.poll() is None:
        os.killpg(dev.pid, signal.SIGKILL)
        dev.wait(10)
    if pgid is not None and group_members(pgid):
        os.killpg(pgid, signal.SIGKILL)
    stack_down(state_dir)
    for proc in tracked:
        if alive(proc):
            proc.kill()


@pytest.mark.timeout(START_TIMEOUT + STOP_TIMEOUT + 120)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_dev_started_with_signals_ignored_stops_everything_in_bounded_time(
        state_dir: Path, tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    log_path = tmp_path / "dev.log"
    with log_path.open("wb") as log:
        dev = subprocess.Popen(
            [str(BIN / "hybrid-pipelines"), "dev", "--state-dir", str(state_dir),
             "--port", str(port)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=ignore_stop_signals)
    pgid: int | None = None  # dagster dev's process group
    tracked: list[psutil.Process] = []
    try:
        wait_for_ui(dev, port, log_path)
        dagster = [c for c in psutil.Process(dev.pid).children() if "dev" in c.cmdline()]
        assert len(dagster) == 1, f"expected one `dagster dev` child, got {dagster}"
        pgid = dagster[0].pid
        tracked += group_members(pgid)
        servers = stack_servers(state_dir)
        tracked += [proc for proc, _ports in servers.values() if proc is not None]
        assert os.getpgid(pgid) == pgid, "dagster dev should lead its own process group"
        assert {"postgres", "seaweedfs", "juicefs"} <= servers.keys()

        t0 = time.monotonic()
        dev.send_signal(sig)
        deadline = t0 + STOP_TIMEOUT
        try:
            dev.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`hybrid-pipelines dev` still running {STOP_TIMEOUT:.0f}s after "
                        f"{sig.name}:\n{log_path.read_text()[-3000:]}")
        assert dev.returncode == 0, log_path.read_text()[-3000:]

        assert wait_for(lambda: not group_members(pgid), deadline), \
            f"dagster's group left running: {[p.cmdline() for p in group_members(pgid)]}"
        for name, (proc, ports) in servers.items():
            if proc is not None:
                assert wait_for(lambda p=proc: not alive(p), deadline), f"{name} still running"
            for p in ports:
                assert wait_for(lambda p=p: not port_open(p), deadline), \
                    f"{name}'s port {p} still open"
        assert not mounts_under(state_dir), "the JuiceFS mount is still there"
        print(f"{sig.name}: everything stopped in {time.monotonic() - t0:.1f}s")
    finally:
        kill_leftovers(dev, pgid, tracked, state_dir)
