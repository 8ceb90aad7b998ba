"""The whole chain, from files in a real Samba share to documents in the Firestore emulator,
through dg.materialize with real ffprobe: invalid media recorded with a reason, names in
any script round-trip exactly, deletions and renames propagate."""

from __future__ import annotations

import os
import sqlite3
import unicodedata
from pathlib import Path

import dagster as dg
import pytest

from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.media_catalog.firestore_sync import META, meta_doc_id
from hybrid_pipelines.media_catalog.rules.catalog_paths import file_id
from hybrid_pipelines.media_catalog.rules.firestore_ids import doc_id, player_doc_id
from hybrid_pipelines.resources import FirestoreResource, NASResource, SQLiteCatalogResource
from hybrid_pipelines_tests.media_catalog.conftest import CHAIN

from .conftest import chain_resources, instance_with, metadata_of, put, unique

NFD = unicodedata.normalize("NFD", "자막 없는 판.mp4")  # as macOS writes names
NFD_DIR = unicodedata.normalize("NFD", "해설판")
LONG = "아주 긴 제목 " * 9 + "끝.mp4"  # 250 bytes of UTF-8: at the NAS's name limit
assert len(LONG.encode()) <= 255


@pytest.fixture(scope="module")
def scenario(samba_server: SambaServer, nas_resource: NASResource,
             firestore_resource: FirestoreResource, media: dict[str, Path],
             tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = unique("WSOP")
    files = {
        f"{folder}/WSOP 2024/Main Event/Day1 - Phil Ivey vs Tom Dwan.mp4": media["mp4"],
        f"{folder}/WSOP 2024/Main Event/Day2.mkv": media["mkv"],
        f"{folder}/WSOP 2024/High Roller/Final Table.mp4": media["mp4_moov_end"],
        f"{folder}/포커 2025/결승전 - 홍길동 vs 김철수.mp4": media["mp4"],
        f"{folder}/포커 2025/{LONG}": media["mkv"],
        f"{folder}/포커 2025/100% 완료 #1 (final).mp4": media["mp4"],
        f"{folder}/Broken/random.mp4": media["random"],
        f"{folder}/Broken/truncated.mp4": media["truncated"],
        f"{folder}/Broken/zero.mp4": media["zero"],
        f"{folder}/Broken/notes.mp4": media["text"],
        f"{folder}/loose clip.mp4": media["mp4"],
        f"{folder}/포커 2025/{NFD}": media["mp4"],
        f"{folder}/{NFD_DIR}/clip.mp4": media["mp4"],
    }
    for rel, src in files.items():
        put(samba_server.share_dir, rel, src)
    put(samba_server.share_dir, f"{folder}/Broken/.DS_Store", b"junk")  # ignored
    catalog = SQLiteCatalogResource(path=str(tmp_path_factory.mktemp("chain") / "catalog.db"))
    resources = chain_resources(nas_resource, catalog, firestore_resource)
    return {"folder": folder, "files": files, "catalog": catalog, "resources": resources,
            "instance": instance_with(folder), "share": samba_server.share_dir}


def _run(s: dict) -> dg.ExecuteInJobResult:
    result = dg.materialize(CHAIN, partition_key=s["folder"], instance=s["instance"],
                            resources=s["resources"])
    assert result.success
    return result


def _file_docs(fs: FirestoreResource, folder: str) -> dict[str, dict]:
    from google.cloud.firestore_v1.base_query import FieldFilter

    q = fs.client().collection("files").where(filter=FieldFilter("partition", "==", folder))
    return {d.id: d.to_dict() for d in q.stream()}


def test_chain_from_share_to_firestore(scenario: dict,
                                       firestore_resource: FirestoreResource) -> None:
    s, folder = scenario, scenario["folder"]
    result = _run(s)
    scan = metadata_of(result, "nas_media_files")
    assert (scan["found"], scan["new"], scan["ignored"]) == (13, 13, 1)
    probes = metadata_of(result, "media_probes")
    # NFD-named files probe under their stored names
    assert (probes["probed"], probes["valid"], probes["invalid"]) == (13, 9, 4)
    assert probes["bytes_read"] < probes["bytes_total"]  # partial reads
    sync = metadata_of(result, "firestore_catalog")
    assert sync["firestore_files"] == sync["sqlite_files"] == 13
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [("sqlite_firestore_counts_match", True)]

    docs = _file_docs(firestore_resource, folder)
    by_path = {d["path"]: d for d in docs.values()}
    assert set(by_path) == set(s["files"])  # every name, byte for byte
    assert set(docs) == {file_id(p) for p in s["files"]}
    day1 = by_path[f"{folder}/WSOP 2024/Main Event/Day1 - Phil Ivey vs Tom Dwan.mp4"]
    assert (day1["status"], day1["video_codec"], day1["width"], day1["height"]) == \
        ("valid", "h264", 160, 120)
    assert day1["duration"] == pytest.approx(1.0, abs=0.1)
    # Reference fields name the readable document ids the web app looks up.
    assert (day1["catalog_id"], day1["series_id"]) == (folder, "WSOP 2024")
    assert day1["content_id"] == doc_id("Main Event/Day1 - Phil Ivey vs Tom Dwan")
    reasons = {Path(p).name: d["probe_error"] for p, d in by_path.items()
               if d["status"] == "invalid"}
    assert set(reasons) == {"random.mp4", "truncated.mp4", "zero.mp4", "notes.mp4"}
    assert reasons["zero.mp4"] == "zero-byte file"
    # Names stored decomposed (NFD, as macOS writes them) open and probe as stored.
    assert by_path[f"{folder}/포커 2025/{NFD}"]["status"] == "valid"
    assert by_path[f"{folder}/{NFD_DIR}/clip.mp4"]["status"] == "valid"
    assert all(reasons.values())
    assert by_path[f"{folder}/포커 2025/{LONG}"]["name"] == LONG

    client = firestore_resource.client()
    cat = client.collection("catalogs").document(day1["catalog_id"]).get().to_dict()
    assert (cat["name"], cat["file_count"], cat["series_count"]) == (folder, 13, 5)
    korean = client.document(f"catalogs/{folder}/series/포커 2025").get().to_dict()
    assert (korean["name"], korean["content_count"]) == ("포커 2025", 4)
    content = client.document("catalogs", folder, "series", "WSOP 2024", "contents",
                              day1["content_id"]).get().to_dict()
    assert content["title"] == "Main Event/Day1 - Phil Ivey vs Tom Dwan"
    assert content["player_ids"] == ["phil ivey", "tom dwan"]
    hong = client.collection("players").document(player_doc_id("홍길동")).get().to_dict()
    assert hong["name"] == "홍길동" and hong["content_count"] >= 1
    meta = client.collection(META).document(meta_doc_id(folder)).get().to_dict()
    with sqlite3.connect(s["catalog"].path) as conn:
        cursor = conn.execute("SELECT cursor FROM sync_state WHERE stream = ?",
                              (f"firestore:{folder}",)).fetchone()[0]
        stored = {r[0] for r in conn.execute("SELECT path FROM files")}
    assert meta["cursor"] == cursor
    assert stored == set(s["files"])

    # Nothing changed: the second run lists only directories with subdirectories and
    # writes nothing to Firestore.
    again = _run(s)
    scan2 = metadata_of(again, "nas_media_files")
    assert (scan2["new"], scan2["changed"], scan2["deleted"]) == (0, 0, 0)
    assert scan2["dirs_skipped"] >= 4
    assert metadata_of(again, "media_probes")["probed"] == 0
    assert metadata_of(again, "firestore_catalog")["synced"] == 0


def test_deletes_and_renames_reach_firestore(scenario: dict,
                                             firestore_resource: FirestoreResource) -> None:
    s, folder, share = scenario, scenario["folder"], scenario["share"]
    if not _file_docs(firestore_resource, folder):
        _run(s)
    gone = f"{folder}/WSOP 2024/High Roller/Final Table.mp4"
    old = f"{folder}/포커 2025/결승전 - 홍길동 vs 김철수.mp4"
    new = f"{folder}/포커 2025/결승전 (재편집) - 홍길동 vs 김철수.mp4"
    (share / gone).unlink()
    os.rename(share / old, share / new)  # a rename keeps size and mtime
    result = _run(s)
    scan = metadata_of(result, "nas_media_files")
    assert (scan["deleted"], scan["new"], scan["renamed"], scan["found"]) == (2, 1, 1, 12)
    assert metadata_of(result, "media_probes")["probed"] == 0  # the rename kept its probe
    docs = _file_docs(firestore_resource, folder)
    paths = {d["path"]: d for d in docs.values()}
    assert gone not in paths and old not in paths
    assert paths[new]["status"] == "valid" and paths[new]["video_codec"] == "h264"
    assert len(docs) == 12
    client = firestore_resource.client()
    hr = client.document("catalogs", paths[new]["catalog_id"], "series", "WSOP 2024",
                         "contents", doc_id("High Roller/Final Table")).get()
    assert not hr.exists  # a content left without files is deleted, not left dangling
    check = result.get_asset_check_evaluations()[0]
    assert check.passed
    with sqlite3.connect(s["catalog"].path) as conn:
        rows = dict(conn.execute("SELECT path, status FROM files WHERE path IN (?, ?)",
                                 (gone, old)).fetchall())
        renamed_to = conn.execute("SELECT renamed_to FROM files WHERE path = ?",
                                  (old,)).fetchone()[0]
    assert rows == {gone: "deleted", old: "deleted"}  # marked, not forgotten
    assert renamed_to == new
