"""PostgreSQL restarted in the middle of AI-tier jobs, while a batch transaction is open.

Each test parks the job inside a real transaction with `PgGate`, restarts the job's private
PostgreSQL from a thread (fast shutdown cuts every session), and then checks the stores
themselves: the open transaction left nothing behind, every committed batch is there, and
the next run finishes the job with exact row counts and files."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from psycopg.types.json import Jsonb

from hybrid_pipelines.ai_tiers import tier_copy
from hybrid_pipelines.ai_tiers.efs_sync import list_prefix
from hybrid_pipelines.defs.ai_tiers.assets import SCHEMA, efs_models, user_contexts_archive
from hybrid_pipelines.dev.stack.postgres import PostgresServer
from hybrid_pipelines.dev.stack.seaweedfs import SeaweedFSServer
from hybrid_pipelines.resources import EFSResource, ObjectStoreResource, PostgresResource
from hybrid_pipelines_tests.ai_tiers.conftest import NOW, days_ago
from hybrid_pipelines_tests.conftest import object_store_for

from .conftest import PgGate, pg_for

Arm = Callable[[PgGate, Callable[[], None]], Callable[[], None]]


@pytest.fixture()
def pg(private_pg: PostgresServer) -> Iterator[PostgresResource]:
    res = pg_for(private_pg)
    res.apply_schema(SCHEMA)
    with res.connect() as conn:
        for table in ("user_contexts_archive", "efs_sync_manifest"):  # a failed test's gate
            conn.execute(f"DROP TRIGGER IF EXISTS hp_gate ON {table}")
        conn.execute("TRUNCATE user_contexts, user_contexts_archive, efs_sync_manifest "
                     "RESTART IDENTITY")
    yield res


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    text = ""
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None:
            text += error.message
            error = error.cause
    return text


def _contexts(pg: PostgresResource) -> tuple[dict[str, Any], dict[str, Any]]:
    """conversation_id -> messages, for the warm table and the archive."""
    with pg.connect() as conn:
        warm = dict(conn.execute("SELECT conversation_id, messages FROM user_contexts").fetchall())
        arch = dict(conn.execute(
            "SELECT conversation_id, messages FROM user_contexts_archive").fetchall())
    return warm, arch


def _archive(pg: PostgresResource, batch_size: int) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [user_contexts_archive], resources={"ai_postgres": pg}, raise_on_error=False,
        run_config={"ops": {"user_contexts_archive": {"config": {
            "now": NOW.isoformat(), "batch_size": batch_size}}}})


@pytest.mark.fault("PostgreSQL restarted mid context archive -> committed batches kept, "
                   "open batch rolled back, next run completes", kind="server stopped")
def test_postgres_restart_mid_context_archive(pg: PostgresResource, private_pg: PostgresServer,
                                              when_gated: Arm) -> None:
    batch, eligible, recent = 50, 400, 60
    rows = [(f"old{i:04d}", days_ago(31 + i % 200)) for i in range(eligible)]
    rows += [(f"new{i:04d}", days_ago(i % 29)) for i in range(recent)]
    with pg.connect() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO user_contexts (user_id, conversation_id, messages, created_at, "
            "updated_at) VALUES (%s, %s, %s, %s, %s)",
            [("u", c, Jsonb([{"role": "user", "content": f"msg of {c}"}]),
              ts - timedelta(days=1), ts) for c, ts in rows])
    before = _contexts(pg)[0]

    # The third batch's INSERT reaches 150 archived rows and waits there, uncommitted.
    gate = PgGate(pg, "user_contexts_archive",
                  f"(SELECT count(*) FROM user_contexts_archive) >= {3 * batch}")  # noqa: S608
    gate.install()
    restarted = when_gated(gate, private_pg.restart)
    result = _archive(pg, batch)
    restarted()

    assert not result.success
    text = _failure_text(result)
    assert "terminating connection" in text or "server closed the connection" in text \
        or "consuming input failed" in text, text
    assert private_pg.password not in text
    warm, arch = _contexts(pg)
    # Exactly the two committed batches moved; the open one rolled back whole.
    assert len(arch) == 2 * batch
    assert len(warm) + len(arch) == eligible + recent
    assert {**warm, **arch} == before  # every conversation once, messages intact
    assert all(c.startswith("old") for c in arch)

    gate.remove()
    again = _archive(pg, batch)
    assert again.success, _failure_text(again)
    meta = {k: v.value for k, v in
            again.asset_materializations_for_node("user_contexts_archive")[0].metadata.items()}
    assert meta["contexts_moved"] == eligible - 2 * batch
    warm, arch = _contexts(pg)
    assert set(arch) == {c for c, _ in rows if c.startswith("old")}
    assert set(warm) == {c for c, _ in rows if c.startswith("new")}
    assert {**warm, **arch} == before
    assert (meta["archive_rows"], meta["warm_rows"]) == (eligible, recent)


@pytest.fixture()
def models_source(seaweed_server: SeaweedFSServer) -> Iterator[tuple[ObjectStoreResource, str]]:
    store = object_store_for(seaweed_server, bucket="models")
    prefix = f"pg-restart-{uuid.uuid4().hex[:10]}/"
    yield store, prefix
    client = store.get_client()
    for obj in list_prefix(client, "models", prefix):
        client.delete_object(Bucket="models", Key=obj.key)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file()}


@pytest.mark.fault("PostgreSQL restarted mid S3->EFS sync -> manifest and files consistent, "
                   "next run completes", kind="server stopped")
def test_postgres_restart_mid_efs_sync(pg: PostgresResource, private_pg: PostgresServer,
                                       models_source: tuple[ObjectStoreResource, str],
                                       efs_resource: EFSResource,
                                       when_gated: Arm) -> None:
    store, prefix = models_source
    client = store.get_client()
    files = {f"model-{i}/weights.bin": os.urandom(3000 + i) for i in range(10)}
    for rel, body in files.items():
        client.put_object(Bucket="models", Key=prefix + rel, Body=body)
    resources = {"ai_postgres": pg, "object_store": store, "efs": efs_resource}
    config = {"ops": {"efs_models": {"config": {"now": NOW.isoformat(), "prefixes": [prefix]}}}}

    # The fifth object's manifest row waits uncommitted; its file is already in place.
    gate = PgGate(pg, "efs_sync_manifest", "(SELECT count(*) FROM efs_sync_manifest) >= 5")
    gate.install()
    restarted = when_gated(gate, private_pg.restart)
    result = dg.materialize([efs_models], resources=resources, run_config=config,
                            raise_on_error=False)
    restarted()

    assert not result.success
    root = efs_resource.path("models")
    with pg.connect() as conn:
        manifest = conn.execute("SELECT rel_path, size_bytes FROM efs_sync_manifest "
                                "WHERE efs_root = %s", (str(root),)).fetchall()
    assert len(manifest) == 4
    mirrored = _tree(root)
    for rel, size in manifest:  # every committed row describes a complete, verified file
        assert len(mirrored[rel]) == size and mirrored[rel] == files[rel.removeprefix(prefix)]
    assert len(mirrored) == 5  # the gated object's file, without its row: fetched again

    gate.remove()
    again = dg.materialize([efs_models], resources=resources, run_config=config)
    meta = {k: v.value for k, v in
            again.asset_materializations_for_node("efs_models")[0].metadata.items()}
    assert (meta["objects_downloaded"], meta["objects_unchanged"]) == (6, 4)
    assert _tree(root / prefix) == files
    assert not [p for p in root.rglob("*") if tier_copy.is_temp_name(p.name)]
    with pg.connect() as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT rel_path) FROM efs_sync_manifest "
                            "WHERE efs_root = %s", (str(root),)).fetchone()
    assert rows == (10, 10)
