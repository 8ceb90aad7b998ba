"""Many command lines in one process: Dagster's own click CLI (`dagster._cli.main`'s group)
or the project's `hybrid-pipelines` entry point, each called exactly as its console script
calls it, with that command's stdout and stderr captured at the file-descriptor level (what
the run's loggers, step subprocesses and click print all land there, as in a terminal).

Why: each `dagster ...` process pays Dagster's import (~7 s CPU); a module of twenty CLI
calls spent minutes on imports alone. One driver process pays it once. The console scripts
themselves stay covered by the few true subprocess runs the tests keep.

Protocol (one JSON object a line): the parent writes {"entry", "argv", "out", "err"}; the
driver runs the command with fd 1 and 2 on the files `out` and `err` and answers
{"returncode"} on its original stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parents[2]


def _call(entry: str, argv: list[str]) -> int:
    if entry == "dagster":
        from dagster._cli import ENV_PREFIX, cli

        cli.main(args=argv, prog_name="dagster", auto_envvar_prefix=ENV_PREFIX)
        return 0  # click's standalone mode always exits; not reached
    if entry == "hybrid-pipelines":
        from hybrid_pipelines.cli import main

        return main(argv)
    raise ValueError(f"unknown entry point {entry!r}: 'dagster' or 'hybrid-pipelines'")


def run_one(entry: str, argv: list[str]) -> int:
    """The exit status the console script would have had: SystemExit's code, or 1 with the
    traceback on stderr for an exception nothing caught (as the interpreter prints it)."""
    try:
        return _call(entry, argv)
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - the interpreter's behaviour for an uncaught one
        traceback.print_exc()
        return 1


def serve(replies: TextIO) -> None:
    # The requests come on stdin; fd 0 itself becomes /dev/null, so that nothing a command
    # starts can read them.
    requests_in = os.fdopen(os.dup(0))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    saved = os.dup(1), os.dup(2)
    for line in requests_in:
        req = json.loads(line)
        with open(req["out"], "wb") as out, open(req["err"], "wb") as err:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            try:
                code = run_one(req["entry"], req["argv"])
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
        replies.write(json.dumps({"returncode": code}) + "\n")
        replies.flush()


class CLIDriver:
    """A driver process with one environment (each command's DAGSTER_HOME, stack variables
    and the definitions it loads are the process's). One command at a time."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self._count = 0
        self._lock = threading.Lock()
        # The replies on a pipe of their own; fd 1/2 go to a file (between commands, only
        # library noise at import lands there).
        self._log = (workdir / "driver.log").open("wb")
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-c",
             "import os; from hybrid_pipelines_tests.e2e.cli_driver import serve; "
             f"serve(os.fdopen({write_fd}, 'w'))"],
            stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT, text=True,
            cwd=REPO, env=env, pass_fds=(write_fd,))
        os.close(write_fd)
        self._replies = os.fdopen(read_fd)

    def run(self, entry: str, *argv: str) -> subprocess.CompletedProcess[str]:
        with self._lock:
            self._count += 1
            out = self.workdir / f"{self._count}.out"
            err = self.workdir / f"{self._count}.err"
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"entry": entry, "argv": list(argv),
                                              "out": str(out), "err": str(err)}) + "\n")
            self.proc.stdin.flush()
            reply = self._replies.readline()
            if not reply:
                raise RuntimeError(f"the CLI driver exited ({self.proc.wait(30)}) during "
                                   f"`{entry} {' '.join(argv)}`:\n"
                                   f"{(self.workdir / 'driver.log').read_text()[-3000:]}")
            code: Any = json.loads(reply)["returncode"]
        return subprocess.CompletedProcess([entry, *argv], code, out.read_text(errors="replace"),
                                           err.read_text(errors="replace"))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._replies.close()
        self._log.close()

    def __enter__(self) -> CLIDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
