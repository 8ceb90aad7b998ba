"""The AI-tier jobs on the platform's tables as its init.sql made them (a database of their
own, created verbatim from platform_ddl(AI_PLATFORM)), with the AI backend simulator writing
conversations and outputs during every run: the schema steps only add, the archive leaves the
archive's SERIAL to the platform (whose own archiver statement still works afterwards), and
generated outputs keep hot_storage / cold_storage true to where the file is."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import psycopg
import pytest
from psycopg.types.json import Jsonb

from hybrid_pipelines.ai_tiers import tier_copy
from hybrid_pipelines.cli import main
from hybrid_pipelines.defs.ai_tiers.assets import (
    generated_outputs,
    user_context_exports,
    user_contexts_archive,
)
from hybrid_pipelines.defs.ai_tiers.jobs import context_reactivation_job
from hybrid_pipelines.resources import ObjectStoreResource, PostgresResource
from hybrid_pipelines.sql.ai_tiers_schema import PLATFORM_TABLES, STEPS
from hybrid_pipelines.sql.migrations import migrate, plan

from .conftest import (
    NOW,
    Space,
    days_ago,
    fresh_platform_database,
    output_tier,
    platform_running,
    seed_contexts,
    seed_output_row,
)


def _columns(conn: psycopg.Connection) -> dict[tuple[str, str], tuple[Any, ...]]:
    return {(r[0], r[1]): r[2:] for r in conn.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_name = ANY(%s)", (list(PLATFORM_TABLES),))}


def test_steps_on_verbatim_tables_only_add(postgres_resource: PostgresResource) -> None:
    # Before: ai_tiers.sql indexed generated_outputs(tier, ...) -> `column "tier" does not
    # exist`, and added none of the columns the jobs write.
    pg = fresh_platform_database(postgres_resource, "ai_platform_steps")
    with pg.connect(autocommit=True) as conn:
        before = _columns(conn)
        todo = plan(conn, STEPS)
        assert not [s for s in todo if s.id.split("/")[1] in PLATFORM_TABLES]  # tables exist
        migrate(conn, STEPS)
        after = _columns(conn)
        assert plan(conn, STEPS) == []
    assert {k: after[k] for k in before} == before  # no platform column retyped or dropped
    added = sorted(f"{t}.{c}" for t, c in set(after) - set(before))
    assert added == ["generated_outputs.cold_verified_at", "generated_outputs.path",
                     "generated_outputs.sha256", "generated_outputs.tier_changed_at",
                     "model_locations.tier_changed_at", "user_contexts_archive.updated_at"]
    assert all(after[(t, c)][0] == "timestamp without time zone" for t, c in
               set(after) - set(before) if c.endswith("_at"))


def _archive_job(pg: PostgresResource, sp: Space, now: datetime) -> dg.ExecuteInProcessResult:
    return dg.materialize([user_contexts_archive, user_context_exports], resources={
        "ai_postgres": pg, "object_store": sp.store},
        run_config={"ops": {"user_contexts_archive": {"config": {"now": now.isoformat()}},
                            "user_context_exports": {"config": {
                                "now": now.isoformat(), "prefix": sp.contexts,
                                "storage_class": ""}}}})


def _conversations(pg: PostgresResource) -> set[tuple[str, str]]:
    with pg.connect() as conn:
        rows = conn.execute(
            "SELECT user_id, conversation_id FROM user_contexts UNION ALL "
            "SELECT user_id, conversation_id FROM user_contexts_archive UNION ALL "
            "SELECT user_id, conversation_id FROM user_context_exports").fetchall()
    assert len(rows) == len(set(rows)), "a conversation in two places"
    return set(rows)


def _old_for_the_platform(pg: PostgresResource, user: str, conv: str) -> None:
    """A warm conversation the platform's archiver (real clock, 30 days) will move."""
    real_old = datetime.now(UTC) - timedelta(days=40)
    with pg.connect() as conn:
        conn.execute("INSERT INTO user_contexts (user_id, conversation_id, messages, "
                     "created_at, updated_at) VALUES (%s, %s, %s, %s, %s)",
                     (user, conv, Jsonb([{"role": "user", "content": "old"}]), real_old,
                      real_old))


