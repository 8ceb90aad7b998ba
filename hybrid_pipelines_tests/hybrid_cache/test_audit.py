"""Consistency audit and reconcile on real drift between file_metadata, SeaweedFS and Samba."""

from __future__ import annotations

import os
import time

import pytest

from hybrid_pipelines.hybrid_cache.audit import AuditSettings, run_audit, run_reconcile
from hybrid_pipelines.hybrid_cache.sync import SyncSettings, run_pending_sync, temp_name

from .conftest import Uploader, nas_bytes, row, sha, share_path


@pytest.mark.fault("hybrid cache: objects and NAS files lost or damaged behind the metadata",
                   kind="state edited")
def test_audit_counts_every_kind_of_drift_and_reconcile_fixes_only_the_safe_ones(
        conn, upload: Uploader, s3_resource, s3, nas_fs, samba_server, prefix) -> None:
    bucket = s3_resource.bucket
    files = {n: upload(n.encode() * 700, f"{n}.bin") for n in
             ("clean", "vanished", "nas_gone", "nas_bad", "both_gone", "resized")}
    run_pending_sync(conn, s3, bucket, nas_fs, SyncSettings(retry_delay_s=0))
    at_risk = upload(b"never synced" * 10, "risk.bin")  # pending, and its object disappears
    path = {n: row(conn, f.id)["nas_path"] for n, f in files.items()}

    # Drift made on the real backends:
    s3.delete_object(Bucket=bucket, Key=files["vanished"].key)
    nas_fs.remove(path["nas_gone"])
    with nas_fs.open_write(path["nas_bad"]) as fh:  # same size, other bytes: only a hash shows it
        fh.write(b"X" * files["nas_bad"].size)
    s3.delete_object(Bucket=bucket, Key=files["both_gone"].key)
    nas_fs.remove(path["both_gone"])
    s3.put_object(Bucket=bucket, Key=files["resized"].key, Body=b"short")
    s3.delete_object(Bucket=bucket, Key=at_risk.key)
    s3.put_object(Bucket=bucket, Key=f"{prefix}/stray-object", Body=b"nobody's")
    with nas_fs.open_write(f"{prefix}/stray.txt") as fh:
        fh.write(b"nobody's")
    stale = temp_name(path["clean"], "deadbeef")
    fresh = temp_name(path["clean"], "cafebabe")
    for p in (stale, fresh):
        with nas_fs.open_write(p) as fh:
            fh.write(b"half a copy")
    old = time.time() - 2 * 86_400
    os.utime(share_path(samba_server, stale), (old, old))  # left by a run that died 2 days ago

    settings = AuditSettings(key_prefix=f"{prefix}/", nas_prefix=prefix, hash_sample=100)
    report = run_audit(conn, s3, bucket, nas_fs, settings)
    ids = {n: f.id for n, f in files.items()}

    assert report.cache_missing_safe == [ids["vanished"]]
    assert set(report.cache_missing_at_risk) == {ids["both_gone"], at_risk.id}
    assert report.cache_orphaned == [f"{prefix}/stray-object"]
    assert report.cache_size_mismatch == [ids["resized"]]
    assert report.nas_missing_requeue == [ids["nas_gone"]]
    assert report.nas_missing_lost == [ids["both_gone"]]
    assert report.nas_hash_mismatch == [ids["nas_bad"]]
    assert report.nas_orphaned == [f"{prefix}/stray.txt"]
    assert report.nas_partials_stale == [stale] and report.nas_partials_fresh == 1
    assert report.cache_hash_mismatch == []  # the intact objects hash right
    assert report.drifted_rows == 6 and report.drift_items == 8
    assert report.drift_percent == round(100 * 8 / (7 + 2), 3)
    assert report.data_at_risk == 3
    meta = report.metadata()
    assert meta["cache_missing"] == 3 and meta["nas_missing"] == 2

    fixed = run_reconcile(conn, s3, bucket, nas_fs, settings)
    assert (fixed.requeued, fixed.cache_cleared, fixed.unverified, fixed.partials_removed) == \
        (1, 1, 1, 1)
    assert row(conn, ids["nas_gone"])["nas_status"] == "pending"
    assert row(conn, ids["vanished"])["cache_status"] is None
    bad = row(conn, ids["nas_bad"])
    assert bad["nas_verified_at"] is None and bad["cache_status"] == "cached"  # not evictable
    assert nas_fs.stat(stale) is None and nas_fs.stat(fresh) is not None
    # Reported, not touched:
    risk = row(conn, at_risk.id)
    assert risk["cache_status"] == "cached" and risk["nas_status"] == "pending"
    both = row(conn, ids["both_gone"])
    assert both["cache_status"] == "cached" and both["nas_status"] == "synced"
    assert nas_fs.stat(f"{prefix}/stray.txt") is not None
    assert s3.head_object(Bucket=bucket, Key=f"{prefix}/stray-object")["ContentLength"] == 8
    assert nas_bytes(nas_fs, path["nas_bad"]) == b"X" * files["nas_bad"].size
    assert fixed.metadata()["left_for_operator"] == 8 - 3

    # The re-queued file is copied again from the cache by the next sync.
    again = run_pending_sync(conn, s3, bucket, nas_fs, SyncSettings(retry_delay_s=0))
    assert ids["nas_gone"] in again.synced_ids
    assert sha(nas_bytes(nas_fs, path["nas_gone"])) == files["nas_gone"].sha256


def test_audit_of_a_consistent_cache_reports_no_drift(conn, upload: Uploader, s3_resource,
                                                      s3, nas_fs, prefix) -> None:
    for i in range(5):
        upload(bytes([i]) * (i * 1000), f"ok{i}.bin")
    run_pending_sync(conn, s3, s3_resource.bucket, nas_fs, SyncSettings(retry_delay_s=0))
    upload(b"pending is not drift")
    report = run_audit(conn, s3, s3_resource.bucket, nas_fs,
                       AuditSettings(key_prefix=f"{prefix}/", nas_prefix=prefix,
                                     hash_sample=10))
    assert report.drift_items == 0 and report.drift_percent == 0.0
    assert report.objects_seen == 6 and report.synced_rows == 5
    assert report.hashes_checked == 6 + 5  # every cached object and every NAS copy
