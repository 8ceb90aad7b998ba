"""Fixtures of the backup tests: scratch databases (unique names) on the session PostgreSQL,
unique buckets on the session SeaweedFS (its S3 gateway stands in for the object store), and
a JuiceFS volume of its own: metadata in a scratch PostgreSQL database, data in a SeaweedFS
bucket, files written with `juicefs sync` into jfs:// (the CLI, no FUSE mount needed, so it
runs on every machine)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hybrid_pipelines.backups.juicefs_meta import juicefs_binary
from hybrid_pipelines.backups.pg_tools import with_database
from hybrid_pipelines.dev.stack.postgres import PostgresServer
from hybrid_pipelines.dev.stack.process import LOOPBACK
from hybrid_pipelines.dev.stack.seaweedfs import SeaweedFSServer
from hybrid_pipelines.resources import ObjectStoreResource, PostgresResource
from hybrid_pipelines_tests.conftest import object_store_for, postgres_resource_for


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def admin_pg(pg_server: PostgresServer) -> PostgresResource:
    return postgres_resource_for(pg_server, database="postgres")


@pytest.fixture()
def make_database(admin_pg: PostgresResource) -> Iterator[Callable[[], PostgresResource]]:
    made: list[str] = []

    def make() -> PostgresResource:
        name = unique("bk").replace("-", "_")
        with admin_pg.connect(autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # noqa: S608 - generated name
        made.append(name)
        return with_database(admin_pg, name)

    yield make
    with admin_pg.connect(autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # noqa: S608


@pytest.fixture(scope="session")
def store(seaweed_server: SeaweedFSServer) -> ObjectStoreResource:
    return object_store_for(seaweed_server)


def drop_bucket(client, bucket: str) -> None:
    """Empty and delete a bucket. SeaweedFS gives every bucket a collection of 7 volumes of
    its own (the session server has room for about 14), so no test keeps its buckets."""
    from botocore.exceptions import ClientError

    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", []) or []]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("NoSuchBucket", "404"):
            raise


@pytest.fixture()
def bucket_name(store: ObjectStoreResource) -> Iterator[Callable[[str], str]]:
    """A unique bucket name (not created), deleted with its objects after the test: for
    buckets the code under test creates (backup buckets, restore targets)."""
    names: list[str] = []

    def name(prefix: str) -> str:
        names.append(unique(prefix))
        return names[-1]

    yield name
    for bucket in names:
        drop_bucket(store.get_client(), bucket)


@pytest.fixture()
def make_bucket(store: ObjectStoreResource, bucket_name) -> Callable[[str], str]:
    def make(prefix: str = "src") -> str:
        name = bucket_name(prefix)
        store.get_client().create_bucket(Bucket=name)
        return name

    return make


SAMPLE_ROWS = [("a.mkv", 10, {"k": 1}), ("b/c.mp4", 0, None), ("ü ñ'quote", 7, {"x": [1]})]


def fill_database(pg: PostgresResource) -> None:
    """Small but varied: a serial key, text with quotes and accents, JSONB, NULLs, a
    timestamp, an index, a second schema and a sequence."""
    with pg.connect() as conn:
        conn.execute("CREATE TABLE files (id serial PRIMARY KEY, path text NOT NULL, "
                     "size bigint, meta jsonb, seen timestamptz DEFAULT now())")
        conn.execute("CREATE INDEX files_path ON files (path)")
        for path, size, meta in SAMPLE_ROWS:
            conn.execute("INSERT INTO files (path, size, meta) VALUES (%s, %s, %s::jsonb)",
                         (path, size, None if meta is None else json.dumps(meta)))
        conn.execute("CREATE SCHEMA extra")
        conn.execute("CREATE TABLE extra.notes (n int, body text)")
        conn.execute("INSERT INTO extra.notes SELECT g, md5(g::text) FROM "
                     "generate_series(1, 50) g")


def table_contents(pg: PostgresResource) -> dict[str, list[tuple]]:
    """Every user table -> its rows, sorted (row counts and contents per table)."""
    out = {}
    with pg.connect() as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE "
            "table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', "
            "'information_schema') ORDER BY 1, 2").fetchall()
        for schema, table in tables:
            rows = conn.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()  # noqa: S608
            out[f"{schema}.{table}"] = sorted(rows, key=repr)
    return out


def put_objects(store: ObjectStoreResource, bucket: str) -> dict[str, bytes]:
    client = store.get_client()
    objects = {"a.txt": b"hello", "dir/b.bin": os.urandom(2048), "dir/deep/c": b"",
               "space name.txt": b"x" * 100}
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    # One multipart object (2 parts): its ETag ends in -2 and a copy's will not.
    mp = client.create_multipart_upload(Bucket=bucket, Key="multi.bin")
    parts, data = [], b""
    for n, chunk in enumerate((os.urandom(5 * 1024 * 1024), os.urandom(1000)), start=1):
        r = client.upload_part(Bucket=bucket, Key="multi.bin", UploadId=mp["UploadId"],
                               PartNumber=n, Body=chunk)
        parts.append({"ETag": r["ETag"], "PartNumber": n})
        data += chunk
    client.complete_multipart_upload(Bucket=bucket, Key="multi.bin", UploadId=mp["UploadId"],
                                     MultipartUpload={"Parts": parts})
    objects["multi.bin"] = data
    return objects


def bucket_state(store: ObjectStoreResource, bucket: str, prefix: str = "") -> dict:
    """key -> (size, MD5 of the bytes)."""
    import hashlib

    client = store.get_client()
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []) or []:
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            out[obj["Key"][len(prefix):]] = (obj["Size"], hashlib.md5(body).hexdigest())
    return out


@pytest.fixture()
def juicefs_volume(tmp_path: Path, make_database, seaweed_server: SeaweedFSServer,
                   make_bucket) -> tuple[str, str]:
    """(metadata URL without password, password) of a fresh JuiceFS volume holding a few
    files."""
    db = make_database()
    bucket = make_bucket("jfs")
    meta = f"postgres://{db.user}@{LOOPBACK}:{db.port}/{db.database}?sslmode=disable"
    env = {**os.environ, "META_PASSWORD": db.password, "ACCESS_KEY": seaweed_server.access_key,
           "SECRET_KEY": seaweed_server.secret_key}
    jfs = juicefs_binary()
    subprocess.run([jfs, "--quiet", "format", "--storage", "s3", "--bucket",
                    f"{seaweed_server.address}/{bucket}", "--no-update", meta, "bkvol"],
                   env=env, check=True, capture_output=True, timeout=60)
    src = tmp_path / "jfs-src"
    (src / "models" / "m1").mkdir(parents=True)
    (src / "models" / "m1" / "weights.bin").write_bytes(os.urandom(70_000))
    (src / "outputs").mkdir()
    (src / "outputs" / "o.png").write_bytes(b"png")
    subprocess.run([jfs, "--quiet", "sync", f"{src}/", "jfs://BKVOL/"],
                   env={**env, "BKVOL": meta}, check=True, capture_output=True, timeout=120)
    return meta, db.password