def _archived(pg: PostgresResource, conv: str) -> bool:
    with pg.connect() as conn:
        return conn.execute("SELECT 1 FROM user_contexts_archive WHERE conversation_id = %s",
                            (conv,)).fetchone() is not None


def test_archive_expiry_reactivation_beside_the_platform(ai_pg: PostgresResource,
                                                         space: Space) -> None:
    # Job clock: 2025. Idle (60 days) -> archive; archived 400 days ago -> exported.
    seed_contexts(ai_pg, [("u1", f"idle{i}", [{"n": i}], days_ago(60)) for i in range(5)])
    seed_contexts(ai_pg, [("u1", "fresh", [{"n": 0}], days_ago(2))])
    with ai_pg.connect() as conn:  # archived by the platform long ago (id from its SERIAL)
        conn.execute("INSERT INTO user_contexts_archive (user_id, conversation_id, messages, "
                     "created_at, archived_at) VALUES ('u2', 'ancient', '[1]', %s, %s)",
                     (days_ago(800), days_ago(400)))
    _old_for_the_platform(ai_pg, "u3", "platform-old-1")
    convs = [("sim", f"c{i}") for i in range(4)] + [("u1", "idle0")]
    before = _conversations(ai_pg)
    with platform_running(ai_pg, conversations=convs,
                          weights={"write_context": 2, "read_context": 1}) as writer:
        result = _archive_job(ai_pg, space, NOW)
    assert result.success
    after = _conversations(ai_pg)
    assert before <= after  # nothing of the platform's lost (the writer only adds)
    with ai_pg.connect() as conn:
        archived = {r[0] for r in conn.execute(
            "SELECT conversation_id FROM user_contexts_archive WHERE user_id = 'u1'")}
        exported = conn.execute("SELECT user_id, conversation_id FROM user_context_exports"
                                ).fetchall()
    assert {f"idle{i}" for i in range(1, 5)} <= archived
    assert exported == [("u2", "ancient")]
    # The platform's own archiver still works after ours (before: unique violation on the
    # archive's id, which our archive had filled with warm ids). Every 2025 row left warm
    # is over 30 days old on the real clock, so it moves too.
    assert writer.platform_archiver() >= 1
    assert _archived(ai_pg, "platform-old-1")
    reactivate = context_reactivation_job.execute_in_process(
        run_config={"ops": {"reactivate_context": {"config": {
            "user_id": "u2", "conversation_id": "ancient", "now": NOW.isoformat()}}}},
        resources={"ai_postgres": ai_pg, "object_store": space.store})
    assert reactivate.success
    assert writer.read_context(conversation=("u2", "ancient")) == [1]
    _old_for_the_platform(ai_pg, "u3", "platform-old-2")
    assert writer.platform_archiver() >= 1  # (the reactivated one too: 2025 is long ago)
    assert _archived(ai_pg, "platform-old-2")
    writer.close()
    with ai_pg.connect() as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM user_contexts_archive ORDER BY id")]
    assert len(ids) == len(set(ids))


