"""Online, additive schema steps (hybrid_pipelines/sql/migrations.py) on a real PostgreSQL:
`plan` changes nothing, `migrate` applies and records, a table held by a long transaction makes
a step give up after its lock timeout (blocking nobody meanwhile) instead of waiting for ever,
and a half-built concurrent index is rebuilt."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from hybrid_pipelines.resources import PostgresResource
from hybrid_pipelines.sql.migrations import (
    MigrationBlocked,
    add_column,
    create_index,
    create_table,
    migrate,
    plan,
    recorded,
)
from hybrid_pipelines.sql.platform import AI_PLATFORM, FILE_SERVER, platform_ddl, seed_text

SHARED_SEED = Path(__file__).resolve().parents[3] / "shared" / "seed-ddl.sql"


def test_packaged_platform_ddl_is_the_shared_seed_verbatim() -> None:
    # Where the workplace's shared folder sits beside the clone, the copy must equal it byte
    # for byte; a clone on its own (CI) has only the copy, checked for both blocks below.
    if SHARED_SEED.exists():
        assert seed_text() == SHARED_SEED.read_text()
    assert "CREATE TABLE file_metadata" in platform_ddl(FILE_SERVER)
    assert "model_locations" not in platform_ddl(FILE_SERVER)
    assert "CREATE TABLE IF NOT EXISTS generated_outputs" in platform_ddl(AI_PLATFORM)


def _steps(table: str) -> list:
    domain = f"test_{table}"
    return [create_table(domain, table, f"CREATE TABLE {table} (id int PRIMARY KEY, v text)"),
            add_column(domain, table, "claimed_by", "text"),
            add_column(domain, table, "attempts", "integer NOT NULL DEFAULT 0"),
            create_index(domain, f"{table}_v_idx", table, "(v)", where="v IS NOT NULL")]


def _columns(conn: psycopg.Connection, table: str) -> set[str]:
    rows = conn.execute("SELECT column_name FROM information_schema.columns "
                        "WHERE table_name = %s", (table,)).fetchall()
    return {r[0] for r in rows}


def test_plan_changes_nothing_and_migrate_applies_and_records(
        postgres_resource: PostgresResource) -> None:
    table = f"mig_{uuid.uuid4().hex[:10]}"
    steps = _steps(table)
    with postgres_resource.connect(autocommit=True) as conn:
        assert [s.id for s in plan(conn, steps)] == [s.id for s in steps]
        assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None
        assert not set(recorded(conn)) & {s.id for s in steps}

        applied = migrate(conn, steps)
        assert [s.id for s in applied] == [s.id for s in steps]
        assert {"id", "v", "claimed_by", "attempts"} <= _columns(conn, table)
        assert {s.id for s in steps} <= set(recorded(conn))
        assert plan(conn, steps) == [] and migrate(conn, steps) == []


def test_a_table_held_by_a_long_transaction_blocks_only_for_the_lock_timeout(
        postgres_resource: PostgresResource) -> None:
    table = f"mig_{uuid.uuid4().hex[:10]}"
    steps = _steps(table)
    with postgres_resource.connect(autocommit=True) as conn:
        migrate(conn, steps[:1])
        conn.execute(sql.SQL("INSERT INTO {} VALUES (1, 'a')").format(sql.Identifier(table)))
    # A platform session in the middle of a long transaction on the table (concurrency fault).
    with psycopg.connect(postgres_resource.conninfo()) as holder:
        holder.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table))).fetchall()
        with postgres_resource.connect(autocommit=True) as conn:
            with pytest.raises(MigrationBlocked, match=r"claimed_by.*long transaction"):
                migrate(conn, steps, lock_timeout_ms=200, attempts=2, backoff_s=0.05)
            # ...and the platform's writes still go through meanwhile.
            conn.execute(sql.SQL("INSERT INTO {} VALUES (2, 'b')").format(sql.Identifier(table)))
            assert "claimed_by" not in _columns(conn, table)
        holder.rollback()
    with postgres_resource.connect(autocommit=True) as conn:
        migrate(conn, steps)
        assert plan(conn, steps) == []
        count = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        assert conn.execute(count).fetchone()[0] == 2


def test_an_invalid_half_built_index_is_rebuilt(postgres_resource: PostgresResource) -> None:
    table = f"mig_{uuid.uuid4().hex[:10]}"
    steps = _steps(table)
    index = steps[-1]
    with postgres_resource.connect(autocommit=True) as conn:
        migrate(conn, steps)
        # State edited: mark it as a concurrent build interrupted half-way leaves it.
        conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass",
                     (f"{table}_v_idx",))
        assert [s.id for s in plan(conn, steps)] == [index.id]
        assert migrate(conn, steps) == [index]
        assert plan(conn, steps) == []
