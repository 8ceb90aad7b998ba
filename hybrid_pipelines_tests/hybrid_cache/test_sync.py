"""Pending sync against the real shared servers: SeaweedFS -> Samba, metadata in PostgreSQL."""

from __future__ import annotations

import random
import threading
from typing import Any

import psycopg
import pytest

from hybrid_pipelines.hybrid_cache import sync as sync_mod
from hybrid_pipelines.hybrid_cache.metadata_store import claim_pending
from hybrid_pipelines.hybrid_cache.sync import SyncSettings, run_pending_sync
from hybrid_pipelines.resources import PostgresResource, SeaweedFSResource

from .conftest import Uploader, nas_bytes, partials, row, sha

MIB = 1024 * 1024


def _sync(conn: psycopg.Connection, s3_resource: SeaweedFSResource, nas_fs: Any,
          **kw: Any) -> sync_mod.SyncReport:
    settings = SyncSettings(**{"batch_size": 50, "retry_delay_s": 0, **kw})
    return run_pending_sync(conn, s3_resource.get_client(), s3_resource.bucket, nas_fs,
                            settings)


def test_sync_copies_every_size_verified_and_keeps_the_cache(conn, upload: Uploader,
                                                             s3_resource, s3, nas_fs,
                                                             prefix) -> None:
    rng = random.Random(7)
    sizes = [0, 1, 4096, MIB + 3, 3 * MIB + 17]  # empty up to multi-megabyte
    files = [(upload(rng.randbytes(n), f"f{n}.bin"), n) for n in sizes]
    data = {f.id: s3.get_object(Bucket=s3_resource.bucket, Key=f.key)["Body"].read()
            for f, _ in files}

    report = _sync(conn, s3_resource, nas_fs, batch_size=2)

    assert report.synced == len(sizes) and report.bytes_synced == sum(sizes)
    assert report.failed_attempts == report.failed_final == 0
    for f, n in files:
        r = row(conn, f.id)
        assert r["nas_status"] == "synced" and r["nas_verified_at"] is not None
        assert r["synced_at"] is not None and r["sync_attempts"] == 0
        assert r["cache_status"] == "cached"  # syncing never evicts
        held = nas_bytes(nas_fs, r["nas_path"])
        assert len(held) == n and sha(held) == f.sha256 == sha(data[f.id])
    assert partials(nas_fs, prefix) == []
    assert _sync(conn, s3_resource, nas_fs).claimed == 0  # nothing left to do


def test_queue_order_is_priority_then_fifo(conn, upload: Uploader, s3_resource,
                                           nas_fs) -> None:
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    old = upload(b"old", created_at=t0)
    new = upload(b"new", created_at=t0 + timedelta(minutes=5))
    urgent = upload(b"urgent", created_at=t0 + timedelta(minutes=9), priority=10)
    newest = upload(b"newest", created_at=t0 + timedelta(minutes=10))

    report = _sync(conn, s3_resource, nas_fs, batch_size=2, max_batches=1)

    assert report.synced_ids == [urgent.id, old.id]
    assert row(conn, new.id)["nas_status"] == row(conn, newest.id)["nas_status"] == "pending"


@pytest.mark.fault("hybrid cache: NAS copy corrupted during sync", kind="patched exception")
@pytest.mark.parametrize("path", ["streamed", "one exchange"])
def test_corrupted_nas_copy_is_caught_by_the_hash(conn, upload: Uploader, s3_resource, nas_fs,
                                                  prefix, monkeypatch, path: str) -> None:
    f = upload(random.Random(1).randbytes(300_000), "clip.mp4")
    real_copy, real_put = sync_mod.copy_with_sha256, type(nas_fs).put_new

    def copy_then_corrupt(src, dst, chunk_size, **kw):
        # Fault injection: a real Samba never corrupts a write on demand, so we damage the
        # temporary file on the NAS after the streamed copy, through the same SMB handle.
        result = real_copy(src, dst, chunk_size, **kw)
        dst.write(b"\x00garbage")
        return result

    def put_corrupt(self, tmp: str, data: bytes):
        # Fault injection, as above: the NAS is handed other bytes than the object's, in the
        # one request that also reads them back.
        return real_put(self, tmp, data[:1000] + b"\x00garbage" + data[1009:])

    # The streamed copy is taken by a file of more than one chunk.
    kw = {"chunk_size": 64 << 10} if path == "streamed" else {}
    monkeypatch.setattr(sync_mod, "copy_with_sha256", copy_then_corrupt)
    monkeypatch.setattr(type(nas_fs), "put_new", put_corrupt)
    report = _sync(conn, s3_resource, nas_fs, **kw)
    r = row(conn, f.id)
    assert report.synced == 0 and report.failed_attempts == 1
    assert r["nas_status"] == "pending" and r["sync_attempts"] == 1
    assert "corrupt" in r["last_error"]
    assert nas_fs.stat(r["nas_path"]) is None  # nothing renamed into place
    assert partials(nas_fs, prefix) == []  # the bad temporary copy was removed

    monkeypatch.undo()
    report = _sync(conn, s3_resource, nas_fs)
    r = row(conn, f.id)
    assert report.synced == 1 and r["nas_status"] == "synced" and r["last_error"] is None
    assert sha(nas_bytes(nas_fs, r["nas_path"])) == f.sha256


