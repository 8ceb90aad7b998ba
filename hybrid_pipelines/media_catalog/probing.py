"""Probe the stable files of a partition with the partial-read prober (core.probe), and the
files due for a re-probe.

Media problems (corrupt, truncated, empty, not media) come back from probe() as ok=False and
are recorded as invalid with the reason, the failure class and the ffprobe version
(rules/reprobe.py); the chain goes on. NAS connection errors are retried with backoff; when
the NAS stays down the file being read is recorded invalid as 'transient' (retried later),
the files in flight finish, and the run fails: results already committed stay, the rest are
still 'stable' and the next run probes them. Timeouts and transient failures get a retry
time (backoff doubling from HP_PROBE_RETRY_BACKOFF_S, up to HP_PROBE_MAX_ATTEMPTS); invalid
files judged by another ffprobe version are probed again."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from hybrid_pipelines.media_catalog.catalog_store import CatalogStore
from hybrid_pipelines.media_catalog.catalog_store.probe_results import ProbeTask
from hybrid_pipelines.media_catalog.nas_access import NASAccess, is_missing
from hybrid_pipelines.media_catalog.probe import probe
from hybrid_pipelines.media_catalog.probe.driver import DEFAULT_MAX_READ_BYTES
from hybrid_pipelines.media_catalog.probe.ffprobe_run import (
    DEFAULT_MEMORY_LIMIT_BYTES,
    ffprobe_version,
)
from hybrid_pipelines.media_catalog.rules.reprobe import (
    TRANSIENT,
    classify_failure,
    next_retry_at,
)
from hybrid_pipelines.media_catalog.rules.scan_diff import Progress
from hybrid_pipelines.resources import BackendError
from hybrid_pipelines.shared.nas_paths import UnsafePathError

Log = Callable[[str], None]


@dataclass
class ProbeReport:
    probed: int = 0
    valid: int = 0
    invalid: int = 0
    vanished: int = 0
    changed: int = 0
    bytes_read: int = 0
    bytes_total: int = 0
    reprobed: int = 0  # of `probed`: files probed before (a retry, a new ffprobe, a request)
    retry_scheduled: int = 0  # invalid for now: timeout or transient, retried later
    elapsed_s: float = 0.0

    def metadata(self) -> dict[str, int | float]:
        out: dict[str, int | float] = dict(self.__dict__)
        out["files_per_s"] = round(self.probed / self.elapsed_s, 1) if self.elapsed_s else 0.0
        out["read_fraction"] = round(self.bytes_read / self.bytes_total, 6) \
            if self.bytes_total else 0.0
        return out


@dataclass
class _Outcome:
    task: ProbeTask
    result: dict[str, Any] | None = None
    vanished: bool = False
    now_size: int | None = None
    now_mtime: float | None = None
    fault: BaseException | None = None  # the NAS stayed down: recorded, then fails the run

    @property
    def path(self) -> str:
        return self.task.path


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of timeouts and transient failures (HP_PROBE_RETRY_BACKOFF_S, doubling, and
    HP_PROBE_MAX_ATTEMPTS; CatalogSettings)."""

    backoff_s: float = 600.0
    max_attempts: int = 4


@dataclass(frozen=True)
class ProbeLimits:
    """What one probe may cost (CatalogSettings: HP_PROBE_MAX_READ_BYTES and
    HP_PROBE_MEMORY_LIMIT_BYTES)."""

    max_read_bytes: int = DEFAULT_MAX_READ_BYTES
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES


def _probe_one(nas: NASAccess, task: ProbeTask, ffprobe_path: str,
               timeout_s: float, limits: ProbeLimits) -> _Outcome:
    path, size, mtime = task.path, task.size, task.mtime

    def attempt() -> _Outcome:
        reader = nas.nas.open_reader(path)
        try:
            if reader.size != size:
                st = nas.stat(path)
                return _Outcome(task, now_size=reader.size,
                                now_mtime=st.mtime if st else mtime)
            res = probe(reader, ffprobe_path=ffprobe_path, timeout_s=timeout_s,
                        max_read_bytes=limits.max_read_bytes,
                        memory_limit_bytes=limits.memory_limit_bytes)
        finally:
            reader.close()
        data = res.to_json_dict()
        data["path"] = path
        return _Outcome(task, result=data)

    try:
        # A dropped connection kills the open handle too: each retry reopens the file.
        return nas.call(f"probing {path!r}", attempt)
    except UnsafePathError as exc:  # e.g. a symlink out of a mounted share
        return _Outcome(task, result={
            "path": path, "ok": False, "bytes_read": 0, "error": f"refused: {exc}"})
    except BackendError as exc:  # reconnects used up: nothing is known about the file
        return _Outcome(task, fault=exc, result={
            "path": path, "ok": False, "bytes_read": 0, "failure_class": TRANSIENT,
            "error": f"NAS at {exc.address} unavailable while probing: {exc.cause}"})
    except Exception as exc:
        if not is_missing(exc):
            raise
        return _Outcome(task, vanished=True)


