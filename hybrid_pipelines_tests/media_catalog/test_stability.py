"""A file still being written is not probed until it is stable, and is picked up on a later
sensor tick without a full rescan (its directory's timestamp never moves while it grows)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.media_catalog.rules.catalog_paths import file_id
from hybrid_pipelines.resources import FirestoreResource, NASResource, SQLiteCatalogResource
from hybrid_pipelines_tests.media_catalog.conftest import CHAIN

from .conftest import chain_resources, metadata_of, put, tick, unique


def test_growing_file_waits_until_stable(samba_server: SambaServer, nas_resource: NASResource,
                                         firestore_resource: FirestoreResource,
                                         media: dict[str, Path], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = unique("mc-stability")
    monkeypatch.setenv("HP_CATALOG_NAS_ROOT", root)
    # Two equal looks one tick apart make a file stable; no minimum age in this test.
    monkeypatch.setenv("HP_CATALOG_MIN_STABLE_S", "0")
    share = samba_server.share_dir
    put(share, f"{root}/Live/Show/finished.mp4", media["mp4"])
    for i in range(6):  # siblings whose directories must not be listed again
        put(share, f"{root}/Live/Other {i}/clip.mp4", media["mkv"])
    data = media["mp4_moov_end"].read_bytes()
    growing = share / root / "Live" / "Show" / "recording.mp4"
    growing.write_bytes(data[: len(data) // 2])  # a copy in progress: mtime is now
    rel = f"{root}/Live/Show/recording.mp4"

    resources = chain_resources(nas_resource, SQLiteCatalogResource(
        path=str(tmp_path / "catalog.db")), firestore_resource)
    instance = dg.DagsterInstance.ephemeral()

    def run() -> dg.ExecuteInJobResult:
        result = dg.materialize(CHAIN, partition_key="Live", instance=instance,
                                resources=resources)
        assert result.success
        return result

    def doc() -> dict:
        snap = firestore_resource.client().collection("files").document(file_id(rel)).get()
        return snap.to_dict() or {}

    requests, cursor = tick(instance, None, resources)
    assert [r.partition_key for r in requests] == ["Live"]
    first = run()
    assert metadata_of(first, "nas_media_files")["pending"] == 1
    assert metadata_of(first, "media_probes")["probed"] == 7  # all but the growing one
    assert doc()["status"] == "pending"

    show_dir = growing.parent
    before = os.stat(show_dir).st_mtime_ns
    with growing.open("ab") as f:  # the copy goes on
        f.write(data[len(data) // 2:])
    assert os.stat(show_dir).st_mtime_ns == before  # nothing a directory scan could see

    requests, cursor = tick(instance, cursor, resources)
    assert [r.partition_key for r in requests] == ["Live"]
    second = run()
    scan = metadata_of(second, "nas_media_files")
    assert (scan["growing"], scan["pending"], scan["new"]) == (1, 1, 0)
    assert scan["dirs_skipped"] >= 6  # only the pending file's directory and inner ones
    assert metadata_of(second, "media_probes")["probed"] == 0
    assert doc()["status"] == "pending" and doc()["size"] == len(data)

    requests, cursor = tick(instance, cursor, resources)  # unchanged since the last look
    assert [r.partition_key for r in requests] == ["Live"]
    third = run()
    scan = metadata_of(third, "nas_media_files")
    assert (scan["confirmed"], scan["pending"], scan["dirs_skipped"]) == (1, 0, 6)
    assert metadata_of(third, "media_probes")["valid"] == 1
    final = doc()
    assert (final["status"], final["video_codec"]) == ("valid", "h264")
    assert final["duration"] == pytest.approx(1.0, abs=0.1)

    requests, cursor = tick(instance, cursor, resources)
    assert requests == []  # settled: nothing to do
