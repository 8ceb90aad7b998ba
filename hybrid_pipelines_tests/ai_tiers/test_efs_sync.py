"""S3 -> EFS model mirror against SeaweedFS (bucket `models`) and a directory as the EFS mount."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from hybrid_pipelines.ai_tiers import efs_sync, tier_copy
from hybrid_pipelines.defs.ai_tiers.assets import efs_models
from hybrid_pipelines.defs.ai_tiers.checks import efs_files_match_manifest
from hybrid_pipelines.resources import EFSResource, ObjectStoreResource, PostgresResource

from .conftest import NOW

BUCKET = "models"


class Source:
    def __init__(self, store: ObjectStoreResource) -> None:
        self.client = store.get_client()
        self.prefix = f"efs-{uuid.uuid4().hex[:10]}/"

    def put(self, rel: str, body: bytes) -> None:
        self.client.put_object(Bucket=BUCKET, Key=self.prefix + rel, Body=body)

    def delete(self, rel: str) -> None:
        self.client.delete_object(Bucket=BUCKET, Key=self.prefix + rel)


@pytest.fixture()
def source(object_store_resource: ObjectStoreResource) -> Iterator[Source]:
    src = Source(object_store_resource)
    yield src
    for obj in efs_sync.list_prefix(src.client, BUCKET, src.prefix):
        src.client.delete_object(Bucket=BUCKET, Key=obj.key)


def _sync(pg: PostgresResource, store: ObjectStoreResource, efs: EFSResource, src: Source,
          **config: Any) -> dict[str, Any]:
    result = dg.materialize(
        [efs_models, efs_files_match_manifest],
        resources={"ai_postgres": pg, "object_store": store, "efs": efs},
        run_config={"ops": {"efs_models": {"config": {
            "now": NOW.isoformat(), "prefixes": [src.prefix], **config}}}})
    assert all(c.passed for c in result.get_asset_check_evaluations())
    mat = result.asset_materializations_for_node("efs_models")[0]
    return {k: v.value for k, v in mat.metadata.items()}


def _sync_direct(pg: PostgresResource, store: ObjectStoreResource, efs: EFSResource,
                 src: Source, **kw: Any) -> efs_sync.SyncReport:
    with pg.connect(autocommit=True) as conn:
        return efs_sync.sync_to_efs(conn, store.get_client(), BUCKET, efs.path("models"),
                                    [src.prefix], NOW, **kw)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file()}


def test_mirror_new_changed_and_tampered(ai_pg: PostgresResource,
                                         object_store_resource: ObjectStoreResource,
                                         efs_resource: EFSResource, source: Source) -> None:
    files = {"llama/config.json": b"{}", "llama/w.safetensors": os.urandom(20_000),
             "mistral/w.bin": os.urandom(5_000)}
    for rel, body in files.items():
        source.put(rel, body)
    root = efs_resource.path("models") / source.prefix
    first = _sync(ai_pg, object_store_resource, efs_resource, source)
    assert (first["objects_downloaded"], first["bytes_downloaded"]) == \
        (3, sum(map(len, files.values())))
    assert _tree(root) == files
    assert _sync_direct(ai_pg, object_store_resource, efs_resource, source).downloaded == 0
    # A changed object (same size, new ETag), a new one, and a file clobbered on the mount.
    files["mistral/w.bin"] = os.urandom(5_000)
    source.put("mistral/w.bin", files["mistral/w.bin"])
    files["llama/tokenizer.json"] = b'{"v": 1}'
    source.put("llama/tokenizer.json", files["llama/tokenizer.json"])
    (root / "llama/config.json").write_bytes(b"edited on the mount")
    third = _sync(ai_pg, object_store_resource, efs_resource, source)
    assert (third["objects_downloaded"], third["objects_unchanged"]) == (3, 1)
    assert _tree(root) == files
    # Deleted at the source: kept unless delete_extraneous.
    source.delete("llama/tokenizer.json")
    _sync_direct(ai_pg, object_store_resource, efs_resource, source)
    assert (root / "llama/tokenizer.json").exists()
    assert _sync_direct(ai_pg, object_store_resource, efs_resource, source,
                        delete_extraneous=True).deleted == 1
    del files["llama/tokenizer.json"]
    assert _tree(root) == files


@pytest.mark.fault("ai_tiers: two S3->EFS syncs overlap -> each object downloaded once",
                   kind="concurrency")
def test_two_overlapping_runs_download_each_object_once(
        ai_pg: PostgresResource, object_store_resource: ObjectStoreResource,
        efs_resource: EFSResource, source: Source) -> None:
    files = {f"m/shard-{i:02d}.bin": os.urandom(4_000) for i in range(12)}
    for rel, body in files.items():
        source.put(rel, body)
    root = efs_resource.path("models")
    reports: list[efs_sync.SyncReport] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        with ai_pg.connect(autocommit=True) as conn:
            barrier.wait()
            reports.append(efs_sync.sync_to_efs(conn, object_store_resource.get_client(),
                                                BUCKET, root, [source.prefix], NOW))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(reports) == 2 and not any(r.errors for r in reports)
    assert sum(r.downloaded for r in reports) == len(files)
    assert sum(r.unchanged for r in reports) == len(files)
    assert _tree(root / source.prefix) == files
    assert not any(tier_copy.is_temp_name(p.name) for p in root.rglob("*"))


def test_unsafe_keys_are_reported_not_written(ai_pg: PostgresResource,
                                              object_store_resource: ObjectStoreResource,
                                              efs_resource: EFSResource,
                                              source: Source) -> None:
    source.put("ok.bin", b"fine")
    source.put("bad/\x01name", b"control character")
    root = efs_resource.path("models")
    with ai_pg.connect(autocommit=True) as conn:
        report = efs_sync.sync_to_efs(conn, object_store_resource.get_client(), BUCKET, root,
                                      [source.prefix], NOW)
    assert report.downloaded == 1
    assert "cannot be a file name on EFS" in report.errors[source.prefix + "bad/\x01name"]
    assert _tree(root / source.prefix) == {"ok.bin": b"fine"}
