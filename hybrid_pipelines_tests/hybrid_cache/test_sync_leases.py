"""Issue #12 item 4: a copy that outlasts its lease. The copies are slowed for real: the bytes
come from the real SeaweedFS object through a reader that sleeps between chunks (a slow link),
into the real Samba share; leases are a couple of seconds so the tests stay short."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from hybrid_pipelines.hybrid_cache.sync import SyncReport, SyncSettings, run_pending_sync
from hybrid_pipelines.resources import PostgresResource

from .conftest import Uploader, nas_bytes, partials, row, sha

CHUNK = 16 * 1024
LEASE_S = 2.0
DELAY_S = 0.25  # per chunk: 14 chunks take 3.5 s, well past the lease


class SlowBody:
    """The real S3 streaming body, read with a pause before each chunk."""

    def __init__(self, body: Any, delay_s: float, on_read: Callable[[int], None]):
        self._body, self._delay, self._on_read, self.reads = body, delay_s, on_read, 0

    def read(self, n: int = -1) -> bytes:
        time.sleep(self._delay)
        chunk = self._body.read(n)
        self.reads += 1
        self._on_read(len(chunk))
        return chunk

    def close(self) -> None:
        self._body.close()


class SlowS3:
    """The real SeaweedFS client whose downloads arrive slowly (see SlowBody)."""

    def __init__(self, client: Any, delay_s: float, on_read: Callable[[int], None]):
        self._client, self._delay, self._on_read = client, delay_s, on_read

    def get_object(self, **kw: Any) -> dict[str, Any]:
        response = self._client.get_object(**kw)
        response["Body"] = SlowBody(response["Body"], self._delay, self._on_read)
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def settings(**kw: Any) -> SyncSettings:
    return SyncSettings(**{"lease_timeout_s": LEASE_S, "chunk_size": CHUNK,
                           "retry_delay_s": 0, **kw})


@pytest.mark.fault("a copy outlasts lease_timeout_s while a second run starts -> the first "
                   "renews and finishes, the second takes nothing", kind="concurrency")
def test_a_long_copy_keeps_its_lease_and_its_batch(conn, upload: Uploader, s3_resource,
                                                   hc_postgres: PostgresResource, nas_fs,
                                                   prefix) -> None:
    from datetime import UTC, datetime, timedelta

    t0 = datetime.now(UTC) - timedelta(minutes=1)
    big = upload(random.Random(5).randbytes(14 * CHUNK - 100), "big.bin", created_at=t0)
    small = upload(b"waits behind the big one", "small.bin",
                   created_at=t0 + timedelta(seconds=1))
    started, finished = threading.Event(), threading.Event()
    reports: list[SyncReport] = []
    errors: list[BaseException] = []

    def on_read(n: int) -> None:
        started.set()

    def first_run() -> None:
        try:
            with hc_postgres.connect(autocommit=True) as c:
                slow = SlowS3(s3_resource.get_client(), DELAY_S, on_read)
                reports.append(run_pending_sync(c, slow, s3_resource.bucket, nas_fs,
                                                settings(batch_size=2), owner="first"))
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)
        finally:
            finished.set()

    worker = threading.Thread(target=first_run)
    worker.start()
    assert started.wait(30), "the first run never started copying"
    time.sleep(LEASE_S + 0.5)  # the leases taken at the claim have run out by now
    assert not finished.is_set(), "the copy was not slow enough to outlast the lease"
    second = run_pending_sync(conn, s3_resource.get_client(), s3_resource.bucket, nas_fs,
                              settings(), owner="second")
    still_copying = not finished.is_set()
    worker.join(60)

    assert not errors, errors
    assert still_copying  # the second run really ran while the first was mid-copy
    assert second.claimed == 0 and second.leases_expired == 0
    first = reports[0]
    assert first.synced == 2 and first.leases_lost == 0, first
    for f in (big, small):
        r = row(conn, f.id)
        assert r["nas_status"] == "synced" and r["sync_attempts"] == 0
        assert sha(nas_bytes(nas_fs, r["nas_path"])) == f.sha256
    assert partials(nas_fs, prefix) == []


@pytest.mark.fault("the row is taken over behind the run's back mid-copy or just before the "
                   "rename -> no rename, no synced mark, temporary file removed",
                   kind="state edited")
@pytest.mark.parametrize("when", ["mid-copy", "after-copy"])
def test_a_run_that_lost_its_lease_never_renames(conn, upload: Uploader, s3_resource,
                                                 hc_postgres: PostgresResource, nas_fs,
                                                 prefix, when: str) -> None:
    data = random.Random(6).randbytes(10 * CHUNK)
    f = upload(data, "taken.bin")
    reads = {"n": 0}

    def on_read(n: int) -> None:
        reads["n"] += 1
        # Another run's takeover, written straight into the row: mid-copy (third chunk) or
        # once the last byte came in (the read that returns nothing).
        if (when == "mid-copy" and reads["n"] == 3) or (when == "after-copy" and n == 0):
            with hc_postgres.connect(autocommit=True) as other:
                other.execute("UPDATE file_metadata SET claimed_by = 'intruder',"
                              " lease_until = now() + interval '10 minutes' WHERE id = %s",
                              (f.id,))

    slow = SlowS3(s3_resource.get_client(), 0.05 if when == "after-copy" else DELAY_S,
                  on_read)
    report = run_pending_sync(conn, slow, s3_resource.bucket, nas_fs, settings(),
                              owner="victim")

    r = row(conn, f.id)
    assert report.synced == 0 and report.leases_lost == 1, report
    assert r["nas_status"] == "syncing" and r["claimed_by"] == "intruder"
    assert r["nas_verified_at"] is None and r["sync_attempts"] == 0
    assert nas_fs.stat(f.nas_path) is None  # nothing renamed into place
    assert partials(nas_fs, prefix) == []  # and the temporary copy is gone
    if when == "mid-copy":
        assert reads["n"] < 11  # stopped at the next renewal, not after the whole object
