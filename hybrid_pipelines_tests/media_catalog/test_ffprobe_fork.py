"""ffprobe runs in a process that also holds other libraries' fork handlers. gRPC (the
Firestore client) registers one. When ffprobe was started through a preexec_fn, subprocess
forked and ran every such handler in the child before the exec. gRPC's aborted the child,
and bench `catalog_e2e.py` recorded valid media invalid as "ffprobe died of signal 6" when a
Firestore client was alive in the process (1-2 of 60 files). The memory limit is now set by
the shell that execs ffprobe, and no handler runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hybrid_pipelines.media_catalog.probe.ffprobe_run import FfprobeNotFoundError, run_ffprobe

_ARMED = [False]


def _like_grpc() -> None:
    if _ARMED[0]:
        os._exit(134)  # what an aborting fork handler leaves: the child dies before its exec


# Fault injection: registered once for the session, armed only inside the test below (a fork
# handler cannot be unregistered). It stands in for gRPC's, which aborts on demand only
# under a race of its poller thread.
os.register_at_fork(after_in_child=_like_grpc)


@pytest.mark.fault("a library's fork handler that kills a forked child (gRPC's, with a "
                   "Firestore client alive) -> ffprobe is started without one running and "
                   "the media is valid", kind="patched exception")
def test_ffprobe_starts_without_running_fork_handlers(media: dict[str, Path]) -> None:
    _ARMED[0] = True
    try:
        run = run_ffprobe(str(media["mp4"]), ffprobe_path="ffprobe", timeout_s=30,
                          stdin_data=None, memory_limit_bytes=1 << 30)
    finally:
        _ARMED[0] = False
    assert run.returncode == 0, run.stderr
    assert b'"format_name"' in run.stdout


def test_the_memory_limit_still_applies(media: dict[str, Path]) -> None:
    run = run_ffprobe(str(media["mp4"]), ffprobe_path="ffprobe", timeout_s=30,
                      stdin_data=None, memory_limit_bytes=4 << 20)
    assert run.returncode != 0  # 4 MiB of address space: ffprobe cannot even start


def test_a_missing_ffprobe_is_named_not_recorded_as_a_bad_file(tmp_path: Path) -> None:
    assert shutil.which("no-such-ffprobe") is None
    with pytest.raises(FfprobeNotFoundError, match="no-such-ffprobe"):
        run_ffprobe(str(tmp_path / "x.mp4"), ffprobe_path="no-such-ffprobe", timeout_s=5,
                    stdin_data=None)
