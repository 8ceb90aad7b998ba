"""Fixtures of the AI-tier tests: the session servers (PostgreSQL, SeaweedFS S3, JuiceFS hot
tier), our schema applied once, our tables emptied before each test, and a unique key/path
prefix per test so objects and hot files of different tests never meet."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from hybrid_pipelines.defs.ai_tiers.assets import SCHEMA
from hybrid_pipelines.resources import (
    JuiceFSResource,
    ObjectStoreResource,
    PostgresResource,
)

NOW = datetime(2025, 3, 31, 2, 0, tzinfo=UTC)
TABLES = ("model_locations", "model_promotion_requests", "user_contexts",
          "user_contexts_archive", "user_context_exports", "user_context_export_history",
          "context_reactivation_requests",
          "generated_outputs", "output_deletion_requests", "efs_sync_manifest")


def days_ago(days: float, now: datetime = NOW) -> datetime:
    return now - timedelta(days=days)


@pytest.fixture(scope="session")
def ai_pg(postgres_resource: PostgresResource) -> PostgresResource:
    postgres_resource.apply_schema(SCHEMA)
    return postgres_resource


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

    def keys(self, prefix: str = "") -> dict[str, bytes]:
        c = self.client()
        out = {}
        for page in c.get_paginator("list_objects_v2").paginate(
                Bucket=self.store.bucket, Prefix=f"{self.name}/{prefix}"):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = c.get_object(Bucket=self.store.bucket,
                                               Key=obj["Key"])["Body"].read()
        return out

    def hot_model_dir(self, model_id: str) -> Path:
        return self.hot.path(f"{self.models}/{model_id}")

    def put_cold(self, key: str, body: bytes, metadata: dict[str, str] | None = None) -> None:
        self.client().put_object(Bucket=self.store.bucket, Key=key, Body=body,
                                 Metadata=metadata or {})


@pytest.fixture()
def space(hot_tier_resource: JuiceFSResource,
          object_store_resource: ObjectStoreResource) -> Iterator[Space]:
    sp = Space(f"ai-{uuid.uuid4().hex[:10]}", hot_tier_resource, object_store_resource)
    yield sp
    shutil.rmtree(hot_tier_resource.path(sp.name), ignore_errors=True)
    client = sp.client()
    for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=sp.store.bucket, Prefix=sp.name + "/"):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        for key in keys:
            client.delete_object(Bucket=sp.store.bucket, Key=key["Key"])


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
