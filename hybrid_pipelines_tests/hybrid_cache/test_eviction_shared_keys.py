"""Shared cache keys (issue #12 item 5): nothing makes seaweed_fid unique on the platform's
table, so an object is deleted only when every row that references its key is safely on the
NAS; eviction and the re-cache mismatch delete never remove (or overwrite) an object another
row still needs. Against the real SeaweedFS, Samba and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import dagster as dg
import pytest

from hybrid_pipelines.hybrid_cache.audit import AuditSettings, run_audit
from hybrid_pipelines.hybrid_cache.eviction import EvictionSettings, run_eviction
from hybrid_pipelines.hybrid_cache.recache import RecacheSettings, run_recache
from hybrid_pipelines.hybrid_cache.rules.eviction_policy import Policy
from hybrid_pipelines.hybrid_cache.sync import SyncSettings, run_pending_sync
from hybrid_pipelines.hybrid_cache.uploads import upload_to_cache, upload_to_nas

from .conftest import Uploader, hc_definitions, materializations, nas_bytes, row, run_job, sha

SIZE = 1000


def _exists(s3: Any, bucket: str, key: str) -> bool:
    return s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0) > 0


def _object_sha(s3: Any, bucket: str, key: str) -> str:
    return sha(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def _sync(conn, s3_resource, nas_fs) -> None:
    report = run_pending_sync(conn, s3_resource.get_client(), s3_resource.bucket, nas_fs,
                              SyncSettings(retry_delay_s=0))
    assert report.errors == [], report.errors


def _share_key(conn, src: UUID, nas_path: str, state: str = "pending") -> UUID:
    """A second row on the same object, as a file server that deduplicates uploads by content
    writes it: its own id and NAS path, the first row's seaweed_fid."""
    new = uuid.uuid4()
    nas_status, cache_status, verified, recache = {
        "pending": ("pending", "cached", False, False),
        "failed": ("failed", "cached", False, False),
        "synced, unverified": ("synced", "cached", False, False),
        "evicted, NAS copy unverified": ("synced", None, False, False),
    }[state]
    conn.execute(
        "INSERT INTO file_metadata (id, original_name, stored_name, mime_type, size, hash,"
        " seaweed_fid, cache_status, nas_path, nas_status, nas_verified_at, recache_requested,"
        " created_at, updated_at)"
        " SELECT %s, 'dup-' || original_name, stored_name, mime_type, size, hash, seaweed_fid,"
        "   %s, %s, %s, CASE WHEN %s THEN now() END, %s, created_at, now()"
        " FROM file_metadata WHERE id = %s",
        (new, cache_status, nas_path, nas_status, verified, recache, src))
    return new


@pytest.fixture()
def defs(hc_postgres, s3_resource, nas_resource) -> dg.Definitions:
    return hc_definitions(hc_postgres, s3_resource, nas_resource)


EVICT = {"capacity_bytes": 1200, "target": 0.0, "policy": "fifo"}  # one object: 83%


@pytest.mark.fault("two rows share one cache key, one synced and verified, the other not yet "
                   "on the NAS -> eviction keeps the object the other row needs",
                   kind="state edited")
@pytest.mark.parametrize("state", ["pending", "failed", "synced, unverified",
                                   "evicted, NAS copy unverified"])
def test_eviction_keeps_a_key_another_row_still_needs(
        conn, upload: Uploader, defs, s3, s3_resource, nas_fs, prefix, state: str) -> None:
    first = upload(b"s" * SIZE, "shared.bin")
    _sync(conn, s3_resource, nas_fs)
    second = _share_key(conn, first.id, f"{prefix}/dup/shared.bin", state)
    scope = {"cache_evictions": {**EVICT, "key_prefix": f"{prefix}/"}}

    meta = materializations(run_job(defs, "cache_eviction", scope))["cache_evictions"]

    assert _exists(s3, s3_resource.bucket, first.key), "evicted an object a row still needs"
    assert meta["files_evicted"] == 0 and meta["shortfall_bytes"] == SIZE
    assert row(conn, first.id)["cache_status"] == "cached"
    if state != "pending":
        return
    # The second row can still sync from the shared object; then both go together.
    _sync(conn, s3_resource, nas_fs)
    assert row(conn, second)["nas_status"] == "synced"
    assert sha(nas_bytes(nas_fs, f"{prefix}/dup/shared.bin")) == first.sha256
    meta = materializations(run_job(defs, "cache_eviction", scope))["cache_evictions"]
    assert meta["files_evicted"] == 2 and meta["bytes_evicted"] == SIZE
    assert meta["shared_keys_evicted"] == 1
    assert not _exists(s3, s3_resource.bucket, first.key)
    assert {row(conn, i)["cache_status"] for i in (first.id, second)} == {None}


@pytest.mark.fault("a row already evicted shares its key with a cached row, and its NAS copy "
                   "is deleted -> the object is kept and re-copied for it", kind="state edited")
def test_every_row_on_a_key_is_rechecked_not_only_the_candidate(
        conn, upload: Uploader, s3, s3_resource, nas_fs, prefix) -> None:
    first = upload(b"v" * SIZE, "v.bin")
    second = _share_key(conn, first.id, f"{prefix}/dup/v.bin")
    _sync(conn, s3_resource, nas_fs)
    # The first row was evicted on its own earlier (as eviction did before keys were shared
    # safely); then an editor removed its NAS copy. The object is now its only copy.
    conn.execute("UPDATE file_metadata SET cache_status = NULL WHERE id = %s", (first.id,))
    nas_fs.remove(row(conn, first.id)["nas_path"])

    report = run_eviction(conn, s3, s3_resource.bucket, nas_fs, EvictionSettings(
        capacity_bytes=1200, target=0.0, policy=Policy.FIFO, key_prefix=f"{prefix}/"))

    assert report.files_evicted == 0 and report.recheck_failed_ids == [first.id]
    assert _exists(s3, s3_resource.bucket, first.key)
    r = row(conn, first.id)  # back in the queue, served by the shared object
    assert r["cache_status"] == "cached" and r["nas_status"] == "pending"
    assert row(conn, second)["nas_verified_at"] is not None
    _sync(conn, s3_resource, nas_fs)
    assert sha(nas_bytes(nas_fs, r["nas_path"])) == first.sha256


