"""Eviction against the real servers: each policy picks the right files, and a file that is not
synced and verified on the NAS is never evicted, even when a run fails between its steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from hybrid_pipelines.hybrid_cache import eviction as ev
from hybrid_pipelines.hybrid_cache.audit import AuditSettings, run_audit, run_reconcile
from hybrid_pipelines.hybrid_cache.eviction import EvictionSettings, measure_usage, run_eviction
from hybrid_pipelines.hybrid_cache.rules.eviction_policy import Policy
from hybrid_pipelines.hybrid_cache.sync import SyncSettings, run_pending_sync

from .conftest import Uploader, nas_bytes, row, sha

SIZE = 1000
T0 = datetime(2025, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)

# name: (created_at offset h, last_accessed offset h or None, access_count)
SYNCED = {
    "s1": (0, 9, 1),      # oldest upload, recently read, rarely
    "s2": (1, 2, 50),     # read long ago, very often
    "s3": (2, None, 0),   # never read
    "s4": (3, 8, 5),
    "s5": (4, 10, 7),
    "s6": (5, 11, 60),
}
EXPECTED = {Policy.LRU: {"s2", "s3"}, Policy.LFU: {"s3", "s1"}, Policy.FIFO: {"s1", "s2"}}


def _exists(s3: Any, bucket: str, key: str) -> bool:
    return s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0) > 0


def _set(conn: psycopg.Connection, file_id: Any, created: int, accessed: int | None,
         count: int) -> None:
    conn.execute("UPDATE file_metadata SET created_at = %s, last_accessed = %s,"
                 " access_count = %s WHERE id = %s",
                 (T0 + created * H, None if accessed is None else T0 + accessed * H, count,
                  file_id))


@pytest.fixture()
def cache(conn, upload: Uploader, s3_resource, nas_fs, prefix) -> dict[str, Any]:
    """Six synced+verified files, plus three unsynced ones that every policy would pick first
    if it were allowed to: the oldest, never read, never counted."""
    files = {name: upload(name.encode() * (SIZE // 2), f"{name}.bin") for name in SYNCED}
    run_pending_sync(conn, s3_resource.get_client(), s3_resource.bucket, nas_fs,
                     SyncSettings(retry_delay_s=0))
    for name, (created, accessed, count) in SYNCED.items():
        _set(conn, files[name].id, created, accessed, count)
    for name in ("pending", "syncing", "unverified"):
        files[name] = f = upload(name[:2].encode() * (SIZE // 2), f"{name}.bin")
        _set(conn, f.id, -100, None, 0)
    conn.execute("UPDATE file_metadata SET nas_status = 'syncing', claimed_by = 'other',"
                 " lease_until = now() + interval '1 hour' WHERE id = %s",
                 (files["syncing"].id,))
    # Marked synced by someone else without a verified copy: not safe either.
    conn.execute("UPDATE file_metadata SET nas_status = 'synced' WHERE id = %s",
                 (files["unverified"].id,))
    return files


UNSAFE = ("pending", "syncing", "unverified")


def _settings(prefix: str, policy: Policy, **kw: Any) -> EvictionSettings:
    # 9 files of 1000 bytes = 9000 bytes: above 80% of 10000, target 70% -> free 2000 bytes.
    return EvictionSettings(**{"capacity_bytes": 10_000, "policy": policy,
                               "key_prefix": f"{prefix}/", "batch_size": 100, **kw})


@pytest.mark.parametrize("policy", list(Policy))
def test_each_policy_evicts_its_files_and_never_an_unsynced_one(
        conn, cache, s3_resource, s3, nas_fs, prefix, policy: Policy) -> None:
    report = run_eviction(conn, s3, s3_resource.bucket, nas_fs, _settings(prefix, policy))

    assert report.usage_before.bytes == 9 * SIZE and report.bytes_needed == 2 * SIZE
    by_id = {f.id: name for name, f in cache.items()}
    assert {by_id[i] for i in report.evicted_ids} == EXPECTED[policy]
    assert report.usage_after_percent == pytest.approx(70.0)
    for name, f in cache.items():
        r = row(conn, f.id)
        evicted = name in EXPECTED[policy]
        assert r["cache_status"] == (None if evicted else "cached"), name
        assert _exists(s3, s3_resource.bucket, f.key) is not evicted, name
        if evicted:  # still readable from the NAS
            assert sha(nas_bytes(nas_fs, r["nas_path"])) == f.sha256
    assert measure_usage(s3, s3_resource.bucket, f"{prefix}/", 10_000).bytes == 7 * SIZE


def test_eviction_that_cannot_reach_the_target_still_spares_unsynced_files(
        conn, cache, s3_resource, s3, nas_fs, prefix) -> None:
    settings = _settings(prefix, Policy.FIFO, capacity_bytes=9_500, threshold=0.5, target=0.1)
    report = run_eviction(conn, s3, s3_resource.bucket, nas_fs, settings)
    assert report.files_evicted == 6 and report.shortfall_bytes > 0
    for name in UNSAFE:
        assert row(conn, cache[name].id)["cache_status"] == "cached"
        assert _exists(s3, s3_resource.bucket, cache[name].key)


def test_below_threshold_nothing_is_evicted(conn, cache, s3_resource, s3, nas_fs,
                                            prefix) -> None:
    report = run_eviction(conn, s3, s3_resource.bucket, nas_fs,
                          _settings(prefix, Policy.LRU, capacity_bytes=100_000))
    assert report.bytes_needed == 0 and report.files_evicted == 0


@pytest.mark.fault("hybrid cache: eviction died between object delete and row update",
                   kind="patched exception")
def test_failure_between_delete_and_update_is_safe_and_reconciled(
        conn, cache, s3_resource, s3, nas_fs, prefix, monkeypatch) -> None:
    def crash(*_a: Any, **_k: Any) -> int:
        # Fault injection: a real PostgreSQL will not fail this one UPDATE on demand, so the
        # run "dies" right after SeaweedFS deleted the objects and before the rows change.
        raise RuntimeError("run killed between delete and update")

    monkeypatch.setattr(ev, "_mark_evicted", crash)
    with pytest.raises(RuntimeError, match="between delete and update"):
        run_eviction(conn, s3, s3_resource.bucket, nas_fs, _settings(prefix, Policy.LRU))
    monkeypatch.undo()

    gone = [cache[n] for n in sorted(EXPECTED[Policy.LRU])]
    for f in gone:  # object deleted, row still says cached: the state the audit must catch
        assert not _exists(s3, s3_resource.bucket, f.key)
        r = row(conn, f.id)
        assert r["cache_status"] == "cached" and r["nas_status"] == "synced"
        assert sha(nas_bytes(nas_fs, r["nas_path"])) == f.sha256  # nothing lost
    for name in UNSAFE:
        assert _exists(s3, s3_resource.bucket, cache[name].key)

    audit = AuditSettings(key_prefix=f"{prefix}/", nas_prefix=prefix, hash_sample=0)
    found = run_audit(conn, s3, s3_resource.bucket, nas_fs, audit)
    assert set(found.cache_missing_safe) == {f.id for f in gone}
    assert found.data_at_risk == 0
    # The row marked synced by someone else has no NAS copy at all: re-queued from the cache.
    assert found.nas_missing_requeue == [cache["unverified"].id]
    fixed = run_reconcile(conn, s3, s3_resource.bucket, nas_fs, audit)
    assert fixed.cache_cleared == 2 and fixed.requeued == 1
    assert row(conn, cache["unverified"].id)["nas_status"] == "pending"
    assert {row(conn, f.id)["cache_status"] for f in gone} == {None}
    assert run_audit(conn, s3, s3_resource.bucket, nas_fs, audit).drift_items == 0

    # The next eviction run carries on from a consistent state and still spares the unsafe.
    again = run_eviction(conn, s3, s3_resource.bucket, nas_fs,
                         _settings(prefix, Policy.LRU, threshold=0.6, target=0.5))
    assert again.files_evicted == 2
    for name in UNSAFE:
        assert row(conn, cache[name].id)["cache_status"] == "cached"


def test_settings_reject_a_target_above_the_threshold() -> None:
    with pytest.raises(ValueError, match="below the threshold"):
        EvictionSettings(capacity_bytes=10, threshold=0.7, target=0.8)
    with pytest.raises(ValueError, match="lru, lfu, fifo"):
        EvictionSettings(capacity_bytes=10, policy="mru")  # type: ignore[arg-type]
