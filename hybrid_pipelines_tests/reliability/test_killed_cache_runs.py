"""Hybrid-cache run processes SIGKILLed mid-job: the real counterparts of faults the domain's
tests produce by patching or by editing rows (`hybrid_cache/test_eviction.py`'s patched
`_mark_evicted`, `hybrid_cache/test_sync.py`'s hand-made expired lease).

Each job runs in a process of its own (the domain's Dagster job, resources from run
arguments), and is killed with SIGKILL: no `finally`, no rollback sent, no lease handed back.
Where it is killed is observed, not timed: inside the eviction's row update (a `PgGate` on
the real PostgreSQL), and with an object's body half-way through the pending sync's GET (an
`S3Relay` hop in front of the real SeaweedFS)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from psycopg.rows import dict_row

from hybrid_pipelines.dev.stack.process import wait_until
from hybrid_pipelines.dev.stack.seaweedfs import SeaweedFSServer
from hybrid_pipelines.hybrid_cache.audit import AuditSettings, run_audit, run_reconcile
from hybrid_pipelines.hybrid_cache.sync import SyncSettings, is_partial, run_pending_sync
from hybrid_pipelines.hybrid_cache.uploads import upload_to_cache
from hybrid_pipelines.resources import NASResource, PostgresResource, SeaweedFSResource
from hybrid_pipelines.resources.nas_fs import NAS_SENTINEL
from hybrid_pipelines_tests.hybrid_cache.conftest import hc_definitions

from .conftest import PgGate
from .wire import S3Relay

MIB = 1024 * 1024

# The run process: the domain's job with the resources it is given, nothing else.
CHILD = """
import json, os
from hybrid_pipelines.resources import NASResource, PostgresResource, SeaweedFSResource
from hybrid_pipelines_tests.hybrid_cache.conftest import hc_definitions

cfg = json.loads(os.environ["HP_TEST_RUN"])
defs = hc_definitions(PostgresResource(**cfg["pg"]), SeaweedFSResource(**cfg["sw"]),
                      NASResource(**cfg["nas"]))
print("started", flush=True)
defs.resolve_job_def(cfg["job"]).execute_in_process(
    run_config={"ops": {op: {"config": c} for op, c in cfg["config"].items()}})