@pytest.mark.fault("while eviction re-checks a shared key, another session adds a row on the "
                   "key, re-queues a sibling or holds its lock -> the key is kept",
                   kind="concurrency")
@pytest.mark.parametrize("race", ["row added", "sibling re-queued", "sibling locked"])
def test_a_key_that_changes_between_recheck_and_delete_is_kept(
        conn, hc_postgres, upload: Uploader, s3, s3_resource, nas_fs, prefix,
        race: str) -> None:
    first = upload(b"r" * SIZE, "race.bin")
    second = _share_key(conn, first.id, f"{prefix}/dup/race.bin")
    _sync(conn, s3_resource, nas_fs)  # both rows synced and verified: the key is evictable
    assert row(conn, second)["nas_verified_at"] is not None
    with hc_postgres.connect() as other:  # a second session, its own transactions

        def interfere(stage: str, ids: list[UUID]) -> None:
            if stage != "checked":
                return
            if race == "row added":  # a racing upload that reuses the key
                _share_key(other, first.id, f"{prefix}/dup/late.bin")
            elif race == "sibling re-queued":  # what reconcile does to a missing NAS copy
                other.execute("UPDATE file_metadata SET nas_status = 'pending',"
                              " nas_verified_at = NULL WHERE id = %s", (second,))
            else:  # a session holding the sibling's row lock (left open until after the run)
                other.execute("SELECT 1 FROM file_metadata WHERE id = %s FOR UPDATE", (second,))
                return
            other.commit()

        report = run_eviction(conn, s3, s3_resource.bucket, nas_fs, EvictionSettings(
            capacity_bytes=1200, target=0.0, policy=Policy.FIFO, key_prefix=f"{prefix}/"),
            on_step=interfere)
        other.rollback()
    assert report.files_evicted == 0 and report.keys_busy == 1
    assert _exists(s3, s3_resource.bucket, first.key)
    assert row(conn, first.id)["cache_status"] == "cached"


@pytest.mark.fault("a NAS-only upload whose seaweed_fid is also a cached row's key is "
                   "re-cached -> the other row's object is neither overwritten nor deleted",
                   kind="state edited")
@pytest.mark.parametrize("nas_copy", ["intact", "corrupt"])
def test_recache_never_overwrites_or_deletes_a_key_another_row_uses(
        conn, upload: Uploader, s3, s3_resource, nas_fs, prefix, nas_copy: str) -> None:
    cached = upload(b"k" * SIZE, "kept.bin")
    offline = upload_to_nas(conn, nas_fs, "offline.bin", b"o" * SIZE, nas_prefix=prefix)
    conn.execute("UPDATE file_metadata SET seaweed_fid = %s WHERE id = %s",
                 (cached.key, offline.id))
    if nas_copy == "corrupt":
        with nas_fs.open_write(offline.nas_path) as fh:
            fh.write(b"X" * SIZE)

    report = run_recache(conn, s3, s3_resource.bucket, nas_fs,
                         RecacheSettings(key_prefix=f"{prefix}/"))

    assert _object_sha(s3, s3_resource.bucket, cached.key) == cached.sha256
    r = row(conn, offline.id)
    if nas_copy == "intact":
        assert report.recached == 1 and r["cache_status"] == "cached"
        assert r["seaweed_fid"] != cached.key and r["seaweed_fid"].startswith(f"{prefix}/")
        assert _object_sha(s3, s3_resource.bucket, r["seaweed_fid"]) == offline.sha256
    else:
        assert report.refused == 1 and r["cache_status"] is None
        assert r["seaweed_fid"] == cached.key  # unchanged; its own attempt left nothing
        assert not _exists(s3, s3_resource.bucket, f"{prefix}/{offline.id}/")


def test_every_upload_gets_its_own_key(conn, s3, s3_resource, prefix) -> None:
    when = datetime(2026, 1, 2, tzinfo=UTC)
    same = [upload_to_cache(conn, s3, s3_resource.bucket, "same.bin", b"same bytes",
                            key_prefix=f"{prefix}/", nas_prefix=prefix, created_at=when)
            for _ in range(3)]
    assert len({f.key for f in same}) == 3 and len({f.nas_path for f in same}) == 3
    assert {_object_sha(s3, s3_resource.bucket, f.key) for f in same} == {sha(b"same bytes")}


def test_audit_counts_keys_shared_by_more_than_one_row(
        conn, upload: Uploader, s3, s3_resource, nas_fs, prefix) -> None:
    a, b = upload(b"1" * 10, "a.bin"), upload(b"2" * 10, "b.bin")
    _share_key(conn, a.id, f"{prefix}/x/a.bin")
    _share_key(conn, a.id, f"{prefix}/y/a.bin")
    _share_key(conn, b.id, f"{prefix}/x/b.bin")
    report = run_audit(conn, s3, s3_resource.bucket, nas_fs,
                       AuditSettings(key_prefix=f"{prefix}/", nas_prefix=prefix, hash_sample=0))
    assert report.shared_keys == 2 and report.metadata()["shared_cache_keys"] == 2