@pytest.mark.fault("hybrid cache: cached object replaced by other bytes", kind="state edited")
def test_cache_object_not_matching_its_hash_fails_after_three_attempts(
        conn, upload: Uploader, s3_resource, s3, nas_fs) -> None:
    f = upload(b"A" * 1000)
    good = upload(b"B" * 1000)
    # Real damage: the cached object is replaced by other bytes of the same size.
    s3.put_object(Bucket=s3_resource.bucket, Key=f.key, Body=b"C" * 1000)

    for attempt in (1, 2, 3):
        report = _sync(conn, s3_resource, nas_fs)
        assert row(conn, f.id)["sync_attempts"] == attempt
    r = row(conn, f.id)
    assert r["nas_status"] == "failed"
    assert "does not match the recorded SHA-256" in r["last_error"]
    assert nas_fs.stat(r["nas_path"]) is None
    assert row(conn, good.id)["nas_status"] == "synced"
    assert report.failed_final == 1
    assert _sync(conn, s3_resource, nas_fs).claimed == 0  # failed rows stay out of the queue


@pytest.mark.parametrize("bad_path,reason", [("../../etc/passwd", "climbs out of the share"),
                                             ("clips/what?.mp4", "SMB cannot store")])
def test_unsafe_nas_path_fails_at_once_with_the_reason(conn, upload: Uploader, s3_resource,
                                                       nas_fs, bad_path, reason) -> None:
    f = upload(b"x")
    conn.execute("UPDATE file_metadata SET nas_path = %s WHERE id = %s", (bad_path, f.id))
    report = _sync(conn, s3_resource, nas_fs)
    r = row(conn, f.id)
    assert report.failed_final == 1 and r["nas_status"] == "failed" and r["sync_attempts"] == 1
    assert reason in r["last_error"]


@pytest.mark.fault("hybrid cache: sync run died holding its leases", kind="state edited")
def test_rows_of_a_crashed_run_return_after_the_lease(conn, upload: Uploader, s3_resource,
                                                      nas_fs) -> None:
    files = [upload(bytes([i]) * 100) for i in range(3)]
    claimed = claim_pending(conn, "crashed-run", 10, lease_s=600, max_attempts=3)
    assert len(claimed) == 3
    # Still leased: another run must leave them alone.
    assert _sync(conn, s3_resource, nas_fs).claimed == 0
    conn.execute("UPDATE file_metadata SET lease_until = now() - interval '1 second'")
    report = _sync(conn, s3_resource, nas_fs)
    assert report.leases_expired == 3 and report.synced == 3
    assert all(row(conn, f.id)["sync_attempts"] == 0 for f in files)  # no attempt charged


def test_two_concurrent_runs_copy_each_file_once(conn, upload: Uploader, s3_resource,
                                                 hc_postgres: PostgresResource, nas_fs,
                                                 prefix) -> None:
    files = [upload(random.Random(i).randbytes(2000 + i), f"c{i}.bin") for i in range(40)]
    copies: list[str] = []
    lock = threading.Lock()
    base = type(nas_fs)

    class CountingNAS(base):  # type: ignore[misc, valid-type]
        def put_new(self, path: str, data: bytes):
            with lock:
                copies.append(path)
            return base.put_new(self, path, data)

        def create_new(self, path: str, **kw: Any):
            with lock:
                copies.append(path)
            return base.create_new(self, path, **kw)

    counting = object.__new__(CountingNAS)
    counting.__dict__.update(nas_fs.__dict__)
    reports: list[sync_mod.SyncReport] = []
    errors: list[BaseException] = []

    start = threading.Barrier(2)

    def worker() -> None:
        try:
            with hc_postgres.connect(autocommit=True) as c:
                start.wait(30)
                reports.append(run_pending_sync(c, s3_resource.get_client(), s3_resource.bucket,
                                                counting, SyncSettings(batch_size=4)))
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    a, b = (set(r.synced_ids) for r in reports)
    assert a and b  # both runs really worked the queue at the same time
    assert not a & b
    assert a | b == {f.id for f in files}
    assert len(copies) == len(files)  # one NAS write per file, across both runs
    assert {row(conn, f.id)["nas_status"] for f in files} == {"synced"}
    assert partials(nas_fs, prefix) == []


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"lease_timeout_s": 0}])
def test_settings_name_the_bad_field(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        SyncSettings(**bad)
