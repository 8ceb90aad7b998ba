"""What bench/idle.py and bench/priority_sync.py share: a real `hybrid-pipelines dev` (the
local stack + `dagster dev` with its daemon) in a temp folder, driven as in the e2e tests
(hybrid_pipelines_tests/e2e/dev_instance.py), plus the runs it launched, the CPU its daemon
and code server used, and uploads made the way the file server makes them."""

from __future__ import annotations

import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hybrid_pipelines.dev.stack.process import free_port  # noqa: E402
from hybrid_pipelines.hybrid_cache.uploads import upload_to_cache  # noqa: E402
from hybrid_pipelines.resources.build import build_resources  # noqa: E402
from hybrid_pipelines_tests.e2e.dev_instance import DevInstance  # noqa: E402

RUNS_QUERY = """{ runsOrError(limit: 5000) { ... on Runs { results {
  runId jobName status creationTime tags { key value } } } } }"""

# What the schedules removed by issue #17 launched per 10 minutes, whatever the work:
# pending_sync every minute, backend_health_job and cache_stats every 5 min, recache every
# 10, cache_eviction every 15 (the hourly audit and EFS sync are unchanged, counted apart).
OLD_RUNS_PER_10_MIN = {"pending_sync": 10.0, "backend_health_job": 2.0, "cache_stats": 2.0,
                       "recache": 1.0, "cache_eviction": 10 / 15}
# Before issue #17 these ran hourly whatever the work (cache_consistency_audit at :17,
# efs_model_sync_job at :15); now sensors request them only on a change (and the audit daily).
HOURLY_UNCHANGED_PER_10_MIN = 2 / 6


def start_dev(workdir: Path) -> DevInstance:
    dev = DevInstance(workdir / "stack", free_port(), workdir / "dev.log")
    dev.start(timeout=300)
    return dev


def runs(dev: DevInstance, since: float) -> list[dict[str, Any]]:
    got = dev.graphql(RUNS_QUERY)["runsOrError"]["results"]
    return [r for r in got if float(r["creationTime"]) >= since]


@dataclass
class CpuSample:
    at: float
    seconds: dict[str, float]


def _role(proc: psutil.Process) -> str | None:
    try:
        cmd = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if "dagster-daemon" in cmd or "dagster._daemon" in cmd:
        return "daemon"
    if "execute_run" in cmd or "execute_step" in cmd or "multiprocessing" in cmd:
        return "runs"
    if "code-server" in cmd or "api grpc" in cmd:
        return "code_server"
    return None


def cpu_sample(dev: DevInstance) -> CpuSample:
    """CPU seconds so far of the daemon and the code server(s) (their own), and of the runs:
    live run and step processes plus the children the code server and daemon already reaped
    (the default run launcher starts each run as a child of the code server)."""
    assert dev.proc is not None
    totals = {"daemon": 0.0, "code_server": 0.0, "runs": 0.0}
    top = psutil.Process(dev.proc.pid)
    for proc in top.children(recursive=True):
        role = _role(proc)
        if role is None:
            continue
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        totals[role] += t.user + t.system
        if role != "runs":
            totals["runs"] += t.children_user + t.children_system
    return CpuSample(time.monotonic(), totals)


def cpu_percent(a: CpuSample, b: CpuSample) -> dict[str, float]:
    wall = max(b.at - a.at, 1e-9)
    return {k: round(100.0 * (b.seconds[k] - a.seconds[k]) / wall, 2) for k in a.seconds}


class Uploader:
    """Uploads into the stack's SeaweedFS with a file_metadata row, as the file server does."""

    def __init__(self, dev: DevInstance, tag: str):
        res = build_resources({**os.environ, **dev.env()}, only=("postgres", "seaweedfs"))
        self.pg, self.sw = res["postgres"], res["seaweedfs"]
        self.s3 = self.sw.get_client()
        self.prefix = f"bench-{tag}-{secrets.token_hex(3)}"

    def upload(self, size: int = 64 * 1024, priority: int = 0) -> str:
        with self.pg.connect(autocommit=True) as conn:
            f = upload_to_cache(conn, self.s3, self.sw.bucket, "bench.bin",
                                secrets.token_bytes(size), key_prefix=f"{self.prefix}/",
                                nas_prefix=self.prefix, priority=priority)
        return str(f.id)

    def statuses(self, ids: list[str]) -> dict[str, tuple[str | None, Any]]:
        with self.pg.connect(autocommit=True) as conn:
            rows = conn.execute("SELECT id::text, nas_status, nas_verified_at FROM file_metadata"
                                " WHERE id::text = ANY(%s)", (ids,)).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}
