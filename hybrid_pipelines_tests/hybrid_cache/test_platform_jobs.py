"""Every hybrid-cache job on the file server's table as it is (created verbatim from its DDL by
prepare(); see conftest.postgres_resource), with the simulated file server uploading (S3 keys
and SeaweedFS file ids) and downloading while the job runs: the job succeeds, and every row
the writer inserted keeps what it wrote."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from hybrid_pipelines.hybrid_cache.objects import is_fid
from hybrid_pipelines.hybrid_cache.uploads import upload_to_nas

from .conftest import hc_definitions, materializations, nas_bytes, row, run_job, sha
from .platform_support import assert_platform_rows_intact, file_server, writing


@pytest.fixture()
def defs(hc_postgres, s3_resource, nas_resource):
    return hc_definitions(hc_postgres, s3_resource, nas_resource)


@pytest.fixture()
def sim(hc_postgres, conn, s3, s3_resource, prefix):
    return file_server(hc_postgres, s3, s3_resource, prefix)


def _seed(sim, n: int = 3) -> list[Any]:
    """Both object forms the file server records: S3 keys and SeaweedFS file ids."""
    out = [sim.upload(f"doc-{i}.pdf", f"s3 upload {i}".encode() * 50) for i in range(n)]
    out += [sim.upload(f"clip-{i}.mp4", f"fid upload {i}".encode() * 70, as_fid=True)
            for i in range(n)]
    assert all(is_fid(u.seaweed_fid) for u in out[n:])
    return out


def test_pending_sync_copies_both_object_forms_while_the_file_server_writes(
        defs, sim, conn, nas_fs) -> None:
    seeded = _seed(sim)
    with writing(sim):
        meta = materializations(run_job(defs, "pending_sync",
                                        {"nas_replicas": {"retry_delay_s": 0}}))["nas_replicas"]
    assert meta["files_synced"] >= len(seeded) and meta["files_failed"] == 0
    for up in seeded:
        r = row(conn, up.id)
        assert r["nas_status"] == "synced" and r["nas_verified_at"] is not None
        assert r["sync_attempts"] == 0 and r["synced_at"] is not None
        assert sha(nas_bytes(nas_fs, up.nas_path)) == up.hash  # the file id's bytes, verified
    assert_platform_rows_intact(conn, sim)


def test_eviction_deletes_file_ids_on_the_volume_server_while_the_file_server_writes(
        defs, sim, conn, s3, s3_resource) -> None:
    seeded = _seed(sim)
    run_job(defs, "pending_sync", {"nas_replicas": {"retry_delay_s": 0}})
    with writing(sim):
        meta = materializations(run_job(defs, "cache_eviction", {"cache_evictions": {
            "key_prefix": "", "capacity_bytes": 1, "policy": "fifo"}}))["cache_evictions"]
    assert meta["files_evicted"] >= len(seeded)
    for up in seeded:
        assert row(conn, up.id)["cache_status"] is None
        if is_fid(up.seaweed_fid):
            volume = requests.get(f"{s3_resource.master_url}/dir/lookup",
                                  params={"volumeId": up.seaweed_fid.split(",")[0]},
                                  timeout=5).json()["locations"][0]["url"]
            assert requests.get(f"http://{volume}/{up.seaweed_fid}", timeout=5).status_code \
                == 404
        else:
            assert s3.list_objects_v2(Bucket=s3_resource.bucket,
                                      Prefix=up.seaweed_fid).get("KeyCount", 0) == 0
    assert_platform_rows_intact(conn, sim)


def test_recache_while_the_file_server_writes(defs, sim, conn, nas_fs, prefix) -> None:
    nas_only = upload_to_nas(conn, nas_fs, "late.mov", b"written while SeaweedFS was down",
                             nas_prefix=prefix)
    with writing(sim):
        meta = materializations(run_job(defs, "recache", {}))["recached_files"]
    assert meta["files_recached"] == 1
    r = row(conn, nas_only.id)
    assert r["cache_status"] == "cached" and len(r["seaweed_fid"]) <= 100
    assert_platform_rows_intact(conn, sim)


def test_audit_and_reconcile_while_the_file_server_writes(defs, sim, conn, prefix) -> None:
    seeded = _seed(sim, 2)
    run_job(defs, "pending_sync", {"nas_replicas": {"retry_delay_s": 0}})
    # The whole bucket (no key prefix): file-id rows are looked up on their volume server,
    # never reported missing from the bucket listing.
    cfg = {"key_prefix": "", "nas_prefix": prefix, "hash_sample": 50}
    with writing(sim):
        audit = run_job(defs, "cache_consistency_audit",
                        {"seaweedfs_cache_cache_consistency": cfg})
        result = run_job(defs, "cache_reconcile", {"reconcile_cache": cfg})
    check = audit.get_asset_check_evaluations()[0]
    meta = {k: v.value for k, v in check.metadata.items()}
    assert meta["cache_size_mismatch"] == 0 and meta["cache_hash_mismatch"] == 0
    assert meta["hashes_checked"] >= len(seeded)  # file ids read through the volume server
    for up in seeded:
        assert row(conn, up.id)["cache_status"] == "cached", up  # nothing cleared wrongly
    assert result.success
    assert_platform_rows_intact(conn, sim)


def test_cache_stats_while_the_file_server_writes(defs, sim, conn, prefix) -> None:
    _seed(sim, 2)
    with writing(sim):
        meta = materializations(run_job(defs, "cache_stats", {"seaweedfs_cache": {
            "key_prefix": f"{prefix}/", "capacity_bytes": 10_000_000}}))["seaweedfs_cache"]
    assert meta["files_total"] >= 4 and meta["files_pending"] >= 4
    assert_platform_rows_intact(conn, sim)
