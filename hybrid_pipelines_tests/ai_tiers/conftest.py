"""Fixtures of the AI-tier tests: the session servers (PostgreSQL, SeaweedFS S3, JuiceFS hot
tier); a database of their own standing in for the platform's `ai_platform`, its tables
created VERBATIM from the platform's DDL (as its AI backend created them) and only then our
schema steps on top; our tables emptied before each test, and a unique key/path prefix per
test so objects and hot files of different tests never meet."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from hybrid_pipelines.ai_tiers.rules.tier_policy import output_path
from hybrid_pipelines.defs.ai_tiers.assets import SCHEMA
from hybrid_pipelines.dev.platform_sim.ai_backend import AIBackend
from hybrid_pipelines.resources import (
    JuiceFSResource,
    ObjectStoreResource,
    PostgresResource,
)
from hybrid_pipelines.sql.platform import AI_PLATFORM, platform_ddl

NOW = datetime(2025, 3, 31, 2, 0, tzinfo=UTC)
TABLES = ("model_locations", "model_promotion_requests", "user_contexts",
          "user_contexts_archive", "user_context_exports", "user_context_export_history",
          "context_reactivation_requests",
          "generated_outputs", "output_deletion_requests", "efs_sync_manifest")


def days_ago(days: float, now: datetime = NOW) -> datetime:
    return now - timedelta(days=days)


AI_TEST_DATABASE = "ai_platform_tests"


def fresh_platform_database(admin: PostgresResource, name: str) -> PostgresResource:
    """An empty database `name` on admin's server, with the platform's AI tables created
    exactly as its init.sql does (before any schema step of ours)."""
    with admin.connect(autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # noqa: S608
        conn.execute(f'CREATE DATABASE "{name}"')  # noqa: S608
    pg = PostgresResource(host=admin.host, port=admin.port, user=admin.user,
                          password=admin.password, database=name)
    with pg.connect() as conn:
        conn.execute(platform_ddl(AI_PLATFORM).encode())  # bytes: run as written
    return pg


@pytest.fixture(scope="session")
def ai_pg(postgres_resource: PostgresResource,
          object_store_resource: ObjectStoreResource) -> PostgresResource:
    pg = fresh_platform_database(postgres_resource, AI_TEST_DATABASE)
    pg.apply_schema(SCHEMA, force=True)
    client = object_store_resource.get_client()
    have = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if object_store_resource.outputs_bucket not in have:
        client.create_bucket(Bucket=object_store_resource.outputs_bucket)
    return pg


@pytest.fixture(autouse=True)
def _empty_tables(request: pytest.FixtureRequest) -> None:
    if "ai_pg" not in request.fixturenames:
        return
    pg: PostgresResource = request.getfixturevalue("ai_pg")
    with pg.connect() as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")  # noqa: S608


@dataclass
class Space:
    """One test's corner of the shared hot tier and cold bucket."""

    name: str
    hot: JuiceFSResource
    store: ObjectStoreResource

    @property
    def models(self) -> str:
        return f"{self.name}/models"

    @property
    def outputs(self) -> str:
        return f"{self.name}/outputs"

    @property
    def contexts(self) -> str:
        return f"{self.name}/contexts"

    def client(self) -> Any:
        return self.store.get_client()

    def keys(self, prefix: str = "", bucket: str | None = None) -> dict[str, bytes]:
        c = self.client()
        bucket = bucket or self.store.bucket
        out = {}
        for page in c.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=f"{self.name}/{prefix}"):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = c.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        return out

    def output_keys(self, prefix: str = "") -> dict[str, bytes]:
        """Objects of this test in the outputs bucket (generated-outputs)."""
        return self.keys(prefix, self.store.outputs_bucket)

    def hot_model_dir(self, model_id: str) -> Path:
        return self.hot.path(f"{self.models}/{model_id}")

    def put_cold(self, key: str, body: bytes, metadata: dict[str, str] | None = None,
                 bucket: str | None = None) -> None:
        self.client().put_object(Bucket=bucket or self.store.bucket, Key=key, Body=body,
                                 Metadata=metadata or {})


