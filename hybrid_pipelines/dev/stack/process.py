"""Process plumbing for the local stack: free ports, detached servers, stop by PID."""

from __future__ import annotations

import os
import random
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


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_SERVER_PORT = 10000


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands to outgoing connections (first, last)."""
    try:
        first, last = map(int, EPHEMERAL_RANGE_FILE.read_text().split())
        return first, last
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def server_port_bands(span: int = 0) -> list[range]:
    """Where a server port P (and P + span) may go: outside the ephemeral range.

    A port the kernel picked for us (bind to 0) is an ephemeral one, and any outgoing
    connection may take it while its server is down: the server's restart then fails with
    EADDRINUSE, however briefly it was down (a kill-and-restart test, `hybrid-pipelines dev`
    after a reboot). The kernel never gives a connection a port outside that range."""
    first, last = ephemeral_range()
    bands = [range(LOWEST_SERVER_PORT, first - span), range(last + 1, 65536 - span)]
    return [b for b in bands if len(b) > 0]


def bindable(port: int) -> bool:
    """Whether a server could listen on the port now (SO_REUSEADDR, as servers bind: a
    port left in TIME_WAIT by a stopped server's connections is free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
            return True
        except OSError:
            return False


def free_port(*offsets: int) -> int:
    """A loopback port P, free now and outside the ephemeral range, with P + each offset
    free and outside it too (SeaweedFS puts each gRPC port at its HTTP port + 10000)."""
    span = max(offsets, default=0)
    candidates = [p for band in server_port_bands(span) for p in band]
    for port in random.sample(candidates, min(len(candidates), 500)):
        if all(bindable(port + o) for o in (0, *offsets)):
            return port
    if not offsets:  # an ephemeral range covering every port: the kernel's pick, as before
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            return int(s.getsockname()[1])
    raise RuntimeError(f"no free loopback port P with P+{'/P+'.join(map(str, offsets))} "
                       f"outside the ephemeral range {ephemeral_range()} "
                       f"({EPHEMERAL_RANGE_FILE}): stop servers left running, or narrow "
                       "that range")


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
    """Alive, or a zombie whose other threads are still exiting; is_running() also guards
    against a reused PID.

    A killed multi-threaded server (weed, Go) shows its main thread as a zombie while the
    others are still being torn down, and they hold its files: its listening sockets stay
    open ~10 ms longer, and a restart on its ports in that window fails to bind."""
    try:
        if not p.is_running():
            return False
        if p.status() != psutil.STATUS_ZOMBIE:
            return True
        return len(os.listdir(f"/proc/{p.pid}/task")) > 1
    except (psutil.NoSuchProcess, OSError):
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
