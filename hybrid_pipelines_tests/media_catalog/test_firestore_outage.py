"""Firestore going away mid-sync loses nothing: the cursor stays at the last committed batch,
and the next run leaves exactly one document per live row. A restarted emulator (empty, it
keeps data in memory) is detected by its missing _sync_metadata and resynced in full."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybrid_pipelines.dev.stack.firestore import FirestoreEmulator
from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.media_catalog.catalog_build import build_catalog
from hybrid_pipelines.media_catalog.catalog_store import CatalogStore
from hybrid_pipelines.media_catalog.firestore_sync import META, FirestoreSync, meta_doc_id
from hybrid_pipelines.media_catalog.nas_access import NASAccess
from hybrid_pipelines.media_catalog.scan import Scanner
from hybrid_pipelines.media_catalog.settings import CatalogSettings
from hybrid_pipelines.resources import (
    BackendError,
    FirestoreResource,
    NASResource,
    SQLiteCatalogResource,
)
from hybrid_pipelines.resources.sqlite_catalog import open_catalog
from hybrid_pipelines_tests.conftest import ServerFactory

from .conftest import put, unique

BATCH = 50


@pytest.fixture(scope="module")
def emulator(server_factory: ServerFactory) -> FirestoreEmulator:
    server = server_factory("firestore")  # private: this test stops and restarts it
    assert isinstance(server, FirestoreEmulator)
    return server


@pytest.fixture()
def catalog(samba_server: SambaServer, nas_resource: NASResource,
            tmp_path: Path) -> Iterator[tuple[CatalogStore, str]]:
    folder = unique("Outage")
    for s in range(3):
        for e in range(50):
            put(samba_server.share_dir, f"{folder}/Season {s}/Ep {e:02d} - 선수 {e} vs B.ts",
                b"x" * (e + 1))
    res = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    res.apply_schema("catalog")
    conn = open_catalog(res.path)
    store = CatalogStore(conn)
    settings = CatalogSettings()
    Scanner(store, NASAccess(nas_resource, (0.05,)), settings).scan(folder, folder)
    build_catalog(store, settings, folder)
    yield store, folder
    conn.close()


def _counts_match(sync: FirestoreSync, store: CatalogStore, folder: str) -> None:
    assert sync.firestore_counts(folder) == store.live_counts(folder)


@pytest.mark.fault("media catalog: Firestore emulator killed mid-sync, restarted",
                   kind="server stopped")
def test_emulator_killed_mid_sync_then_restarted(emulator: FirestoreEmulator,
                                                 catalog: tuple[CatalogStore, str]) -> None:
    store, folder = catalog
    fs = FirestoreResource(project=emulator.project_id, emulator_host=emulator.address)
    committed: list[int] = []

    def kill_after_two(batch: int, cursor: int) -> None:
        committed.append(cursor)
        if batch == 2:
            emulator.kill()

    FirestoreSync(store, fs, timeout_s=30).firestore_counts(folder)  # warm the JVM up first
    sync = FirestoreSync(store, fs, batch_size=BATCH, timeout_s=2.0, on_commit=kill_after_two)
    with pytest.raises(BackendError) as err:
        sync.sync_partition(folder)
    assert "sync cursor stays at change" in str(err.value)
    assert store.get_state(f"firestore:{folder}")[0] == committed[-1]  # not one further
    assert committed[-1] < store.partition_max_seq(folder)

    emulator.start()  # same port, empty again
    again = FirestoreSync(store, fs, batch_size=BATCH, timeout_s=10.0)
    report = again.sync_partition(folder)
    assert report.full_resync == 1
    _counts_match(again, store, folder)
    meta = fs.client().collection(META).document(meta_doc_id(folder)).get().to_dict()
    assert meta["cursor"] == store.partition_max_seq(folder)
    assert report.batches >= 6  # never more than BATCH writes per commit
    assert again.sync_partition(folder).synced == 0  # caught up


@pytest.mark.fault("media catalog: Firestore emulator frozen mid-commit", kind="server stopped")
def test_frozen_emulator_commit_is_resent_not_duplicated(
        emulator: FirestoreEmulator, catalog: tuple[CatalogStore, str]) -> None:
    store, folder = catalog
    fs = FirestoreResource(project=emulator.project_id, emulator_host=emulator.address)
    frozen: list[int] = []

    def freeze_after_two(batch: int, cursor: int) -> None:
        if batch == 2:
            frozen.append(cursor)
            os.kill(emulator.pid, signal.SIGSTOP)  # requests hang: the commit's fate unknown

    FirestoreSync(store, fs, timeout_s=30).firestore_counts(folder)  # warm the JVM up first
    sync = FirestoreSync(store, fs, batch_size=BATCH, timeout_s=2.0, on_commit=freeze_after_two)
    try:
        with pytest.raises(BackendError):
            sync.sync_partition(folder)
    finally:
        os.kill(emulator.pid, signal.SIGCONT)  # it may now apply the commit we gave up on
    assert store.get_state(f"firestore:{folder}")[0] == frozen[0]
    again = FirestoreSync(store, fs, batch_size=BATCH, timeout_s=10.0)
    report = again.sync_partition(folder)
    assert report.full_resync == 0  # metadata intact: incremental catch-up from the cursor
    _counts_match(again, store, folder)
    assert store.get_state(f"firestore:{folder}")[0] == store.partition_max_seq(folder)