def probe_partition(store: CatalogStore, nas: NASAccess, partition_key: str, *,
                    ffprobe_path: str, timeout_s: float, workers: int = 2,
                    batch_size: int = 100, log: Log = lambda m: None,
                    progress_every_s: float = 5.0,
                    limits: ProbeLimits | None = None,
                    retry: RetryPolicy | None = None) -> ProbeReport:
    version = ffprobe_version(ffprobe_path, timeout_s)
    todo = store.probe_tasks(partition_key, version)
    limits, retry = limits or ProbeLimits(), retry or RetryPolicy()
    report = ProbeReport()
    if not todo:
        return report
    again = sum(1 for t in todo if t.status != "stable")
    log(f"probing {len(todo)} file(s) of {partition_key!r} with {workers} worker(s), ffprobe "
        f"{version}" + (f"; {again} of them again (due retries, a new ffprobe or a request)"
                        if again else ""))
    t0 = time.monotonic()
    progress = Progress(time.time(), expected_total=len(todo))
    last_log = time.time()
    pending_rows: list[tuple[str, int, float, dict[str, Any]]] = []
    lock = threading.Lock()
    faults: list[BaseException] = []

    def commit() -> None:
        if pending_rows:
            store.write_probe_results(pending_rows)
            pending_rows.clear()

    def record(out: _Outcome) -> None:
        nonlocal last_log
        if out.vanished:
            report.vanished += 1
            log(f"{out.path!r} vanished before it was probed; the next scan records it")
        elif out.result is None:
            report.changed += 1
            store.mark_changed_since_scan(out.path, out.now_size or 0,
                                          out.now_mtime or out.task.mtime)
        else:
            task, res = out.task, out.result
            report.probed += 1
            report.reprobed += task.status != "stable"
            report.bytes_read += int(res.get("bytes_read") or 0)
            report.bytes_total += task.size
            res.update(tool_version=version, prior_status=task.status, attempts=0,
                       retry_after=None)
            if res["ok"]:
                report.valid += 1
            else:
                report.invalid += 1
                cls = res.get("failure_class") or classify_failure(res.get("error"))
                attempts = task.attempts + 1
                retry_at = next_retry_at(cls, attempts, time.time(), backoff_s=retry.backoff_s,
                                         max_attempts=retry.max_attempts)
                res.update(failure_class=cls, attempts=attempts if retry_at else 0,
                           retry_after=retry_at)
                report.retry_scheduled += retry_at is not None
                when = f"; retry {attempts + 1} of {retry.max_attempts} due in " \
                       f"{max(0.0, retry_at - time.time()):.0f} s" if retry_at else ""
                log(f"invalid media {out.path!r} ({cls}{when}): {res.get('error')}")
            if out.fault is not None:
                faults.append(out.fault)
            pending_rows.append((task.path, task.size, task.mtime, res))
            if len(pending_rows) >= batch_size:
                commit()
        progress.done += 1
        now = time.time()
        if now - last_log >= progress_every_s:
            last_log = now
            log(progress.line(f"probe {partition_key!r}", now))

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers),
                                thread_name_prefix="media-probe") as pool:
            queue = iter(todo)
            running: set[Future[_Outcome]] = set()
            for task in queue:
                running.add(pool.submit(_probe_one, nas, task, ffprobe_path, timeout_s, limits))
                if len(running) >= workers * 2:
                    break
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    with lock:
                        record(fut.result())
                    # The NAS is down: let the files in flight finish, start no more.
                    nxt = None if faults else next(queue, None)
                    if nxt is not None:
                        running.add(pool.submit(_probe_one, nas, nxt, ffprobe_path, timeout_s,
                                                 limits))
    finally:
        commit()  # keep every result obtained before a failure
    if faults:
        raise faults[0]
    report.elapsed_s = round(time.monotonic() - t0, 3)
    log(progress.line(f"probe {partition_key!r} done", time.time())
        + f"; {report.valid} valid, {report.invalid} invalid, {report.bytes_read} bytes read "
        f"of {report.bytes_total}")
    return report
