""""Downloaded once", proved at the wire: the clients talk to the real SeaweedFS S3 gateway
through `S3Relay` (a loopback HTTP hop), which counts the GetObject requests that really
reached the server. The code's own counters are checked against that count, not trusted."""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hybrid_pipelines.ai_tiers import efs_sync, models, tier_copy
from hybrid_pipelines.ai_tiers.model_promotion import Promotion, promote_model
from hybrid_pipelines.ai_tiers.models import ModelLayout
from hybrid_pipelines.defs.ai_tiers.assets import SCHEMA
from hybrid_pipelines.dev.stack.postgres import PostgresServer
from hybrid_pipelines.dev.stack.seaweedfs import SeaweedFSServer
from hybrid_pipelines.resources import JuiceFSResource, ObjectStoreResource, PostgresResource
from hybrid_pipelines_tests.ai_tiers.conftest import NOW, Space, days_ago, model_row, seed_model
from hybrid_pipelines_tests.conftest import object_store_for

from .conftest import pg_for
from .wire import S3Relay

FILES = {"config.json": b'{"layers": 2}', "weights/part-0.safetensors": os.urandom(300_000),
         "weights/part-1.safetensors": os.urandom(200_000)}


def _tree(root: Path) -> dict[str, bytes]:
    """The model's files on the hot tier, read straight from the mount."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not tier_copy.is_temp_name(p.name)}


@pytest.fixture()
def pg(private_pg: PostgresServer) -> PostgresResource:
    res = pg_for(private_pg)
    res.apply_schema(SCHEMA)
    with res.connect() as conn:
        conn.execute("TRUNCATE model_locations, efs_sync_manifest")
    return res


@pytest.fixture()
def relay(seaweed_server: SeaweedFSServer) -> Iterator[S3Relay]:
    with S3Relay(seaweed_server.s3_port) as r:
        yield r


def through(relay: S3Relay, store: ObjectStoreResource) -> ObjectStoreResource:
    return ObjectStoreResource(endpoint_url=relay.address,
                               aws_access_key_id=store.aws_access_key_id,
                               aws_secret_access_key=store.aws_secret_access_key,
                               bucket=store.bucket)


@pytest.fixture()
def space(hot_tier_resource: JuiceFSResource,
          object_store_resource: ObjectStoreResource) -> Iterator[Space]:
    sp = Space(f"wire-{uuid.uuid4().hex[:10]}", hot_tier_resource, object_store_resource)
    yield sp
    shutil.rmtree(hot_tier_resource.path(sp.name), ignore_errors=True)
    client = sp.client()
    for key in sp.keys():
        client.delete_object(Bucket=sp.store.bucket, Key=key)


def _run_together(n: int, work: Any) -> list[Any]:
    results: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run() -> None:
        try:
            results.append(work(barrier))
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(results) == n
    return results


@pytest.mark.fault("3 concurrent promotions of one model -> each object fetched once from S3 "
                   "(GetObject counted at the server's door)", kind="concurrency")
def test_concurrent_promotions_get_each_object_once(pg: PostgresResource, space: Space,
                                                    relay: S3Relay) -> None:
    size = seed_model(pg, space, "m", FILES, days_ago(45))
    layout = ModelLayout(hot_prefix=space.models, cold_prefix=space.models)
    with pg.connect(autocommit=True) as conn:  # demoted straight to the server, not counted
        models.run_demotion(conn, space.client(), space.store.bucket, space.hot, NOW, 30, None,
                            layout, log=lambda _m: None)
    assert model_row(pg, "m")[0] == "cold"
    assert relay.seen == []
    store = through(relay, space.store)

    def promote(barrier: threading.Barrier) -> Promotion:
        client = store.new_client()
        with pg.connect(autocommit=True) as conn:
            barrier.wait()
            return promote_model(conn, client, store.bucket, space.hot, "m", NOW, layout)

    results = _run_together(3, promote)
    prefix = f"{space.models}/m/"
    gets = relay.object_gets(store.bucket, prefix)
    assert gets == {prefix + rel: 1 for rel in FILES}, gets
    # The code's own counter agrees with the wire.
    assert sum(r.bytes_downloaded for r in results) == size
    assert sorted(r.already_hot for r in results) == [False, True, True]
    hot = space.hot_model_dir("m")
    assert _tree(hot) == FILES
    assert model_row(pg, "m")[0] == "hot"


@pytest.mark.fault("two overlapping S3->EFS syncs -> each object fetched once from S3 "
                   "(GetObject counted at the server's door)", kind="concurrency")
def test_overlapping_efs_syncs_get_each_object_once(pg: PostgresResource,
                                                    seaweed_server: SeaweedFSServer,
                                                    relay: S3Relay, tmp_path: Path) -> None:
    source = object_store_for(seaweed_server, bucket="models")
    direct = source.get_client()
    prefix = f"wire-efs-{uuid.uuid4().hex[:10]}/"
    files = {f"m/shard-{i:02d}.bin": os.urandom(40_000 + i) for i in range(12)}
    try:
        for rel, body in files.items():
            direct.put_object(Bucket=source.bucket, Key=prefix + rel, Body=body)
        store = through(relay, source)
        root = tmp_path / "efs" / "models"

        def sync(barrier: threading.Barrier) -> efs_sync.SyncReport:
            client = store.new_client()
            with pg.connect(autocommit=True) as conn:
                barrier.wait()
                return efs_sync.sync_to_efs(conn, client, store.bucket, root, [prefix], NOW,
                                            log=lambda _m: None)

        reports = _run_together(2, sync)
        gets = relay.object_gets(store.bucket, prefix)
        assert gets == {prefix + rel: 1 for rel in files}, gets
        assert not any(r.errors for r in reports)
        assert sum(r.downloaded for r in reports) == len(files)  # agrees with the wire
        mirrored = {p.relative_to(root / prefix).as_posix(): p.read_bytes()
                    for p in (root / prefix).rglob("*") if p.is_file()}
        assert mirrored == files
        assert not any(tier_copy.is_temp_name(p.name) for p in root.rglob("*"))
    finally:
        for obj in efs_sync.list_prefix(direct, source.bucket, prefix):
            direct.delete_object(Bucket=source.bucket, Key=obj.key)
