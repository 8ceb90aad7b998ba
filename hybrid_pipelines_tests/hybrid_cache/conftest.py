"""Fixtures of the hybrid-cache tests: the shared session servers (PostgreSQL, SeaweedFS,
Samba) with this domain's tables reset per test and a unique key/NAS prefix per test, plus
helpers that create uploads the way the file server does."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.hybrid_cache.runtime import prepare
from hybrid_pipelines.hybrid_cache.uploads import UploadedFile, upload_to_cache
from hybrid_pipelines.resources import NASResource, PostgresResource, SeaweedFSResource
from hybrid_pipelines.resources.nas_fs import NASFileSystem
from hybrid_pipelines_tests.conftest import postgres_resource_for, seaweedfs_resource_for


@pytest.fixture(scope="session")
def postgres_resource(pg_server: Any) -> PostgresResource:
    """This domain's own database, empty at the start: prepare() creates file_metadata from the
    file server's verbatim DDL (VARCHAR, TIMESTAMP without zone, nullable nas_status) and adds
    our columns, so every hybrid-cache test runs on the platform's table as it is."""
    name = f"hc_{secrets.token_hex(4)}"
    admin = postgres_resource_for(pg_server, database="postgres")
    with admin.connect(autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')  # a generated name, not input
    return postgres_resource_for(pg_server, database=name)


@pytest.fixture(scope="session")
def hc_postgres(postgres_resource: PostgresResource) -> PostgresResource:
    prepare(postgres_resource)
    prepare(postgres_resource)  # applying twice must be harmless
    return postgres_resource


@pytest.fixture()
def conn(hc_postgres: PostgresResource) -> Iterator[psycopg.Connection]:
    """An autocommit connection on freshly emptied hybrid-cache tables."""
    with hc_postgres.connect(autocommit=True) as c:
        c.execute("TRUNCATE file_metadata, backend_circuit, nas_path_reservations")
        yield c


@pytest.fixture(scope="session")
def s3_resource(seaweed_server: Any) -> SeaweedFSResource:
    return seaweedfs_resource_for(seaweed_server)


@pytest.fixture(scope="session")
def s3(s3_resource: SeaweedFSResource) -> Any:
    return s3_resource.get_client()


@pytest.fixture()
def prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A test's own corner of the shared bucket and share, emptied afterwards so that other
    domains' tests scanning the same share or bucket never meet our files."""
    name = f"hc-{secrets.token_hex(4)}"
    yield name
    used = set(request.fixturenames)
    try:
        if used & {"nas_resource", "nas_fs", "upload"}:
            request.getfixturevalue("nas_resource").fs().remove(name)
        if used & {"s3", "s3_resource", "upload"}:
            res = request.getfixturevalue("s3_resource")
            client = request.getfixturevalue("s3")
            keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=res.bucket, Prefix=f"{name}/") for o in page.get("Contents", [])]
            for i in range(0, len(keys), 1000):
                client.delete_objects(Bucket=res.bucket, Delete={
                    "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
    except Exception:  # noqa: BLE001 - cleanup only; a server a test killed may be gone
        pass


@pytest.fixture()
def nas_fs(nas_resource: NASResource) -> NASFileSystem:
    return nas_resource.fs()


@dataclass
class Uploader:
    conn: psycopg.Connection
    s3: Any
    bucket: str
    prefix: str

    def __call__(self, data: bytes, name: str = "file.bin", **kw: Any) -> UploadedFile:
        return upload_to_cache(self.conn, self.s3, self.bucket, name, data,
                               key_prefix=f"{self.prefix}/", nas_prefix=self.prefix, **kw)


@pytest.fixture()
def upload(conn: psycopg.Connection, s3: Any, s3_resource: SeaweedFSResource,
           prefix: str) -> Uploader:
    return Uploader(conn, s3, s3_resource.bucket, prefix)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def nas_bytes(fs: NASFileSystem, path: str) -> bytes:
    with fs.open_read(path) as fh:
        return fh.read()


def share_path(server: SambaServer, rel: str):
    """The file behind a share path, for tests that damage the NAS underneath Samba."""
    return server.share_dir / rel


def row(conn: psycopg.Connection, file_id: Any) -> dict[str, Any]:
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        found = cur.execute("SELECT * FROM file_metadata WHERE id = %s", (file_id,)).fetchone()
    assert found is not None, file_id
    return found


def partials(fs: NASFileSystem, root: str) -> list[str]:
    from hybrid_pipelines.resources.nas_fs import walk_files

    if fs.stat(root) is None:
        return []
    return [e.path for e in walk_files(fs, root) if ".partial-" in e.path]


def hc_definitions(postgres: PostgresResource, seaweedfs: SeaweedFSResource,
                   nas: NASResource):
    """The domain's real Definitions, bound to the given resources."""
    import dagster as dg

    from hybrid_pipelines.definitions import domain_definitions

    return dg.Definitions.merge(domain_definitions("hybrid_cache"), dg.Definitions(
        resources={"postgres": postgres, "seaweedfs": seaweedfs, "nas": nas}))


def run_job(defs: Any, name: str, config: dict[str, Any] | None = None):
    """Run one of the domain's jobs in process; `config` maps op name -> its config."""
    run_config = {"ops": {op: {"config": c} for op, c in (config or {}).items()}}
    result = defs.resolve_job_def(name).execute_in_process(run_config=run_config)
    assert result.success
    return result


def materializations(result: Any) -> dict[str, dict[str, Any]]:
    out = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        out[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    return out


def observations(result: Any) -> dict[str, dict[str, Any]]:
    out = {}
    for event in result.get_asset_observation_events():
        obs = event.event_specific_data.asset_observation
        out[obs.asset_key.to_user_string()] = {k: v.value for k, v in obs.metadata.items()}
    return out


class HookedRename:
    """A real NewFile whose rename into place goes through `hook(dst, rename)`."""

    def __init__(self, new: Any, hook: Any):
        self._new, self._hook, self.path = new, hook, new.path

    def rename_and_close(self, dst: str) -> None:
        self._hook(dst, lambda: self._new.rename_and_close(dst))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._new, name)


def rename_hooked(nas_fs: Any, hook: Any) -> Any:
    """The real NAS file system (same share, same session settings; the sync gives each
    worker its own copy) with every sync rename into place passed through `hook`, which
    must call the rename it is given: only the timing around it is arranged."""
    base = type(nas_fs)

    class RenameHooked(base):  # type: ignore[misc, valid-type]
        def create_new(self, path: str, **kw: Any) -> Any:
            return HookedRename(base.create_new(self, path, **kw), hook)

        def put_new(self, path: str, data: bytes) -> Any:
            new, back = base.put_new(self, path, data)
            return HookedRename(new, hook), back

    nas = object.__new__(RenameHooked)
    nas.__dict__.update(nas_fs.__dict__)
    return nas