@pytest.fixture()
def space(hot_tier_resource: JuiceFSResource,
          object_store_resource: ObjectStoreResource) -> Iterator[Space]:
    sp = Space(f"ai-{uuid.uuid4().hex[:10]}", hot_tier_resource, object_store_resource)
    yield sp
    shutil.rmtree(hot_tier_resource.path(sp.name), ignore_errors=True)
    client = sp.client()
    for bucket in (sp.store.bucket, sp.store.outputs_bucket):
        try:
            pages = list(client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=sp.name + "/"))
        except client.exceptions.NoSuchBucket:
            continue
        for page in pages:
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])


def seed_model(pg: PostgresResource, sp: Space, model_id: str, files: dict[str, bytes],
               last_access: datetime, tier: str = "hot") -> int:
    """A model with files on the hot tier (when hot) and its row; returns its size."""
    size = sum(len(b) for b in files.values())
    if tier == "hot":
        for rel, body in files.items():
            path = sp.hot_model_dir(model_id) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
    with pg.connect() as conn:
        conn.execute("INSERT INTO model_locations (model_id, tier, size_bytes, last_access, "
                     "created_at) VALUES (%s, %s, %s, %s, %s)",
                     (model_id, tier, size, last_access, days_ago(400)))
    return size


def model_row(pg: PostgresResource, model_id: str) -> tuple[Any, ...] | None:
    with pg.connect() as conn:
        return conn.execute("SELECT tier, size_bytes, last_access FROM model_locations "
                            "WHERE model_id = %s", (model_id,)).fetchone()


def seed_contexts(pg: PostgresResource, rows: list[tuple[str, str, list, datetime]]) -> None:
    with pg.connect() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO user_contexts (user_id, conversation_id, messages, created_at, "
            "updated_at) VALUES (%s, %s, %s, %s, %s)",
            [(u, c, Jsonb(m), ts - timedelta(days=1), ts) for u, c, m, ts in rows])


def naive(ts: datetime) -> datetime:
    """How a platform TIMESTAMP column returns an instant: UTC wall time, no zone."""
    return ts.astimezone(UTC).replace(tzinfo=None)


def seed_output_row(pg: PostgresResource, user: str, created: datetime, tier: str = "hot",
                    size: int = 0, access: int = 0, ext: str = "png") -> tuple[str, str]:
    """A generated_outputs row as the platform's AI backend inserts it (its own columns only:
    filename, output_type, hot_storage/cold_storage); returns (output_id, the relative path
    of its file at the platform's layout user_id/YYYY/MM/DD/uuid.ext)."""
    oid = str(uuid.uuid4())
    with pg.connect() as conn:
        conn.execute("INSERT INTO generated_outputs (output_id, user_id, filename, output_type, "
                     "size_bytes, hot_storage, cold_storage, access_count, created_at) "
                     "VALUES (%s, %s, %s, 'image', %s, %s, true, %s, %s)",
                     (oid, user, f"portrait-{oid[:4]}.{ext}", size, tier == "hot", access,
                      created))
    return oid, output_path(user, created, oid, ext)


def output_tier(pg: PostgresResource, oid: str) -> str | None:
    """'hot' / 'cold' as the platform's hot_storage column says; None when the row is gone."""
    with pg.connect() as conn:
        row = conn.execute("SELECT hot_storage FROM generated_outputs WHERE output_id = %s",
                           (oid,)).fetchone()
    return None if row is None else ("hot" if row[0] else "cold")


@contextmanager
def platform_running(pg: PostgresResource, interval_s: float = 0.005,
                     **kwargs: Any) -> Iterator[AIBackend]:
    """The AI backend simulator writing in a thread for the duration of the block (its
    actions aimed at `kwargs`' ids); afterwards it must have met no error of ours (a unique
    violation, a lock timeout) and must have acted."""
    writer = AIBackend(pg.conninfo(), **kwargs)
    stop = threading.Event()
    thread = threading.Thread(target=writer.run, args=(stop, interval_s, 13), daemon=True)
    thread.start()
    try:
        yield writer
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive(), "the platform writer did not stop"
    assert writer.errors == [], writer.errors[:5]
    assert sum(writer.counts.values()) > 0, "the platform writer never acted"
