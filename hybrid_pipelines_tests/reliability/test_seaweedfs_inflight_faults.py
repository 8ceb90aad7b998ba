"""SeaweedFS SIGKILLed while bytes are on the wire: during a multipart upload (a model
demotion) and during a GetObject (the hybrid cache's pending sync).

"In flight" is observed, not hoped for: the client talks to the private SeaweedFS through
`S3Relay` (a real loopback HTTP hop), and the relay's byte hook kills the server once a
given part or body is partly forwarded, so the kill lands with that request or response
half-way through. Nothing is patched. Afterwards the stores are read directly: the hot copy
is kept / the row is not synced, and the next run completes."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig

from hybrid_pipelines.ai_tiers import models, tier_copy
from hybrid_pipelines.ai_tiers.models import ModelLayout
from hybrid_pipelines.defs.ai_tiers.assets import SCHEMA
from hybrid_pipelines.dev.stack.postgres import PostgresServer
from hybrid_pipelines.dev.stack.process import wait_until
from hybrid_pipelines.dev.stack.seaweedfs import SeaweedFSServer
from hybrid_pipelines.hybrid_cache.runtime import probes
from hybrid_pipelines.hybrid_cache.sync import SyncSettings, is_partial, run_pending_sync
from hybrid_pipelines.hybrid_cache.uploads import upload_to_cache
from hybrid_pipelines.resources import (
    JuiceFSResource,
    NASResource,
    ObjectStoreResource,
    PostgresResource,
    SeaweedFSResource,
)
from hybrid_pipelines.resources.nas_fs import NAS_SENTINEL
from hybrid_pipelines_tests.ai_tiers.conftest import NOW, Space, days_ago, model_row, seed_model
from hybrid_pipelines_tests.conftest import ServerFactory

from .conftest import pg_for
from .wire import S3Relay

MIB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tree(root: Path) -> dict[str, bytes]:
    """The model's files on the hot tier, read straight from the mount."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not tier_copy.is_temp_name(p.name)}


@pytest.fixture(scope="module")
def private_seaweed(server_factory: ServerFactory) -> SeaweedFSServer:
    server = server_factory("seaweedfs")  # private: this module kills it
    assert isinstance(server, SeaweedFSServer)
    return server


@pytest.fixture()
def relay(private_seaweed: SeaweedFSServer) -> Iterator[S3Relay]:
    with S3Relay(private_seaweed.s3_port) as r:
        yield r


class KillOnce:
    """The relay hook: SIGKILL the server the first time `when(line, n, direction)` holds."""

    def __init__(self, server: SeaweedFSServer, when: Any) -> None:
        self.server, self.when = server, when
        self.lock = threading.Lock()
        self.at: tuple[str, int, str] | None = None

    def __call__(self, line: str, n: int, direction: str) -> None:
        with self.lock:
            if self.at is None and self.when(line, n, direction):
                self.server.kill()
                self.at = (line, n, direction)


def _restarted(server: SeaweedFSServer, client: Any, bucket: str, keys: list[str]) -> None:
    server.start()  # same data directory

    last: list[str] = ["nothing tried"]

    def serving() -> bool:
        try:
            # The gateway answering a listing first: with no keys to read, the loop below
            # alone would call a server that is still starting "serving".
            last[0] = "listing"
            client.list_objects_v2(Bucket=bucket, MaxKeys=1)
            for key in keys:
                last[0] = key
                client.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")["Body"].read()
            return True
        except Exception as exc:  # noqa: BLE001 - volume servers re-register after the gateway
            last[0] = f"{last[0]}: {exc!r}"
            return False

    try:
        wait_until(serving, 180, "SeaweedFS serving reads again", server.log_path)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\nlast failed read: {last[0]}") from None


# ---- killed mid multipart upload -------------------------------------------------------------

@pytest.fixture()
def ai_pg(private_pg: PostgresServer) -> PostgresResource:
    res = pg_for(private_pg)
    res.apply_schema(SCHEMA)
    with res.connect() as conn:
        conn.execute("TRUNCATE model_locations")
    return res


@pytest.fixture()
def space(hot_tier_resource: JuiceFSResource, private_seaweed: SeaweedFSServer,
          relay: S3Relay) -> Iterator[Space]:
    store = ObjectStoreResource(endpoint_url=relay.address,
                                aws_access_key_id=private_seaweed.access_key,
                                aws_secret_access_key=private_seaweed.secret_key,
                                bucket="cold-models", max_attempts=1, connect_timeout_s=2,
                                read_timeout_s=10)
    sp = Space(f"inflight-{uuid.uuid4().hex[:10]}", hot_tier_resource, store)
    yield sp
    shutil.rmtree(hot_tier_resource.path(sp.name), ignore_errors=True)


@pytest.mark.fault("SeaweedFS SIGKILLed while a model's multipart upload has a part in flight "
                   "-> no cold object, row hot, hot copy kept; next run demotes and verifies",
                   kind="killed mid-I/O")
