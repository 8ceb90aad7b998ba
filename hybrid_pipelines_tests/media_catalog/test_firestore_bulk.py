"""Parallel batch commits of the Firestore catalog sync (firestore_bulk): several commits in
flight keep the sync's guarantees. The cursor (SQLite and _sync_metadata) never passes a batch
that did not land, even when later batches landed first; a retryable push-back is retried and
narrows the window; the emulator killed with commits in flight loses and doubles nothing.
All on the real Firestore emulator."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.batch import WriteBatch

from hybrid_pipelines.dev.stack.firestore import FirestoreEmulator
from hybrid_pipelines.media_catalog.catalog_store import CatalogStore
from hybrid_pipelines.media_catalog.firestore_bulk import BulkCommitter, CommitFailed
from hybrid_pipelines.media_catalog.firestore_sync import META, FirestoreSync, meta_doc_id
from hybrid_pipelines.media_catalog.rules.commit_window import CommitWindow
from hybrid_pipelines.resources import (
    BackendError,
    FirestoreResource,
)
from hybrid_pipelines_tests.conftest import ServerFactory

from . import small_catalog
from .conftest import unique

BATCH = 20  # 150 files -> ~17 commits: the window opens well before the end


@pytest.fixture(scope="module")
def private_emulator(server_factory: ServerFactory) -> FirestoreEmulator:
    return small_catalog.private_emulator(server_factory)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = unique("Bulk")
    return small_catalog.build_small_catalog(tmp_path_factory.mktemp("bulk"), folder), folder


@pytest.fixture()
def catalog(built: tuple[Path, str], tmp_path: Path) -> Iterator[tuple[CatalogStore, str]]:
    template, folder = built
    with small_catalog.catalog_copy(template, tmp_path / "catalog.db") as store:
        yield store, folder


def _fs(emulator: FirestoreEmulator) -> FirestoreResource:
    fs = FirestoreResource(project=unique("bulk").lower(), emulator_host=emulator.address,
                           timeout_s=30)
    fs.client().collection("warmup").document("w").set({"x": 1}, timeout=60)  # JVM warm-up
    return fs


def _meta_cursor(fs: FirestoreResource, folder: str) -> int:
    snap = fs.client().collection(META).document(meta_doc_id(folder)).get()
    return int((snap.to_dict() or {}).get("cursor", 0)) if snap.exists else 0


def _exactly_once(fs: FirestoreResource, sync: FirestoreSync, store: CatalogStore,
                  folder: str) -> None:
    assert sync.firestore_counts(folder) == store.live_counts(folder)
    ids = [d.id for d in fs.client().collection("files").where(
        filter=FieldFilter("partition", "==", folder)).select([]).stream()]
    assert len(ids) == len(set(ids)) == store.live_counts(folder)["files"]
    assert _meta_cursor(fs, folder) == store.partition_max_seq(folder)
    assert store.get_state(f"firestore:{folder}")[0] == store.partition_max_seq(folder)


def test_window_opens_after_the_first_commits_and_halves_on_push_back() -> None:
    w = CommitWindow(max_in_flight=4, sequential_first=3)
    grown = []
    for _ in range(7):
        grown.append(w.limit)
        w.on_success()
    assert grown == [1, 1, 1, 2, 3, 4, 4]
    w.on_throttle()
    assert w.limit == 2
    w.on_throttle()
    w.on_throttle()
    assert w.limit == 1 and w.has_room(0) and not w.has_room(1)
    with pytest.raises(ValueError):
        CommitWindow(max_in_flight=0)


def test_parallel_sync_writes_everything_once(firestore_emulator: FirestoreEmulator,
                                              catalog: tuple[CatalogStore, str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    store, folder = catalog
    fs = _fs(firestore_emulator)
    acked: list[int] = []
    sync = FirestoreSync(store, fs, batch_size=BATCH, max_in_flight=4,
                         on_commit=lambda _n, cursor: acked.append(cursor))
    # Pacing, not a fault: on a loaded machine the emulator could answer each commit before
    # the next was sent, and the parallel path went unseen. The first commit after the
    # sequential ones is held (10 s at most) until the next one has started: only a sync that
    # sends it while the first is in flight gets past quickly and reaches peak 2.
    started: list[WriteBatch] = []
    moved = threading.Condition()
    real_commit = WriteBatch.commit
    held = CommitWindow().sequential_first  # 0-based: the first commit the window may overlap

    def commit(self: WriteBatch, **kwargs: Any) -> Any:
        with moved:
            started.append(self)
            n = len(started)
            moved.notify_all()
            if n == held + 1:
                moved.wait_for(lambda: len(started) > n, timeout=10)
        return real_commit(self, **kwargs)

    monkeypatch.setattr(WriteBatch, "commit", commit)
    report = sync.sync_partition(folder)
    monkeypatch.undo()
    assert len(started) > held + 1  # enough batches for the window to open
    assert report.peak_in_flight > 1  # the parallel path ran
    # Acknowledged in send order: cursors only grow within each stream (the partition's,
    # then the players').
    assert sum(b < a for a, b in zip(acked, acked[1:], strict=False)) <= 1
    _exactly_once(fs, sync, store, folder)
    assert sync.sync_partition(folder).synced == 0


@pytest.mark.fault("a middle commit fails while later ones land -> the cursor stays before "
                   "it (SQLite and _sync_metadata); the next run fills the gap, every "
                   "document once. A mock: no real server fails one commit of several "
                   "in flight on demand", kind="patched exception")
def test_failed_middle_commit_holds_the_cursor(firestore_emulator: FirestoreEmulator,
                                               catalog: tuple[CatalogStore, str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    store, folder = catalog
    fs = _fs(firestore_emulator)
    sync = FirestoreSync(store, fs, batch_size=BATCH, max_in_flight=4)
    made: list[WriteBatch] = []
    landed_after_failure: list[int] = []
    failing: dict[str, Any] = {}
    real_batch, real_commit = sync.client.batch, WriteBatch.commit

    def batch() -> WriteBatch:
        made.append(real_batch())
        return made[-1]

    def commit(self: WriteBatch, **kwargs: Any) -> Any:
        if len(made) >= 6 and self is made[5] and "at" not in failing:
            failing["at"] = time.monotonic()
            time.sleep(0.5)  # later batches land first
            raise gexc.PermissionDenied("injected: this one commit is refused")
        result = real_commit(self, **kwargs)
        if "at" in failing:
            landed_after_failure.append(made.index(self))
        return result

    monkeypatch.setattr(sync.client, "batch", batch)
    monkeypatch.setattr(WriteBatch, "commit", commit)
    acked: list[int] = []
    sync.on_commit = lambda _n, cursor: acked.append(cursor)
    with pytest.raises(BackendError) as err:
        sync.sync_partition(folder)
    assert "sync cursor stays at change" in str(err.value)
    assert any(n > 5 for n in landed_after_failure), landed_after_failure
    assert len(acked) == 5  # batches 0-4; nothing after the failed one counts
    assert store.get_state(f"firestore:{folder}")[0] == acked[-1]
    assert _meta_cursor(fs, folder) <= acked[-1]

    monkeypatch.undo()
    again = FirestoreSync(store, fs, batch_size=BATCH, max_in_flight=4)
    report = again.sync_partition(folder)
    assert report.full_resync == 0
    _exactly_once(fs, again, store, folder)


@pytest.mark.fault("RESOURCE_EXHAUSTED on a commit -> retried after a backoff, the window "
                   "halves, nothing lost. A wrapper raises it: the emulator never throttles",
                   kind="patched exception")
def test_push_back_is_retried_and_narrows_the_window(
        firestore_emulator: FirestoreEmulator) -> None:
    fs = _fs(firestore_emulator)
    client = fs.client()
    client.collection("bulk").document("w").delete(timeout=60)  # warm-up outside the window
    window = CommitWindow(max_in_flight=4, sequential_first=0, limit=4)
    done: list[int] = []
    refused: list[int] = []
    # The limits right after each push-back: acknowledgements widen the window again, so
    # its final width depends on the order the commits finished in, not on the halving.
    after_push_back: list[int] = []
    halve = window.on_throttle

    def observed_halving() -> None:
        halve()
        after_push_back.append(window.limit)

    window.on_throttle = observed_halving  # type: ignore[method-assign]

    class PushedBackOnce:
        """A real batch whose first attempt is refused, as a busy Firestore would."""

        def __init__(self, n: int) -> None:
            self.n, self.inner = n, client.batch()
            self.inner.set(client.collection("bulk").document(f"d{n}"), {"n": n})

        def commit(self, retry: Any, timeout: float) -> None:
            def attempt() -> None:
                if self.n not in refused:
                    refused.append(self.n)
                    raise gexc.ResourceExhausted("injected: quota, try later")
                self.inner.commit(timeout=timeout)
            retry(attempt)()

    with BulkCommitter(timeout_s=30, window=window, on_done=done.append) as committer:
        for n in range(6):
            committer.make_room(frozenset({f"bulk/d{n}"}))
            committer.submit(PushedBackOnce(n), frozenset({f"bulk/d{n}"}), n)
        committer.drain()
    assert done == list(range(6)) and sorted(refused) == list(range(6))
    assert committer.retries == 6 and window.throttled == 6
    assert after_push_back and min(after_push_back) < 4
    got = {d.id: d.to_dict()["n"] for d in client.collection("bulk").stream()}
    assert got == {f"d{n}": n for n in range(6)}


def test_a_document_is_never_in_two_commits_in_flight(
        firestore_emulator: FirestoreEmulator) -> None:
    client = _fs(firestore_emulator).client()
    window = CommitWindow(max_in_flight=4, sequential_first=0, limit=4)
    inside: set[str] = set()
    overlap: list[str] = []
    lock = threading.Lock()

    class Tracked:
        def __init__(self, doc: str, n: int) -> None:
            self.doc, self.inner = doc, client.batch()
            self.inner.set(client.collection("bulk").document(doc), {"n": n})

        def commit(self, retry: Any, timeout: float) -> None:
            with lock:
                if self.doc in inside:
                    overlap.append(self.doc)
                inside.add(self.doc)
            time.sleep(0.05)
            self.inner.commit(timeout=timeout)
            with lock:
                inside.discard(self.doc)

    with BulkCommitter(timeout_s=30, window=window, on_done=lambda _n: None) as committer:
        for n in range(8):
            doc = f"d{n % 2}"  # two documents, each written 4 times, in order
            committer.make_room(frozenset({doc}))
            committer.submit(Tracked(doc, n), frozenset({doc}), n)
        committer.drain()
    assert not overlap
    got = {d.id: d.to_dict()["n"] for d in client.collection("bulk").stream()}
    assert got == {"d0": 6, "d1": 7}  # the last version of each won


def test_commit_failed_names_the_cause() -> None:
    err = CommitFailed(gexc.PermissionDenied("no"))
    assert isinstance(err.cause, gexc.PermissionDenied) and "no" in str(err)


@pytest.mark.fault("Firestore emulator killed with several commits in flight -> cursor at "
                   "the last acknowledged prefix; restarted, a full resync leaves every "
                   "document once", kind="server stopped")
def test_emulator_killed_with_commits_in_flight(private_emulator: FirestoreEmulator,
                                                catalog: tuple[CatalogStore, str]) -> None:
    store, folder = catalog
    fs = FirestoreResource(project=private_emulator.project_id,
                           emulator_host=private_emulator.address)
    FirestoreSync(store, fs, timeout_s=30).firestore_counts(folder)  # warm the JVM up
    acked: list[int] = []

    def kill_when_parallel(batch: int, cursor: int) -> None:
        acked.append(cursor)
        if batch == 6:  # the window is open: more commits are in flight right now
            private_emulator.kill()

    sync = FirestoreSync(store, fs, batch_size=BATCH, timeout_s=2.0, max_in_flight=4,
                         on_commit=kill_when_parallel)
    with pytest.raises(BackendError) as err:
        sync.sync_partition(folder)
    assert "sync cursor stays at change" in str(err.value)
    assert store.get_state(f"firestore:{folder}")[0] == acked[-1] < \
        store.partition_max_seq(folder)

    private_emulator.start()  # same port, empty again
    again = FirestoreSync(store, fs, batch_size=BATCH, timeout_s=30.0, max_in_flight=4)
    report = again.sync_partition(folder)
    assert report.full_resync == 1
    _exactly_once(fs, again, store, folder)
