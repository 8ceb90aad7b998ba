"""Process plumbing for the local stack: free ports, detached servers, stop by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, created 0600 (never world-readable, not even
    between a write and a chmod); an existing file is narrowed to 0600 before it is written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def spawn(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start a server in its own session so it outlives the CLI that started it and a
    terminal's Ctrl-C reaches only the supervisor, which then stops it by PID."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            user=user,
            start_new_session=True,
        )
    finally:
        log.close()


def wait_until(check: Callable[[], bool], timeout: float, what: str, log_path: Path | None = None,
               proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = ""
    if log_path is not None and log_path.exists():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
    state = f"exited with code {proc.returncode}" if proc is not None and proc.poll() is not None \
        else f"not ready after {timeout:.0f}s"
    raise RuntimeError(f"{what} {state}. Last log lines ({log_path}):\n{tail}")


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        return running(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False


def running(p: psutil.Process) -> bool:
    """Alive and not a zombie; is_running() also guards against a reused PID."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(procs: Sequence[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of `procs` still running after `timeout`. An exited process counts as gone
    while still a zombie (psutil.wait_procs waits until it is reaped): a server whose parent
    exited, as every server `stack up` started, is reaped by PID 1, which on some machines
    does so only every second or two, and that wait was ~2 s of every stop. A child of
    ours is left to whoever holds its Popen, which reads its exit status when reaping it."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        procs = [p for p in procs if running(p)]
        left = deadline - time.monotonic()
        if not procs or left <= 0:
            return procs
        time.sleep(min(delay, left))
        delay = min(delay * 2, 0.05)


def server_processes(pid: int) -> list[psutil.Process]:
    """A server's processes: `pid` (which spawn() made a session leader) and its descendants
    while it runs, plus whatever is left of its session, such as workers orphaned when their
    parent died first. Linux does not hand out a PID that is still some session's id, so
    these are all the server's own."""
    found: dict[int, psutil.Process] = {}
    if pid_alive(pid):
        try:
            root = psutil.Process(pid)
            found = {p.pid: p for p in [root, *root.children(recursive=True)]}
        except psutil.NoSuchProcess:
            pass
    for proc in psutil.process_iter():
        try:
            if proc.pid not in found and os.getsid(proc.pid) == pid:
                found[proc.pid] = proc
        except (OSError, psutil.Error):
            continue
    return list(found.values())


def stop_pid(pid: int | None, grace: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Stop a server and every process it forked (server_processes)."""
    if not pid:
        return
    procs = server_processes(pid)
    if not procs:
        return
    for p in procs:
        try:
            p.send_signal(sig)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    alive = wait_gone(procs, grace)
    for p in alive:
        try:
            p.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    wait_gone(alive, 5)
