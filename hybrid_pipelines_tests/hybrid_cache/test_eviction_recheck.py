"""Eviction re-checks each NAS copy just before deleting the cached object (issue #12 item 3):
an editor who deleted or replaced the NAS file after it was verified must not make eviction
delete the only copy left. Against the real Samba, SeaweedFS and PostgreSQL."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pytest

from hybrid_pipelines.hybrid_cache.eviction import EvictionSettings, run_eviction
from hybrid_pipelines.hybrid_cache.rules.eviction_policy import Policy, recheck_plan
from hybrid_pipelines.hybrid_cache.runtime import probes
from hybrid_pipelines.hybrid_cache.sync import SyncSettings, run_pending_sync
from hybrid_pipelines.hybrid_cache.uploads import upload_to_cache
from hybrid_pipelines_tests.conftest import nas_resource_for

from .conftest import (
    Uploader,
    hc_definitions,
    materializations,
    nas_bytes,
    observations,
    row,
    run_job,
    sha,
    share_path,
)

SIZE = 1000


def _exists(s3: Any, bucket: str, key: str) -> bool:
    return s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0) > 0


def _sync(conn, s3_resource, nas_fs) -> None:
    report = run_pending_sync(conn, s3_resource.get_client(), s3_resource.bucket, nas_fs,
                              SyncSettings(retry_delay_s=0))
    assert report.errors == [], report.errors


@pytest.fixture()
def defs(hc_postgres, s3_resource, nas_resource) -> dg.Definitions:
    return hc_definitions(hc_postgres, s3_resource, nas_resource)


def _edit_nas(nas_fs: Any, path: str, edit: str) -> None:
    """What an editor with access to the share does after the sync verified the copy."""
    if edit == "deleted":
        nas_fs.remove(path)
    elif edit == "same size, other bytes":
        with nas_fs.open_write(path) as fh:
            fh.write(b"E" * SIZE)
    elif edit == "other size":
        with nas_fs.open_write(path) as fh:
            fh.write(b"shorter")
    elif edit == "a folder now":
        nas_fs.remove(path)
        nas_fs.makedirs(path)
    else:  # pragma: no cover - test table typo
        raise AssertionError(edit)


@pytest.mark.fault("NAS copy deleted or replaced after sync -> eviction keeps the cached "
                   "object and re-queues the row", kind="state edited")
@pytest.mark.parametrize("edit", ["deleted", "same size, other bytes", "other size",
                                  "a folder now"])
def test_eviction_keeps_the_object_whose_nas_copy_changed(
        conn, upload: Uploader, defs, s3, s3_resource, nas_fs, prefix, edit: str) -> None:
    edited = upload(b"a" * SIZE, "a.bin")
    intact = upload(b"b" * SIZE, "b.bin")
    _sync(conn, s3_resource, nas_fs)
    path = row(conn, edited.id)["nas_path"]
    _edit_nas(nas_fs, path, edit)

    # 2000 of 2400 bytes (83%) -> down to 0: both files would go, the edited one first (FIFO).
    conn.execute("UPDATE file_metadata SET created_at = created_at - interval '1 day'"
                 " WHERE id = %s", (edited.id,))
    result = run_job(defs, "cache_eviction", {"cache_evictions": {
        "key_prefix": f"{prefix}/", "capacity_bytes": 2400, "target": 0.0, "policy": "fifo"}})
    meta = materializations(result)["cache_evictions"]

    assert _exists(s3, s3_resource.bucket, edited.key), "the only intact copy was deleted"
    r = row(conn, edited.id)
    assert r["cache_status"] == "cached" and r["nas_status"] == "pending"
    assert r["nas_verified_at"] is None and r["sync_attempts"] == 0
    assert "eviction re-check" in r["last_error"] and path in r["last_error"]
    assert meta["recheck_failed"] == 1
    # The untouched file is evicted as usual.
    assert meta["files_evicted"] == 1 and meta["bytes_evicted"] == SIZE
    assert row(conn, intact.id)["cache_status"] is None
    assert not _exists(s3, s3_resource.bucket, intact.key)
    assert sha(nas_bytes(nas_fs, row(conn, intact.id)["nas_path"])) == intact.sha256

    if edit == "deleted":  # the next pending sync puts the copy back from the cache
        _sync(conn, s3_resource, nas_fs)
        r = row(conn, edited.id)
        assert r["nas_status"] == "synced" and r["nas_verified_at"] is not None
        assert sha(nas_bytes(nas_fs, path)) == edited.sha256


def _age_verification(conn, file_id: Any) -> None:
    """The sync verified the copy an hour ago (instead of sleeping past the clock skew)."""
    conn.execute("UPDATE file_metadata SET nas_verified_at = nas_verified_at - interval '1 hour'"
                 " WHERE id = %s", (file_id,))


def _settings(prefix: str, **kw: Any) -> EvictionSettings:
    return EvictionSettings(**{"capacity_bytes": 1200, "target": 0.0, "policy": Policy.FIFO,
                               "key_prefix": f"{prefix}/", **kw})


@pytest.mark.fault("NAS copy replaced by other bytes of the same size with its old mtime put "
                   "back -> the small-file hash still catches it", kind="state edited")
def test_same_size_replacement_with_the_old_mtime_is_caught_by_the_hash(
        conn, upload: Uploader, s3, s3_resource, nas_fs, samba_server, prefix) -> None:
    f = upload(b"c" * SIZE, "c.bin")
    _sync(conn, s3_resource, nas_fs)
    local = share_path(samba_server, row(conn, f.id)["nas_path"])
    before = local.stat()
    with open(local, "r+b") as fh:  # in place, as `cp -p` or a restore would leave it
        fh.write(b"X" * 10)
    os.utime(local, ns=(before.st_atime_ns, before.st_mtime_ns))

    report = run_eviction(conn, s3, s3_resource.bucket, nas_fs, _settings(prefix))

    assert report.files_evicted == 0 and report.recheck_failed == 1
    assert report.recheck_hashed == 1
    assert _exists(s3, s3_resource.bucket, f.key)
    r = row(conn, f.id)
    assert r["nas_status"] == "pending" and "SHA-256" in r["last_error"]


@pytest.mark.parametrize("same_bytes", [True, False])
def test_a_copy_modified_after_verification_is_hashed_whatever_its_size(
        conn, upload: Uploader, s3, s3_resource, nas_fs, prefix, same_bytes: bool) -> None:
    f = upload(b"d" * SIZE, "d.bin")
    _sync(conn, s3_resource, nas_fs)
    _age_verification(conn, f.id)
    path = row(conn, f.id)["nas_path"]
    with nas_fs.open_write(path) as fh:  # rewritten now: mtime newer than the verification
        fh.write(b"d" * SIZE if same_bytes else b"D" * SIZE)
    verified_before = row(conn, f.id)["nas_verified_at"]

    # hash_max 0: only the changed mtime makes the re-check read the file.
    report = run_eviction(conn, s3, s3_resource.bucket, nas_fs,
                          _settings(prefix, recheck_hash_max_bytes=0))

    assert report.recheck_hashed == 1
    assert _exists(s3, s3_resource.bucket, f.key) is not same_bytes
    r = row(conn, f.id)
    if same_bytes:  # touched, not changed: evicted, and the verification is renewed
        assert report.files_evicted == 1 and r["cache_status"] is None
        assert r["nas_verified_at"] > verified_before
    else:
        assert report.files_evicted == 0 and report.recheck_failed == 1
        assert r["nas_status"] == "pending" and r["nas_verified_at"] is None


def test_an_unchanged_large_copy_is_checked_by_size_and_mtime_only(
        conn, upload: Uploader, s3, s3_resource, nas_fs, prefix) -> None:
    f = upload(b"e" * SIZE, "e.bin")
    _sync(conn, s3_resource, nas_fs)
    report = run_eviction(conn, s3, s3_resource.bucket, nas_fs,
                          _settings(prefix, recheck_hash_max_bytes=SIZE - 1))
    assert report.files_evicted == 1 and report.recheck_hashed == 0
    assert report.recheck_failed == 0 and not _exists(s3, s3_resource.bucket, f.key)


@pytest.mark.fault("NAS (smbd) stopped before and during eviction -> nothing is deleted on "
                   "an unverifiable NAS", kind="server stopped")
def test_eviction_deletes_nothing_while_the_nas_cannot_be_checked(
        conn, hc_postgres, s3_resource, s3, server_factory, prefix) -> None:
    samba = server_factory("samba")
    nas = nas_resource_for(samba)
    nas_fs = nas.fs()
    files = [upload_to_cache(conn, s3, s3_resource.bucket, f"n{i}.bin", bytes([i]) * SIZE,
                             key_prefix=f"{prefix}/", nas_prefix=prefix) for i in range(4)]
    _sync(conn, s3_resource, nas_fs)
    settings = _settings(prefix, capacity_bytes=4800, batch_size=1)

    # Mid-run: the first batch is evicted, then smbd stops; the next batch cannot be checked.
    stopped: list[Any] = []

    def stop_after_first(stage: str, ids: list[Any]) -> None:
        if stage == "evicted" and not stopped:
            stopped.extend(ids)
            samba.stop()

    report = run_eviction(conn, s3, s3_resource.bucket, nas_fs, settings,
                          probes=probes(s3_resource, nas), on_step=stop_after_first)
    assert report.files_evicted == 1 and report.stopped_backend == "nas"
    assert "NAS" in report.stopped_reason
    for f in files:
        evicted = f.id in stopped
        assert _exists(s3, s3_resource.bucket, f.key) is not evicted
        assert row(conn, f.id)["cache_status"] == (None if evicted else "cached")
        assert row(conn, f.id)["nas_verified_at"] is not None  # nothing blamed on the files

    # Down before the run: the job skips with the reason and touches nothing.
    defs = hc_definitions(hc_postgres, s3_resource, nas)
    obs = observations(run_job(defs, "cache_eviction", {"cache_evictions": {
        "key_prefix": f"{prefix}/", "capacity_bytes": 4800, "target": 0.0}}))
    skipped = obs["cache_evictions"]
    assert skipped["skipped"] == 1 and skipped["nas_health"] == 0
    assert "NAS" in skipped["skip_reason"]
    assert sum(_exists(s3, s3_resource.bucket, f.key) for f in files) == 3

    samba.start()
    conn.execute("UPDATE backend_circuit SET state = 'closed', consecutive_failures = 0")
    done = materializations(run_job(defs, "cache_eviction", {"cache_evictions": {
        "key_prefix": f"{prefix}/", "capacity_bytes": 3600, "target": 0.0}}))  # 3000: 83%
    assert done["cache_evictions"]["files_evicted"] == 3
    assert done["cache_evictions"]["recheck_failed"] == 0
    nas_fs.remove(prefix)


T = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("nas", "row_size", "want"), [
    (None, 5000, "fail"),                      # missing
    ((True, 0, T - 60), 5000, "fail"),         # a folder at the path
    ((False, 999, T - 60), 5000, "fail"),      # other size
    ((False, 5000, T + 60), 5000, "hash"),     # modified after the verification
    ((False, 5000, T + 1), 5000, "ok"),        # within the clock skew
    ((False, 100, T - 60), 100, "hash"),       # small: hashing is cheap
    ((False, 5000, T - 60), 5000, "ok"),       # large, unchanged
])
def test_recheck_plan(nas: tuple[bool, int, float] | None, row_size: int, want: str) -> None:
    action, reason = recheck_plan(nas, row_size, T, hash_max_bytes=1000, mtime_skew_s=2.0)
    assert action == want, reason
    assert (reason != "") is (want != "ok")
