"""The Firestore emulator SIGKILLed inside a commit: the media catalog's Firestore sync talks
gRPC to a private emulator through `TcpRelay` (a real loopback hop that counts the bytes
going to the server). After the second batch is acknowledged the relay is armed; once 4 KiB
of the third batch's commit have reached the emulator, it is killed, with the rest of that
commit still on the wire. Restarted (empty: the emulator keeps data in memory), the next run
notices the missing _sync_metadata, resyncs in full, and every document is there once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from hybrid_pipelines.dev.stack.firestore import FirestoreEmulator
from hybrid_pipelines.media_catalog.catalog_store import CatalogStore
from hybrid_pipelines.media_catalog.firestore_sync import META, FirestoreSync, meta_doc_id
from hybrid_pipelines.resources import (
    BackendError,
    FirestoreResource,
)
from hybrid_pipelines_tests.conftest import ServerFactory
from hybrid_pipelines_tests.media_catalog import small_catalog

from .wire import TcpRelay

BATCH = 50
ARM_AFTER = 4096  # bytes of the next commit that reach the server before the kill


@pytest.fixture(scope="module")
def emulator(server_factory: ServerFactory) -> FirestoreEmulator:
    return small_catalog.private_emulator(server_factory)


@pytest.fixture()
def catalog(tmp_path: Path) -> Iterator[tuple[CatalogStore, str]]:
    folder = "Inflight"
    template = small_catalog.build_small_catalog(tmp_path / "template", folder)
    with small_catalog.catalog_copy(template, tmp_path / "catalog.db") as store:
        yield store, folder


@pytest.mark.fault("Firestore emulator SIGKILLed with a batch commit half-sent -> cursor stays "
                   "at the last acknowledged batch; restarted, the next run resyncs: every "
                   "document once, _sync_metadata at the catalog's last change",
                   kind="killed mid-I/O")
def test_emulator_killed_inside_a_commit(emulator: FirestoreEmulator,
                                         catalog: tuple[CatalogStore, str]) -> None:
    store, folder = catalog
    with TcpRelay(emulator.port) as relay:
        fs = FirestoreResource(project=emulator.project_id,
                               emulator_host=f"127.0.0.1:{relay.port}")
        FirestoreSync(store, fs, timeout_s=30).firestore_counts(folder)  # warm the JVM up
        sent_at: list[int] = []
        committed: list[int] = []
        killed_at: list[int] = []

        def kill_inside_next_commit(total: int) -> None:
            if not killed_at and total - sent_at[-1] >= ARM_AFTER:
                emulator.kill()
                killed_at.append(total - sent_at[-1])

        def arm_after_two(batch: int, cursor: int) -> None:
            with relay.lock:
                sent_at.append(relay.to_server)
            committed.append(cursor)
            if batch == 2:
                relay.on_upstream = kill_inside_next_commit

        sync = FirestoreSync(store, fs, batch_size=BATCH, timeout_s=2.0,
                             on_commit=arm_after_two)
        with pytest.raises(BackendError) as err:
            sync.sync_partition(folder)
        # The kill runs on the relay's thread and returns once the JVM is reaped; the sync's
        # 2 s timeout can fire first on a loaded machine, so wait for the relay's record.
        deadline = time.monotonic() + 20
        while not killed_at and time.monotonic() < deadline:
            time.sleep(0.05)
        relay.on_upstream = lambda _n: None
        assert killed_at, "the emulator was not killed"
        # A whole commit of BATCH writes is several times the 4 KiB sent before the kill:
        # the kill landed inside the third commit's request, not between two.
        assert sent_at[1] - sent_at[0] > 2 * ARM_AFTER, sent_at
        assert "sync cursor stays at change" in str(err.value)
        assert store.get_state(f"firestore:{folder}")[0] == committed[1]
        assert committed[1] < store.partition_max_seq(folder)

        emulator.start()  # same port, empty again
        # The next run is a new process with new connections. This process's gRPC still
        # holds the relay's address in reconnect backoff from the outage (the commit retries
        # grew it), so the next run's part talks to the restarted emulator directly.
        fs = FirestoreResource(project=emulator.project_id,
                               emulator_host=f"127.0.0.1:{emulator.port}")
        again = FirestoreSync(store, fs, batch_size=BATCH, timeout_s=10.0)
        report = again.sync_partition(folder)
        assert report.full_resync == 1
        assert again.firestore_counts(folder) == store.live_counts(folder)
        ids = [d.id for d in fs.client().collection("files").where(
            filter=FieldFilter("partition", "==", folder)).select([]).stream()]
        assert len(ids) == len(set(ids)) == store.live_counts(folder)["files"]
        meta = fs.client().collection(META).document(meta_doc_id(folder)).get().to_dict()
        assert meta["cursor"] == store.partition_max_seq(folder)
        assert store.get_state(f"firestore:{folder}")[0] == meta["cursor"]
        assert again.sync_partition(folder).synced == 0  # caught up