def test_seaweedfs_killed_mid_multipart_upload(ai_pg: PostgresResource, space: Space,
                                               private_seaweed: SeaweedFSServer,
                                               relay: S3Relay) -> None:
    files = {"config.json": b'{"layers": 48}', "weights.safetensors": os.urandom(22 * MIB)}
    seed_model(ai_pg, space, "big", files, days_ago(45))
    # 5 MiB parts (S3's minimum), two at a time: five parts for the 22 MiB file.
    layout = ModelLayout(hot_prefix=space.models, cold_prefix=space.models,
                         transfer_config=TransferConfig(multipart_threshold=5 * MIB,
                                                        multipart_chunksize=5 * MIB,
                                                        max_concurrency=2))
    # Killed once two parts have been seen and a part body is 1 MiB through the relay.
    kill = KillOnce(private_seaweed, lambda line, n, d: d == "request" and "partNumber=" in line
                    and relay.upload_parts() >= 2 and n >= MIB)
    relay.hook = kill
    client = space.client()
    with ai_pg.connect(autocommit=True) as conn:
        try:
            report = models.run_demotion(conn, client, space.store.bucket, space.hot, NOW, 30,
                                         None, layout, log=lambda _m: None)
            failure = report.errors.get("big", "")
        except Exception as exc:  # noqa: BLE001 - boto3's upload error is what the run meets
            failure = str(exc)
    relay.hook = lambda *_a: None
    assert kill.at is not None, "SeaweedFS was not killed mid-part"
    assert "partNumber=" in kill.at[0] and kill.at[1] >= MIB
    assert "weights.safetensors" in failure, failure  # the upload cut short, by name
    assert model_row(ai_pg, "big")[0] == "hot"
    hot_dir = space.hot_model_dir("big")
    assert _tree(hot_dir) == files

    direct = private_seaweed.s3_client()
    _restarted(private_seaweed, direct, "cold-models", [])
    key = f"{space.models}/big/weights.safetensors"
    listed = direct.list_objects_v2(Bucket="cold-models", Prefix=key).get("Contents", [])
    assert listed == [], "a half-uploaded model became a visible object"

    with ai_pg.connect(autocommit=True) as conn:  # the next run, straight to the server
        again = models.run_demotion(conn, direct, "cold-models", space.hot, NOW, 30, None, layout,
                                    log=lambda _m: None)
    assert again.errors == {}
    assert model_row(ai_pg, "big")[0] == "cold"
    assert not hot_dir.exists()
    for rel, body in files.items():
        got = direct.get_object(Bucket="cold-models", Key=f"{space.models}/big/{rel}")
        assert sha(got["Body"].read()) == sha(body)


# ---- killed mid GetObject --------------------------------------------------------------------

@pytest.fixture()
def hc_pg(cache_pg: PostgresResource) -> PostgresResource:
    return cache_pg


@pytest.mark.fault("SeaweedFS SIGKILLed while the pending sync streams an object (GET body "
                   "half-way) -> row stays pending, no attempt charged, no file on the NAS; "
                   "next run syncs all", kind="killed mid-I/O")
def test_seaweedfs_killed_mid_get(hc_pg: PostgresResource, private_seaweed: SeaweedFSServer,
                                  relay: S3Relay, tmp_path: Path) -> None:
    (tmp_path / "nas").mkdir()
    (tmp_path / "nas" / NAS_SENTINEL).touch()  # a plain directory standing in for the share
    nas = NASResource(protocol="local", local_root=str(tmp_path / "nas"))
    nas_fs = nas.fs()
    direct = private_seaweed.s3_client()
    prefix = f"inflight-{uuid.uuid4().hex[:8]}"
    with hc_pg.connect(autocommit=True) as conn:
        files = {}
        for i in range(3):
            f = upload_to_cache(conn, direct, "media-cache", f"clip{i}.mov",
                                os.urandom(12 * MIB + i), key_prefix=f"{prefix}/",
                                nas_prefix=prefix)
            files[f.id] = f
    sw = SeaweedFSResource(endpoint_url=relay.address, master_url=private_seaweed.master_url,
                           aws_access_key_id=private_seaweed.access_key,
                           aws_secret_access_key=private_seaweed.secret_key,
                           bucket="media-cache", max_attempts=1, connect_timeout_s=2,
                           read_timeout_s=10)
    # Killed while the second object's body is 2 MiB through the relay (of 12 MiB).
    kill = KillOnce(private_seaweed, lambda line, n, d: d == "response"
                    and line.startswith(f"GET /media-cache/{prefix}/")
                    and len(relay.object_gets("media-cache", f"{prefix}/")) >= 2
                    and n >= 2 * MIB)
    relay.hook = kill
    with hc_pg.connect(autocommit=True) as conn:
        report = run_pending_sync(conn, sw.get_client(), "media-cache", nas_fs,
                                  SyncSettings(batch_size=5, retry_delay_s=0),
                                  probes=probes(sw, nas))
    relay.hook = lambda *_a: None
    assert kill.at is not None, "SeaweedFS was not killed mid-GET"
    # Several files in flight: the kill may land before any of them was placed.
    assert report.synced < len(files) and report.stopped_backend == "seaweedfs", report
    assert report.failed_attempts == 0
    with hc_pg.connect(autocommit=True) as conn:
        rows = {r[0]: r[1:] for r in conn.execute(
            "SELECT id, nas_status, sync_attempts, nas_path, claimed_by FROM file_metadata")}
    for file_id, (status, attempts, nas_path, claimed_by) in rows.items():
        on_nas = tmp_path / "nas" / nas_path
        if status == "synced":
            assert sha(on_nas.read_bytes()) == files[file_id].sha256
        else:
            assert (status, attempts, claimed_by) == ("pending", 0, None)
            assert not on_nas.exists()
    assert [p for p in (tmp_path / "nas").rglob("*") if is_partial(p.name)] == []

    _restarted(private_seaweed, direct, "media-cache", [f.key for f in files.values()])
    with hc_pg.connect(autocommit=True) as conn:
        again = run_pending_sync(conn, direct, "media-cache", nas_fs,
                                 SyncSettings(batch_size=5, retry_delay_s=0))
        final = conn.execute("SELECT id, nas_status, nas_path FROM file_metadata").fetchall()
    assert again.synced == len(files) - report.synced
    for file_id, status, nas_path in final:
        assert status == "synced"
        assert sha((tmp_path / "nas" / nas_path).read_bytes()) == files[file_id].sha256
    for f in files.values():
        direct.delete_object(Bucket="media-cache", Key=f.key)
