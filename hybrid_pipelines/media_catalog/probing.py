"""Probe the stable files of a partition with the partial-read prober (core.probe).

Media problems (corrupt, truncated, empty, not media) come back from probe() as ok=False and
are recorded as invalid with the reason; the chain goes on. NAS connection errors are retried
with backoff, then fail the run: results already committed stay, the rest are still 'stable'
and the next run probes them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from hybrid_pipelines.media_catalog.catalog_store import CatalogStore
from hybrid_pipelines.media_catalog.nas_access import NASAccess, is_missing
from hybrid_pipelines.media_catalog.probe import probe
from hybrid_pipelines.media_catalog.probe.driver import DEFAULT_MAX_READ_BYTES
from hybrid_pipelines.media_catalog.probe.ffprobe_run import DEFAULT_MEMORY_LIMIT_BYTES
from hybrid_pipelines.media_catalog.rules.scan_diff import Progress
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
    elapsed_s: float = 0.0

    def metadata(self) -> dict[str, int | float]:
        out: dict[str, int | float] = dict(self.__dict__)
        out["files_per_s"] = round(self.probed / self.elapsed_s, 1) if self.elapsed_s else 0.0
        out["read_fraction"] = round(self.bytes_read / self.bytes_total, 6) \
            if self.bytes_total else 0.0
        return out


@dataclass
class _Outcome:
    path: str
    size: int
    mtime: float
    result: dict[str, Any] | None = None
    vanished: bool = False
    now_size: int | None = None
    now_mtime: float | None = None


@dataclass(frozen=True)
class ProbeLimits:
    """What one probe may cost (CatalogSettings: HP_PROBE_MAX_READ_BYTES and
    HP_PROBE_MEMORY_LIMIT_BYTES)."""

    max_read_bytes: int = DEFAULT_MAX_READ_BYTES
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES


def _probe_one(nas: NASAccess, path: str, size: int, mtime: float, ffprobe_path: str,
               timeout_s: float, limits: ProbeLimits) -> _Outcome:
    def attempt() -> _Outcome:
        reader = nas.nas.open_reader(path)
        try:
            if reader.size != size:
                st = nas.stat(path)
                return _Outcome(path, size, mtime, now_size=reader.size,
                                now_mtime=st.mtime if st else mtime)
            res = probe(reader, ffprobe_path=ffprobe_path, timeout_s=timeout_s,
                        max_read_bytes=limits.max_read_bytes,
                        memory_limit_bytes=limits.memory_limit_bytes)
        finally:
            reader.close()
        data = res.to_json_dict()
        data["path"] = path
        return _Outcome(path, size, mtime, result=data)

    try:
        # A dropped connection kills the open handle too: each retry reopens the file.
        return nas.call(f"probing {path!r}", attempt)
    except UnsafePathError as exc:  # e.g. a symlink out of a mounted share
        return _Outcome(path, size, mtime, result={
            "path": path, "ok": False, "bytes_read": 0, "error": f"refused: {exc}"})
    except Exception as exc:
        if not is_missing(exc):
            raise
        return _Outcome(path, size, mtime, vanished=True)


def probe_partition(store: CatalogStore, nas: NASAccess, partition_key: str, *,
                    ffprobe_path: str, timeout_s: float, workers: int = 2,
                    batch_size: int = 100, log: Log = lambda m: None,
                    progress_every_s: float = 5.0,
                    limits: ProbeLimits | None = None) -> ProbeReport:
    todo = store.files_to_probe(partition_key)
    limits = limits or ProbeLimits()
    report = ProbeReport()
    if not todo:
        return report
    log(f"probing {len(todo)} file(s) of {partition_key!r} with {workers} worker(s)")
    t0 = time.monotonic()
    progress = Progress(time.time(), expected_total=len(todo))
    last_log = time.time()
    pending_rows: list[tuple[str, int, float, dict[str, Any]]] = []
    lock = threading.Lock()

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
                                          out.now_mtime or out.mtime)
        else:
            res = out.result
            report.probed += 1
            report.bytes_read += int(res.get("bytes_read") or 0)
            report.bytes_total += out.size
            if res["ok"]:
                report.valid += 1
            else:
                report.invalid += 1
                log(f"invalid media {out.path!r}: {res.get('error')}")
            pending_rows.append((out.path, out.size, out.mtime, res))
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
            for row in queue:
                running.add(pool.submit(_probe_one, nas, *row, ffprobe_path, timeout_s, limits))
                if len(running) >= workers * 2:
                    break
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    with lock:
                        record(fut.result())
                    nxt = next(queue, None)
                    if nxt is not None:
                        running.add(pool.submit(_probe_one, nas, *nxt, ffprobe_path, timeout_s,
                                                 limits))
    finally:
        commit()  # keep every result obtained before a failure
    report.elapsed_s = round(time.monotonic() - t0, 3)
    log(progress.line(f"probe {partition_key!r} done", time.time())
        + f"; {report.valid} valid, {report.invalid} invalid, {report.bytes_read} bytes read "
        f"of {report.bytes_total}")
    return report