def _platform_output(pg: PostgresResource, sp: Space, user: str, created: datetime,
                     access: int = 0, hot: bool = True) -> tuple[str, str, bytes]:
    """An output as the platform writes it: file on the hot tier (when hot) and in the
    outputs bucket, row with hot_storage/cold_storage."""
    body = os.urandom(2500)
    oid, rel = seed_output_row(pg, user, created, "hot" if hot else "cold", len(body), access)
    if hot:
        path = sp.hot.path(f"{sp.outputs}/{rel}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    sp.put_cold(f"{sp.outputs}/{rel}", body, bucket=sp.store.outputs_bucket)
    return oid, rel, body


def _platform_columns(pg: PostgresResource) -> dict[str, tuple[Any, ...]]:
    with pg.connect() as conn:
        return {str(r[0]): r[1:] for r in conn.execute(
            "SELECT output_id, user_id, filename, output_type, created_at FROM generated_outputs")}


def test_outputs_lifecycle_beside_the_platform(ai_pg: PostgresResource, space: Space,
                                               object_store_resource: ObjectStoreResource
                                               ) -> None:
    old = _platform_output(ai_pg, space, "u1", days_ago(10))
    new = _platform_output(ai_pg, space, "u1", days_ago(1))
    popular = _platform_output(ai_pg, space, "u2", days_ago(30), access=3, hot=False)
    before = _platform_columns(ai_pg)
    with platform_running(ai_pg, s3=space.client(), outputs_bucket=space.store.outputs_bucket,
                          hot_root=str(space.hot.root()), outputs_hot_prefix=space.outputs,
                          outputs_cold_prefix=space.outputs, output_users=["u2", "u9"],
                          weights={"write_output": 1, "read_output": 2}) as writer:
        for _ in range(2):  # read twice more: 5 reads, popular enough to come back
            writer.read_output(output_id=popular[0])
        result = dg.materialize([generated_outputs], resources={
            "ai_postgres": ai_pg, "object_store": space.store, "hot_tier": space.hot},
            run_config={"ops": {"generated_outputs": {"config": {
                "now": NOW.isoformat(), "hot_prefix": space.outputs,
                "cold_prefix": space.outputs}}}})
    assert result.success
    after = _platform_columns(ai_pg)
    assert {k: after[k] for k in before} == before  # filename, output_type, ... as written
    with ai_pg.connect() as conn:
        flags = {str(r[0]): (r[1], r[2]) for r in conn.execute(
            "SELECT output_id, hot_storage, cold_storage FROM generated_outputs")}
    assert flags[old[0]] == (False, True) and output_tier(ai_pg, old[0]) == "cold"
    assert not space.hot.path(f"{space.outputs}/{old[1]}").exists()
    cold = space.output_keys("outputs/")
    assert cold[f"{space.outputs}/{old[1]}"] == old[2]
    assert flags[new[0]] == (True, True)
    assert flags[popular[0]] == (True, True)
    assert space.hot.path(f"{space.outputs}/{popular[1]}").read_bytes() == popular[2]
    # Every output the writer made is where its flags say.
    for oid, (on_hot, on_cold) in flags.items():
        if oid in (old[0], new[0], popular[0]):
            continue
        rel = [k for k in cold if oid in k]
        assert on_hot and on_cold and len(rel) == 1
        assert space.hot.path(rel[0]).exists()
    meta = result.asset_materializations_for_node("generated_outputs")[-1].metadata
    assert (meta["outputs_demoted"].value, meta["outputs_promoted"].value) == (1, 1)
    assert tier_copy.head_object(space.client(), object_store_resource.outputs_bucket,
                                 f"{space.outputs}/{new[1]}") is not None


def test_db_check_reports_and_migrate_applies(postgres_resource: PostgresResource,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    pg = fresh_platform_database(postgres_resource, "ai_platform_cli")
    for key, value in {"HP_AI_PG_HOST": pg.host, "HP_AI_PG_PORT": str(pg.port),
                       "HP_AI_PG_USER": pg.user, "HP_AI_PG_PASSWORD": pg.password,
                       "HP_AI_PG_DATABASE": pg.database}.items():
        monkeypatch.setenv(key, value)
    assert main(["db", "check", "--schema", "ai_tiers"]) == 0
    out = capsys.readouterr().out
    assert f"would add {len(STEPS) - len(PLATFORM_TABLES)} of {len(STEPS)} steps" in out
    assert "ai_tiers/generated_outputs.path" in out and "create platform table" not in out
    with pg.connect() as conn:
        assert conn.execute("SELECT to_regclass('hp_schema_migrations')").fetchone()[0] is None
    assert main(["db", "migrate", "--schema", "ai_tiers"]) == 0
    assert main(["db", "check", "--schema", "ai_tiers"]) == 0
    assert f"would add 0 of {len(STEPS)} steps" in capsys.readouterr().out
