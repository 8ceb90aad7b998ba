"""Readable Firestore ids on the real emulator: a folder `WSOP` with series `WSOP 2024` lands at
catalogs/WSOP/series/WSOP 2024, and the one-off job moves documents written with the old
slug+hash ids (by the old code path, LegacyIds) to exactly what a sync with readable ids
writes: fields kept, reference fields naming the new ids, no old id left, a rerun (also
after a crash) changing nothing more."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hybrid_pipelines.defs.media_catalog.id_migration import firestore_id_migration
from hybrid_pipelines.dev.stack.firestore import FirestoreEmulator
from hybrid_pipelines.media_catalog.catalog_build import build_catalog
from hybrid_pipelines.media_catalog.catalog_store import CatalogStore
from hybrid_pipelines.media_catalog.firestore_migration import FirestoreIdMigration
from hybrid_pipelines.media_catalog.firestore_paths import ID_SCHEME, LegacyIds
from hybrid_pipelines.media_catalog.firestore_sync import META, FirestoreSync, meta_doc_id
from hybrid_pipelines.media_catalog.nas_access import NASAccess
from hybrid_pipelines.media_catalog.rules.catalog_paths import (
    catalog_id,
    content_id,
    player_id,
    series_id,
)
from hybrid_pipelines.media_catalog.rules.firestore_ids import doc_id
from hybrid_pipelines.media_catalog.scan import Scanner
from hybrid_pipelines.media_catalog.settings import CatalogSettings
from hybrid_pipelines.resources import BackendError, FirestoreResource, NASResource
from hybrid_pipelines.resources.sqlite_catalog import SQLiteCatalogResource, open_catalog

from .conftest import put, unique

DAY1 = "Main Event/Day1 - Phil Ivey vs Tom Dwan"
FILES = [
    f"WSOP/WSOP 2024/{DAY1}.mp4",
    "WSOP/WSOP 2024/Main Event/Day2.mkv",
    "WSOP/WSOP 2024/High Roller/Final Table - phil ivey vs 홍길동.mp4",
    "WSOP/포커 2025/결승전.mp4",
    "WSOP/__x__/clip.mp4",  # a series name Firestore refuses as an id
    "WSOP/loose clip.mp4",  # the unnamed series
    "HCL/HCL 2025/Episode 01.ts",
]
REF_FIELDS = ("catalog_id", "series_id", "content_id", "player_ids")


@pytest.fixture()
def built(local_nas_resource: NASResource, tmp_path: Path) -> Iterator[CatalogStore]:
    root = Path(local_nas_resource.local_root)
    for i, rel in enumerate(FILES):
        put(root, rel, b"x" * (i + 10))
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    catalog.apply_schema("catalog")
    conn = open_catalog(catalog.path)
    store, settings = CatalogStore(conn), CatalogSettings()
    for folder in ("WSOP", "HCL"):
        Scanner(store, NASAccess(local_nas_resource, (0.05,)), settings).scan(folder, folder)
        build_catalog(store, settings, folder)
    yield store
    conn.close()


def _project(emulator: FirestoreEmulator) -> FirestoreResource:
    # A project of its own: players and _sync_metadata/players are global to a project.
    return FirestoreResource(project=unique("demo-ids"), emulator_host=emulator.address)


def _sync(store: CatalogStore, fs: FirestoreResource, **kw: Any) -> FirestoreSync:
    sync = FirestoreSync(store, fs, timeout_s=30, **kw)
    for folder in ("WSOP", "HCL"):
        sync.sync_partition(folder)
    return sync


def _tree(fs: FirestoreResource) -> dict[str, Any]:
    """Every document path -> fields (None: a missing document that has subcollections)."""
    out: dict[str, Any] = {}

    def walk(coll: Any) -> None:
        for ref in coll.list_documents():
            snap = ref.get()
            out[ref.path] = snap.to_dict() if snap.exists else None
            for sub in ref.collections():
                walk(sub)

    for coll in fs.client().collections():
        if coll.id != META:
            walk(coll)
    return out


def test_wsop_2024_is_found_by_its_name(firestore_emulator: FirestoreEmulator,
                                        built: CatalogStore) -> None:
    fs = _project(firestore_emulator)
    sync = _sync(built, fs)
    c = fs.client()
    series = c.document("catalogs/WSOP/series/WSOP 2024").get()
    assert series.exists, "the web app looks up catalogs/WSOP/series/WSOP 2024"
    assert series.to_dict()["catalog_id"] == "WSOP"
    assert c.document("catalogs/WSOP").get().to_dict()["name"] == "WSOP"
    assert c.document("catalogs/HCL/series/HCL 2025").get().exists
    assert c.document("catalogs/WSOP/series/포커 2025/contents/결승전").get().exists
    day1 = c.document("catalogs", "WSOP", "series", "WSOP 2024", "contents", doc_id(DAY1)).get()
    assert doc_id(DAY1).startswith("Main Event%2FDay1 - Phil Ivey vs Tom Dwan~")
    assert day1.to_dict()["player_ids"] == ["phil ivey", "tom dwan"]
    assert day1.to_dict()["series_id"] == "WSOP 2024"
    assert c.document("players/phil ivey").get().to_dict()["content_count"] == 2
    assert c.document("catalogs", "WSOP", "series", doc_id("__x__")).get().exists
    assert c.document("catalogs", "WSOP", "series", doc_id("")).get().exists
    files = {d.to_dict()["path"]: d.to_dict() for d in c.collection("files").stream()}
    assert set(files) == set(FILES)
    f = files[f"WSOP/WSOP 2024/{DAY1}.mp4"]
    assert (f["catalog_id"], f["series_id"], f["content_id"]) == ("WSOP", "WSOP 2024",
                                                                  doc_id(DAY1))
    assert not c.document("catalogs", catalog_id("WSOP")).get().exists  # no slug+hash id
    meta = c.document(META, meta_doc_id("WSOP")).get().to_dict()
    assert meta["id_scheme"] == ID_SCHEME
    for folder in ("WSOP", "HCL"):
        assert sync.firestore_counts(folder) == built.live_counts(folder)


def _legacy_paths(store: CatalogStore) -> list[tuple[str, ...]]:
    old = LegacyIds()
    paths = []
    for folder in ("WSOP", "HCL"):
        rows = store.partition_entity_rows(folder)
        paths += [old.parts(k, r) for k, t in (("catalog", "catalogs"), ("series", "series"),
                                                ("content", "contents")) for r in rows[t]]
    return paths + [old.parts("player", r) for r in store.all_player_rows()]


def _assert_migrated(old_tree: dict, moved: dict, fresh: dict) -> None:
    """Every document where a readable sync puts it, with the same fields; no old id left."""
    assert moved == fresh
    entities = {p for p in old_tree if not p.startswith("files/")}
    assert not entities & set(moved)  # no document left at an old id

    def plain(tree: dict) -> Counter:
        return Counter(repr(sorted((k, v) for k, v in d.items() if k not in REF_FIELDS))
                       for d in tree.values())

    assert plain(old_tree) == plain(moved)  # the fields other than references, unchanged
    assert None not in moved.values()  # no parent left missing above moved children


def test_job_moves_old_ids_to_readable_ids(firestore_emulator: FirestoreEmulator,
                                           built: CatalogStore, tmp_path: Path) -> None:
    old_fs, fresh_fs = _project(firestore_emulator), _project(firestore_emulator)
    _sync(built, old_fs, ids=LegacyIds())  # the old code path
    c = old_fs.client()
    old_tree = _tree(old_fs)
    wsop_2024 = ("catalogs", catalog_id("WSOP"), "series", series_id("WSOP", "WSOP 2024"))
    assert "/".join(wsop_2024) in old_tree
    assert not c.document("catalogs/WSOP/series/WSOP 2024").get().exists  # the bug
    day1 = c.document(*wsop_2024, "contents", content_id("WSOP", "WSOP 2024", DAY1)).get()
    assert day1.to_dict()["player_ids"] == [player_id("Phil Ivey"), player_id("Tom Dwan")]
    with pytest.raises(BackendError, match="firestore_id_migration"):
        FirestoreSync(built, old_fs, timeout_s=30).sync_partition("WSOP")  # no second copy
    _sync(built, fresh_fs)
    fresh = _tree(fresh_fs)

    resources = {"sqlite_catalog": SQLiteCatalogResource(path=str(tmp_path / "catalog.db")),
                 "firestore": old_fs}
    config = {"ops": {"move_firestore_ids": {"config": {"batch_size": 6}}}}
    result = firestore_id_migration.execute_in_process(resources=resources, run_config=config)
    assert result.success
    assert result.output_for_node("move_firestore_ids") == len(_legacy_paths(built))
    output = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"][0]
    counts = {k: v.value for k, v in output.event_specific_data.metadata.items()}
    assert counts["catalogs_moved"] == 2 and counts["players_moved"] == 3
    assert counts["files_relinked"] == len(FILES) and counts["batches"] > 3
    assert counts["meta_marked"] == 3  # two partitions and players

    moved = _tree(old_fs)
    _assert_migrated(old_tree, moved, fresh)
    for parts in _legacy_paths(built):
        assert not c.document(*parts).get().exists
    assert {r.id for r in c.collection("catalogs").list_documents()} == {"WSOP", "HCL"}
    meta_doc = c.document(META, meta_doc_id("WSOP")).get().to_dict()
    assert meta_doc["id_scheme"] == ID_SCHEME
    assert meta_doc["cursor"] == built.get_state("firestore:WSOP")[0]  # cursor untouched

    again = firestore_id_migration.execute_in_process(resources=resources, run_config=config)
    assert again.output_for_node("move_firestore_ids") == 0
    assert _tree(old_fs) == moved  # a rerun changes nothing
    sync = FirestoreSync(built, old_fs, timeout_s=30)
    assert sync.sync_partition("WSOP").synced == 0  # caught up: metadata consistent
    assert sync.firestore_counts("WSOP") == built.live_counts("WSOP")


@pytest.mark.fault("media catalog: id migration stopped after its second batch, rerun",
                   kind="patched exception")
def test_crashed_migration_finishes_on_rerun(firestore_emulator: FirestoreEmulator,
                                             built: CatalogStore) -> None:
    old_fs, fresh_fs = _project(firestore_emulator), _project(firestore_emulator)
    _sync(built, old_fs, ids=LegacyIds())
    old_tree = _tree(old_fs)
    _sync(built, fresh_fs)

    def crash(batch: int) -> None:
        if batch == 2:
            raise RuntimeError("killed after the second batch")  # stands in for a crash

    with pytest.raises(RuntimeError):
        FirestoreIdMigration(built, old_fs, batch_size=4, on_commit=crash).run()
    half = _tree(old_fs)
    assert half != old_tree  # some documents moved
    rest = FirestoreIdMigration(built, old_fs, batch_size=4).run()
    assert 0 < rest.moved < len(_legacy_paths(built))
    assert rest.not_at_old_id == len(_legacy_paths(built)) - rest.moved  # moved before
    _assert_migrated(old_tree, _tree(old_fs), _tree(fresh_fs))
