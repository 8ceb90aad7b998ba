"""Backends going down for real: a private SeaweedFS killed mid-sync and restarted, a private
Samba stopped and started. Rows must never be marked synced without a verified copy, an
outage must charge no attempts, and the next run must finish the work."""

from __future__ import annotations

import random
from typing import Any

import pytest

from hybrid_pipelines.dev.stack.process import wait_until
from hybrid_pipelines.hybrid_cache.health_gate import load_state
from hybrid_pipelines.hybrid_cache.runtime import probes
from hybrid_pipelines.hybrid_cache.sync import SyncSettings, run_pending_sync
from hybrid_pipelines.hybrid_cache.uploads import PatternStream, upload_to_cache, upload_to_nas
from hybrid_pipelines.resources import NASResource, SeaweedFSResource
from hybrid_pipelines_tests.conftest import nas_resource_for

from .conftest import (
    hc_definitions,
    materializations,
    nas_bytes,
    observations,
    partials,
    row,
    run_job,
    sha,
)

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def private_seaweed(server_factory) -> Any:
    return server_factory("seaweedfs")


def _fast_fail(server: Any) -> SeaweedFSResource:
    # One attempt, short timeouts: a dead server is reported at once instead of after
    # boto3's retry back-off.
    return SeaweedFSResource(endpoint_url=server.address, master_url=server.master_url,
                             aws_access_key_id=server.access_key,
                             aws_secret_access_key=server.secret_key, bucket="media-cache",
                             max_attempts=1, connect_timeout_s=2, read_timeout_s=10)


def _readable(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")["Body"].read()
        return True
    except Exception:  # noqa: BLE001 - not yet
        return False


@pytest.mark.fault("hybrid cache: SeaweedFS killed mid-sync, restarted", kind="server stopped")
def test_seaweedfs_killed_mid_sync_then_recovers_and_recaches(
        conn, hc_postgres, private_seaweed, nas_resource: NASResource, prefix) -> None:
    sw = _fast_fail(private_seaweed)
    s3 = sw.get_client()
    nas_fs = nas_resource.fs()
    rng = random.Random(3)
    files = [upload_to_cache(conn, s3, sw.bucket, f"v{i}.mp4", rng.randbytes(MIB + i),
                             key_prefix=f"{prefix}/", nas_prefix=prefix) for i in range(8)]
    seen: list[Any] = []

    def kill_after_three(file_row: Any, outcome: str) -> None:
        seen.append(file_row.id)
        if len(seen) == 3:
            private_seaweed.kill()  # SIGKILL, mid-batch

    # One file at a time, so the kill lands between the third and the fourth file; with
    # several in flight (the default) see test_sync_in_flight.py's outage test.
    report = run_pending_sync(conn, s3, sw.bucket, nas_fs,
                              SyncSettings(batch_size=5, files_in_flight=1),
                              probes=probes(sw, nas_resource),
                              on_file=kill_after_three)

    assert report.synced == 3 and report.stopped_backend == "seaweedfs"
    # The other two rows of the first batch go back unharmed; the second batch never started.
    assert report.released == 2 and report.claimed == 5 and report.failed_attempts == 0
    for f in files:
        r = row(conn, f.id)
        if r["nas_status"] == "synced":  # synced means a verified copy is on the NAS
            assert sha(nas_bytes(nas_fs, r["nas_path"])) == f.sha256
        else:
            assert r["nas_status"] == "pending" and r["sync_attempts"] == 0
            assert nas_fs.stat(r["nas_path"]) is None
    assert partials(nas_fs, prefix) == []

    # While SeaweedFS is down the file server writes straight to the NAS ...
    # (over the 8 MiB multipart size, so re-cache streams it from SMB in several parts)
    fallback = upload_to_nas(conn, nas_fs, "live.mov", PatternStream(17 * MIB + 5, 9),
                             nas_prefix=prefix)
    defs = hc_definitions(hc_postgres, sw, nas_resource)
    # ... and neither re-cache nor sync can run: both skip with the reason.
    skipped = observations(run_job(defs, "recache"))["recached_files"]
    assert skipped["skipped"] == 1 and skipped["seaweed_health"] == 0
    assert "SeaweedFS" in skipped["skip_reason"]
    skipped = observations(run_job(defs, "pending_sync"))["nas_replicas"]
    assert skipped["skipped"] == 1 and skipped["nas_health"] == 1
    assert load_state(conn, "seaweedfs").consecutive_failures == 2

    private_seaweed.start()  # same data directory: the cached objects are back
    # Recovery takes a moment more: volume servers re-register after the gateway answers.
    wait_until(lambda: sw.health().ok and all(_readable(s3, sw.bucket, f.key)
                                              for f in files),
               180, "SeaweedFS serving reads again")

    synced = materializations(run_job(defs, "pending_sync"))["nas_replicas"]
    assert synced["files_synced"] == 5 and synced["seaweed_health"] == 1
    assert synced["bytes_synced"] == sum(f.size for f in files[3:])
    for f in files:
        r = row(conn, f.id)
        assert r["nas_status"] == "synced" and r["sync_attempts"] == 0
        assert sha(nas_bytes(nas_fs, r["nas_path"])) == f.sha256
    assert load_state(conn, "seaweedfs").state == "closed"

    recached = materializations(run_job(defs, "recache"))["recached_files"]
    assert recached["files_recached"] == 1
    r = row(conn, fallback.id)
    assert r["cache_status"] == "cached" and not r["recache_requested"]
    assert r["nas_verified_at"] is not None
    body = s3.get_object(Bucket=sw.bucket, Key=r["seaweed_fid"])["Body"].read()
    assert sha(body) == fallback.sha256


@pytest.mark.fault("hybrid cache: NAS (smbd) stopped during sync", kind="server stopped")
def test_nas_down_skips_without_burning_attempts(conn, hc_postgres, s3_resource, s3,
                                                 server_factory, prefix) -> None:
    samba = server_factory("samba")
    nas = nas_resource_for(samba)
    files = [upload_to_cache(conn, s3, s3_resource.bucket, f"d{i}.pdf", bytes([i]) * 5000,
                             key_prefix=f"{prefix}/", nas_prefix=prefix) for i in range(4)]
    defs = hc_definitions(hc_postgres, s3_resource, nas)
    samba.stop()
    breaker = {"breaker_failures": 1, "breaker_cooldown_s": 3600}

    first = observations(run_job(defs, "pending_sync", {"nas_replicas": breaker}))
    assert first["nas_replicas"]["skipped"] == 1 and first["nas_replicas"]["nas_health"] == 0
    assert "cannot connect" in first["nas_replicas"]["skip_reason"]
    # The breaker is open now: the next run does not even probe the NAS.
    second = observations(run_job(defs, "pending_sync", {"nas_replicas": breaker}))
    assert "circuit open" in second["nas_replicas"]["skip_reason"]
    for f in files:
        r = row(conn, f.id)
        assert r["nas_status"] == "pending" and r["sync_attempts"] == 0

    samba.start()
    # The cool-down passes (moved back in the persisted state instead of waiting an hour).
    conn.execute("UPDATE backend_circuit SET opened_at = opened_at - 3600 WHERE backend = 'nas'")
    done = materializations(run_job(defs, "pending_sync", {"nas_replicas": breaker}))
    assert done["nas_replicas"]["files_synced"] == 4 and done["nas_replicas"]["nas_health"] == 1
    assert load_state(conn, "nas").state == "closed"
    assert {row(conn, f.id)["nas_status"] for f in files} == {"synced"}
