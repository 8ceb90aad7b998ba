"""`hybrid-pipelines`: the operator's console script."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DOMAINS = ("media_catalog", "hybrid_cache", "ai_tiers", "backups")


def _stack(args: argparse.Namespace) -> int:
    from hybrid_pipelines.dev.stack.local_stack import LocalStack

    stack = LocalStack.load(Path(args.state_dir).resolve() if args.state_dir else None)
    if args.action == "up":
        _platform_options(args)
        stack.up()
    elif args.action == "down":
        stack.down()
        print("stack down")
    else:
        rows = stack.status()
        if not rows:
            print(f"no stack recorded in {stack.state_dir} (run: hybrid-pipelines stack up)")
            return 1
        print(f"{'server':<10} {'address':<34} {'pid':>7}  health")
        for r in rows:
            health = "healthy" if r["healthy"] else ("UNHEALTHY" if r["running"] else "DOWN")
            print(f"{r['server']:<10} {r['address']!s:<34} {r['pid'] or '-'!s:>7}  {health}")
        return 0 if all(r["healthy"] for r in rows) else 1
    return 0


def _platform_options(args: argparse.Namespace) -> None:
    """`stack up --platform [--platform-interval S]`: the same as HP_STACK_PLATFORM=1 (which
    `hybrid-pipelines dev` and `make dev` honour) and HP_STACK_PLATFORM_INTERVAL_S."""
    from hybrid_pipelines.dev.platform_sim.runner import INTERVAL_ENV
    from hybrid_pipelines.dev.stack.platform import PLATFORM_ENV

    if args.platform_interval is not None:
        if args.platform_interval <= 0:
            raise ValueError(f"--platform-interval {args.platform_interval}: give the seconds "
                             "between the simulated platform's actions, more than 0")
        os.environ[INTERVAL_ENV] = str(args.platform_interval)
        args.platform = True
    if args.platform:
        os.environ[PLATFORM_ENV] = "1"


def _dev(args: argparse.Namespace) -> int:
    """Stack up, then `dagster dev`; on Ctrl-C or SIGTERM stop dagster and the stack by PID.
    Every wait on the way out is bounded, and the stack goes down whatever happens."""
    from hybrid_pipelines.dev.stack.local_stack import LocalStack

    stack = LocalStack.load(Path(args.state_dir).resolve() if args.state_dir else None)
    proc: subprocess.Popen[bytes] | None = None
    starting = True
    stop_requested = False

    def _on_stop_signal(_sig: int, _frame: object) -> None:
        nonlocal stop_requested
        if stop_requested:
            return  # the shutdown under way is bounded: a second Ctrl-C must not cut it short
        stop_requested = True
        if starting:
            raise KeyboardInterrupt  # unwinds stack.up(), which stops what it started
        # Later only the flag: an exception could land between Popen and `proc = ...`, or in
        # the cleanup below, and lose dagster's PID or the stack.down().

    # Installed first: signal.signal replaces an inherited SIG_IGN (`cmd &` in a script starts
    # us with SIGINT and SIGTERM ignored), and a caught signal is reset to its default action
    # on exec, so the stack's servers do not inherit "ignored" either.
    signal.signal(signal.SIGINT, _on_stop_signal)
    signal.signal(signal.SIGTERM, _on_stop_signal)
    rc = 0
    try:
        stack.up()
        env = {**os.environ, **stack.env()}
        repo = Path(__file__).resolve().parents[1]
        dagster = str(Path(sys.executable).parent / "dagster")
        starting = False
        if not stop_requested:
            cmd = [dagster, "dev", "-w",
                   str(repo / "workspace.yaml"), "-h", args.host, "-p", str(args.port)]
            proc = subprocess.Popen(cmd, env=env, cwd=repo, start_new_session=True,
                                    preexec_fn=_default_stop_signals)
            print(f"Dagster UI: http://{args.host}:{args.port}  "
                  "(Ctrl-C stops Dagster and the stack)")
            while proc.poll() is None and not stop_requested:
                time.sleep(0.2)
            rc = 0 if stop_requested else proc.returncode
    finally:
        try:
            starting = False  # inside the try: even a signal raised right here runs stack.down()
            if proc is not None:
                _stop_dagster(proc)
        finally:
            stack.down()
    return rc


def _default_stop_signals() -> None:
    """In `dagster dev`'s child, before exec. An ignored signal stays ignored across exec, and
    `dagster dev` maps SIGTERM to whatever SIGINT does: an inherited SIG_IGN makes it deaf to
    both. Our handlers already make exec reset them; this says so without relying on it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop_dagster(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to `dagster dev` and its children, SIGKILL after 15 s; then the rest of its
    process group (start_new_session: pgid == its PID), SIGTERM then SIGKILL: code servers
    and run workers can outlive it, and they use the stack's servers, which go down next."""
    from hybrid_pipelines.dev.stack.process import stop_pid

    stop_pid(proc.pid, grace=15)
    proc.poll()  # reaped: stop_pid counts an exited child as gone but leaves it to its Popen
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        _wait_group_gone(proc.pid, wait_s)


def _dagster(args: argparse.Namespace) -> int:
    """Dagster's own CLI, with its errors as one line (bad selection, bad config, unknown
    job): the class and message an operator acts on; --traceback shows the stack."""
    import click
    from dagster._cli import cli as dagster_cli

    argv = [a for a in args.dagster_args if a != "--traceback"]
    try:
        dagster_cli.main(args=argv, prog_name="hybrid-pipelines dagster", standalone_mode=False)
    except click.exceptions.Abort:
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except Exception as exc:  # noqa: BLE001 - the whole point: one line, not a trace
        if "--traceback" in args.dagster_args:
            raise
        message = " ".join(str(exc).split())
        print(f"error: {type(exc).__name__}: {message} (add --traceback for details)",
              file=sys.stderr)
        return 1
    return 0


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    """Until no process of the group runs. Not `killpg(pgid, 0)`: that also answers for the
    group's exited processes that PID 1 has not reaped yet (up to ~2 s on some machines)."""
    import psutil

    from hybrid_pipelines.dev.stack.process import running

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        members = []
        for p in psutil.process_iter():
            try:
                if os.getpgid(p.pid) == pgid:
                    members.append(p)
            except (OSError, psutil.Error):
                continue
        if not any(running(p) for p in members):
            return
        time.sleep(0.1)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hybrid-pipelines", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    st = sub.add_parser("stack", help="start, stop or inspect the local stack of real servers")
    st.add_argument("action", choices=["up", "down", "status"])
    st.add_argument("--state-dir",
                    help="data folder of the stack (default: $HP_STACK_DIR or .local)")
    st.add_argument("--platform", action="store_true",
                    help="up: also create the platform's own tables (verbatim DDL) where "
                         "missing and run a writer behaving like its file server and AI backend "
                         "(same as HP_STACK_PLATFORM=1)")
    st.add_argument("--platform-interval", type=float, metavar="SECONDS",
                    help="up: seconds between the simulated platform's actions (default 1; "
                         "implies --platform)")
    st.set_defaults(func=_stack)

    dv = sub.add_parser("dev", help="stack up, then `dagster dev`; Ctrl-C stops everything")
    dv.add_argument("--state-dir")
    dv.add_argument("--host", default="127.0.0.1")
    dv.add_argument("--port", type=int, default=3000)
    dv.set_defaults(func=_dev)

    dg_cmd = sub.add_parser(
        "dagster", add_help=False,
        help="Dagster's CLI (asset materialize, job execute, schedule/sensor start|stop, ...) "
             "with errors as one line; --traceback for the stack")
    dg_cmd.add_argument("dagster_args", nargs=argparse.REMAINDER)
    dg_cmd.set_defaults(func=_dagster)

    # Each domain adds its own commands (probe, simulate-uploads, ...) in `<domain>/commands.py`.
    import importlib

    from hybrid_pipelines.sql import commands as db_commands

    db_commands.add_commands(sub)

    for domain in DOMAINS:
        try:
            module = importlib.import_module(f"hybrid_pipelines.{domain}.commands")
        except ModuleNotFoundError as exc:
            if exc.name != f"hybrid_pipelines.{domain}.commands":
                raise
            continue
        module.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["dagster"]:  # everything after it, --help included, is Dagster's
        return _dagster(argparse.Namespace(dagster_args=argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