"""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def spawn_run(pg: PostgresResource, sw: SeaweedFSResource, nas: NASResource, job: str,
              config: dict[str, Any], cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HP_TEST_RUN": json.dumps({
        "pg": pg.model_dump(), "sw": sw.model_dump(), "nas": nas.model_dump(), "job": job,
        "config": config})}
    return subprocess.Popen([sys.executable, "-c", CHILD], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def sigkill(child: subprocess.Popen[bytes]) -> None:
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL, "the run ended before the kill"


@pytest.fixture()
def pg(cache_pg: PostgresResource) -> PostgresResource:
    return cache_pg


@pytest.fixture()
def nas(tmp_path: Path) -> NASResource:
    root = tmp_path / "nas"
    root.mkdir()
    (root / NAS_SENTINEL).touch()  # a plain directory standing in for the mounted share
    return NASResource(protocol="local", local_root=str(root))


def _rows(pg: PostgresResource) -> dict[Any, dict[str, Any]]:
    with pg.connect(autocommit=True) as conn, conn.cursor(row_factory=dict_row) as cur:
        return {r["id"]: r for r in cur.execute("SELECT * FROM file_metadata")}


def _keys(s3: Any, bucket: str, prefix: str) -> set[str]:
    return {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])}


def _sw(server: SeaweedFSServer, endpoint: str | None = None) -> SeaweedFSResource:
    return SeaweedFSResource(endpoint_url=endpoint or server.address,
                             master_url=server.master_url,
                             aws_access_key_id=server.access_key,
                             aws_secret_access_key=server.secret_key, bucket="media-cache",
                             max_attempts=1, connect_timeout_s=2, read_timeout_s=10)


def _backend_gone(pg: PostgresResource, pid: int) -> bool:
    with pg.connect(autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                            (pid,)).fetchone()[0] == 0


@pytest.mark.fault("eviction run process SIGKILLed inside its row update, objects already "
                   "deleted -> the update rolls back, every NAS copy intact, audit sees only "
                   "safe drift, next run completes", kind="killed mid-I/O")
def test_eviction_run_killed_between_delete_and_update(pg: PostgresResource, nas: NASResource,
                                                       seaweed_server: SeaweedFSServer,
                                                       tmp_path: Path) -> None:
    sw = _sw(seaweed_server)
    s3 = sw.get_client()
    nas_fs = nas.fs()
    prefix = f"killed-evict-{uuid.uuid4().hex[:8]}"
    with pg.connect(autocommit=True) as conn:
        files = {f.id: f for f in (
            upload_to_cache(conn, s3, sw.bucket, f"f{i}.bin", os.urandom(1000),
                            key_prefix=f"{prefix}/", nas_prefix=prefix) for i in range(12))}
        assert run_pending_sync(conn, s3, sw.bucket, nas_fs,
                                SyncSettings(retry_delay_s=0)).synced == 12
    # 12,000 of 14,000 bytes (86%): down to 70% frees 2,200 bytes, three files, two a batch.
    config = {"cache_evictions": {"capacity_bytes": 14_000, "batch_size": 2,
                                  "key_prefix": f"{prefix}/", "policy": "lru"}}
    gate = PgGate(pg, "file_metadata",
                  "(SELECT count(*) FROM file_metadata WHERE cache_status IS NULL) >= 1",
                  event="UPDATE")
    gate.install()
    gate.hold()
    child = spawn_run(pg, sw, nas, "cache_eviction", config, tmp_path)
    try:
        gate.wait_blocked(timeout_s=120)
        with pg.connect(autocommit=True) as conn:
            parked = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE wait_event = 'advisory'").fetchone()[0]
        gone = set(files) - {i for i, f in files.items()
                             if f.key in _keys(s3, sw.bucket, f"{prefix}/")}
        assert len(gone) == 2, "the first batch's objects were not deleted before its update"
        sigkill(child)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        gate.close()  # the parked statement ends; its backend finds its client dead
        gate.remove()
    wait_until(lambda: _backend_gone(pg, parked), 30, "the killed run's backend to end")

    after = _rows(pg)
    assert all(r["cache_status"] == "cached" for r in after.values())  # rolled back whole
    for file_id, r in after.items():  # every byte still has a verified copy on the NAS
        with nas_fs.open_read(r["nas_path"]) as fh:
            assert sha(fh.read()) == files[file_id].sha256
    with pg.connect(autocommit=True) as conn:
        audit = run_audit(conn, s3, sw.bucket, nas_fs,
                          AuditSettings(key_prefix=f"{prefix}/", nas_prefix=prefix))
    assert set(audit.cache_missing_safe) == gone and audit.data_at_risk == 0
    with pg.connect(autocommit=True) as conn:  # what the cache_reconcile job does next
        fixed = run_reconcile(conn, s3, sw.bucket, nas_fs,
                              AuditSettings(key_prefix=f"{prefix}/", nas_prefix=prefix))
    assert fixed.cache_cleared == 2

    # 10,000 of 14,000 bytes now: the next run completes and has nothing left to free.
    defs = hc_definitions(pg, sw, nas)
    again = defs.resolve_job_def("cache_eviction").execute_in_process(
        run_config={"ops": {op: {"config": c} for op, c in config.items()}})
    assert again.success
    final = _rows(pg)
    keys = _keys(s3, sw.bucket, f"{prefix}/")
    evicted = {i for i, r in final.items() if r["cache_status"] is None}
    assert evicted == gone
    for file_id, r in final.items():
        assert (r["seaweed_fid"] in keys) == (file_id not in evicted)
    with pg.connect(autocommit=True) as conn:
        assert run_audit(conn, s3, sw.bucket, nas_fs, AuditSettings(
            key_prefix=f"{prefix}/", nas_prefix=prefix)).drift_items == 0
    for key in keys:
        s3.delete_object(Bucket=sw.bucket, Key=key)


@pytest.mark.fault("pending-sync run process SIGKILLed mid-copy (an object's body half-way "
                   "through its GET) -> its rows stay leased, nothing unverified at a final NAS "
                   "path; after the lease the next run syncs them all, no attempt "
                   "charged", kind="killed mid-I/O")
def test_sync_run_killed_mid_copy_returns_rows_after_the_lease(
        pg: PostgresResource, nas: NASResource, seaweed_server: SeaweedFSServer,
        tmp_path: Path) -> None:
    s3 = _sw(seaweed_server).get_client()
    nas_root = Path(nas.local_root)
    prefix = f"killed-sync-{uuid.uuid4().hex[:8]}"
    with pg.connect(autocommit=True) as conn:
        files = {f.id: f for f in (
            upload_to_cache(conn, s3, "media-cache", f"clip{i}.mov", os.urandom(6 * MIB + i),
                            key_prefix=f"{prefix}/", nas_prefix=prefix) for i in range(4))}
    lease_s = 3.0
    config = {"nas_replicas": {"batch_size": 4, "lease_timeout_s": lease_s,
                               "retry_delay_s": 0}}
    with S3Relay(seaweed_server.s3_port) as relay:
        child: subprocess.Popen[bytes] | None = None
        killed: list[str] = []

        def kill_mid_second_body(line: str, n: int, direction: str) -> None:
            if (not killed and child is not None and direction == "response"
                    and len(relay.object_gets("media-cache", f"{prefix}/")) >= 2
                    and n >= MIB):
                os.kill(child.pid, signal.SIGKILL)
                killed.append(line)

        relay.hook = kill_mid_second_body
        child = spawn_run(pg, _sw(seaweed_server, relay.address), nas, "pending_sync", config,
                          tmp_path)
        try:
            assert child.wait(timeout=120) == -signal.SIGKILL, child.stderr.read()
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert killed, "the run was not killed mid-GET"

    after = _rows(pg)
    synced = {i for i, r in after.items() if r["nas_status"] == "synced"}
    # Killed mid-GET with several files in flight: at most the files already verified and
    # renamed are synced (none or the first), the rest were cut mid-copy.
    assert len(synced) < len(files)
    for file_id, r in after.items():
        final_path = nas_root / r["nas_path"]
        if file_id in synced:
            assert sha(final_path.read_bytes()) == files[file_id].sha256
        else:  # still leased by the dead run: nobody else may take them yet
            assert r["nas_status"] == "syncing" and r["claimed_by"] is not None
            assert r["sync_attempts"] == 0 and not final_path.exists()
    cut = [p for p in nas_root.rglob("*") if is_partial(p.name)]  # one per file in flight
    assert len(cut) <= SyncSettings().files_in_flight

    with pg.connect(autocommit=True) as conn:
        early = run_pending_sync(conn, s3, "media-cache", nas.fs(),
                                 SyncSettings(retry_delay_s=0, lease_timeout_s=lease_s))
        assert early.claimed == 0  # the leases still hold
        time.sleep(lease_s + 0.5)
        late = run_pending_sync(conn, s3, "media-cache", nas.fs(),
                                SyncSettings(retry_delay_s=0, lease_timeout_s=lease_s))
    left = len(files) - len(synced)
    assert late.leases_expired == left and late.synced == left
    for file_id, r in _rows(pg).items():
        assert r["nas_status"] == "synced" and r["sync_attempts"] == 0
        assert sha((nas_root / r["nas_path"]).read_bytes()) == files[file_id].sha256
    for f in files.values():
        s3.delete_object(Bucket="media-cache", Key=f.key)
