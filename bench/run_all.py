"""`make bench`: run the benchmark scripts in bench/ and print one table of claims.

Each script measures the project's figure and its baseline in the same run and prints a line
`BENCH_JSON {...}`; this collects those lines into one table and bench/results.json.

The live benches (LIVE: a whole `hybrid-pipelines dev` stack with its daemon, measured over
minutes of wall time by design: a 10-minute idle window, uploads waiting out the stability
rule) run only with --live (`make bench-live`), so `make bench` and `make bench-quick` keep
their time budgets."""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import os
import runpy
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIVE = ("idle", "latency", "priority_sync")


STOP_GRACE_S = 120.0  # a script interrupted at its timeout stops its servers and dev stack
# Imported once here and handed to every script by fork: a script then starts at once
# instead of importing Dagster, boto3 and psycopg again (~2.5 s each, ten scripts). gRPC
# (the Firestore client) is left out: a forked child must create its own.
PRELOAD = ("dagster", "boto3", "psycopg", "hybrid_pipelines.resources",
           "hybrid_pipelines.dev.stack.samba", "hybrid_pipelines.dev.stack.seaweedfs",
           "hybrid_pipelines.dev.stack.postgres", "hybrid_pipelines.hybrid_cache.sync",
           "hybrid_pipelines.media_catalog.scan")


def preload() -> None:
    sys.path.insert(0, str(HERE.parent))
    for name in PRELOAD:
        importlib.import_module(name)


def _script_main(script: Path, quick: bool, out_fd: int, err_fd: int) -> None:
    """In the forked child: a session of its own, so a script past its timeout is
    interrupted as Ctrl-C would and its cleanup stops what it started (killed outright, a
    live bench left its whole `hybrid-pipelines dev` stack running, eating the CPU of every
    bench after it)."""
    os.setsid()
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    os.chdir(HERE.parent)
    sys.argv = [str(script), *(["--quick"] if quick else [])]
    code = 0
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as done:
        if isinstance(done.code, int) or done.code is None:
            code = done.code or 0
        else:
            print(done.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - reported as the script's failure
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def run_script(script: Path, quick: bool, timeout: float) -> tuple[list[dict], str]:
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        proc = multiprocessing.get_context("fork").Process(
            target=_script_main, args=(script, quick, out.fileno(), err.fileno()))
        proc.start()
        proc.join(timeout)
        if proc.exitcode is None:
            _interrupt(proc)
            return [], f"timed out after {timeout:.0f}s (interrupted, its servers stopped)"
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    claims: list[dict] = []
    for line in stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            payload = json.loads(line[len("BENCH_JSON "):])
            for claim in payload.get("claims", []):
                claims.append({"bench": payload.get("bench", script.stem), **claim})
        else:
            print(f"  [{script.stem}] {line}")
    status = f"ok in {time.monotonic() - t0:.0f}s" if proc.exitcode == 0 else \
        f"FAILED (exit {proc.exitcode}): {stderr.strip()[-400:]}"
    return claims, status


def _interrupt(proc: multiprocessing.process.BaseProcess) -> None:
    """SIGINT to the script's process group, then SIGKILL if it has not ended in time."""
    for sig, wait_s in ((signal.SIGINT, STOP_GRACE_S), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)  # type: ignore[arg-type]
        except ProcessLookupError:
            return
        proc.join(wait_s)
        if proc.exitcode is not None:
            return


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true",
                    help="small sizes (10 scripts: 127-134 s on a quiet machine)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per script (default 90 with --quick, else 600)")
    ap.add_argument("--only", nargs="*", help="script names to run (default: all but the live "
                                              "ones)")
    ap.add_argument("--live", action="store_true",
                    help=f"the live benches only ({', '.join(LIVE)}): a dev stack each, minutes")
    args = ap.parse_args()
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != "run_all.py"
                     and not p.name.startswith("_")
                     and (p.stem in args.only if args.only else
                          (p.stem in LIVE) == args.live))
    # A fixed cap per script: a stuck script must not hold up the rest.
    timeout = args.timeout or (90.0 if args.quick else 600.0)
    all_claims: list[dict] = []
    statuses: dict[str, str] = {}
    started = time.monotonic()
    preload()
    for script in scripts:
        print(f"== {script.stem}")
        claims, status = run_script(script, args.quick, timeout=timeout)
        statuses[script.stem] = status
        all_claims.extend(claims)
    print()
    header = f"{'bench':<12} {'claim':<72} {'ours':>12} {'baseline':>12} {'unit':<8} {'ratio':>8}"
    print(header)
    print("-" * len(header))
    for c in all_claims:
        print(f"{c['bench']:<12} {c['claim'][:72]:<72} {c['ours']:>12.4g} {c['baseline']:>12.4g} "
              f"{c['unit']:<8} {c['ratio']:>8.3g}")
    print()
    for name, status in statuses.items():
        print(f"{name}: {status}")
    print(f"total {time.monotonic() - started:.0f}s for {len(scripts)} scripts")
    (HERE / "results.json").write_text(json.dumps(
        {"quick": args.quick, "time": time.time(), "claims": all_claims, "scripts": statuses},
        indent=2))
    return 0 if all(s.startswith("ok") for s in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
