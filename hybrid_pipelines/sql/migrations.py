"""Additive, online schema changes on databases the platform already runs (no Dagster).

The platform's services own their tables and keep writing them while our jobs run, so every
change here is one that cannot break them or stall them:
- a Step only adds (a table of ours, a column with a default, an index); it never renames,
  retypes or drops anything, and never adds a constraint to a platform column;
- each Step first asks the database whether it is already in place (`present_sql`, read-only),
  so `plan()` reports exactly what `migrate()` would do and changes nothing;
- DDL runs with a short `lock_timeout` and is retried: ALTER TABLE waits behind a long
  transaction of the platform's only for that long, and meanwhile blocks nobody;
- indexes on live tables are built CONCURRENTLY (no write lock); a failed concurrent build
  leaves an INVALID index of ours, which is dropped and built again;
- every applied Step is recorded in `hp_schema_migrations` with when it was applied.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import errors as pg_errors

LEDGER = "hp_schema_migrations"
LEDGER_DDL = """CREATE TABLE IF NOT EXISTS hp_schema_migrations (
    step_id     text PRIMARY KEY,
    description text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)"""
# One migrator at a time per database (two runs starting together, or a run and `db migrate`).
MIGRATE_LOCK = (7300, 1)


@dataclass(frozen=True)
class Step:
    id: str            # unique across domains, e.g. "hybrid_cache/file_metadata.claimed_by"
    description: str   # what `db check` prints
    present_sql: str   # one row, one boolean: true when the change is already in place
    apply_sql: str     # idempotent DDL (IF NOT EXISTS)
    concurrently: bool = False  # CREATE INDEX CONCURRENTLY: must run outside a transaction
    params: tuple[object, ...] = ()  # for present_sql only


def create_table(domain: str, table: str, ddl: str, description: str = "") -> Step:
    """A table created only when missing (one of ours, or a platform table on a database
    where the platform has not created it yet, e.g. a fresh local stack)."""
    return Step(f"{domain}/{table}", description or f"create table {table}",
                "SELECT to_regclass(%s) IS NOT NULL", ddl, params=(table,))


def add_column(domain: str, table: str, column: str, type_sql: str) -> Step:
    """A column of ours on any table; `type_sql` carries its default (ADD COLUMN with a
    constant default is a catalog-only change since PostgreSQL 11: no table rewrite)."""
    return Step(
        f"{domain}/{table}.{column}", f"add column {table}.{column} {type_sql}",
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND table_name = %s AND column_name = %s)",
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {type_sql}",
        params=(table, column))


def create_index(domain: str, name: str, table: str, spec: str, where: str = "",
                 concurrently: bool = True) -> Step:
    """An index of ours, built without blocking writers; `spec` is "(cols)" or
    "USING ... (cols)". Present only when it exists and is valid."""
    clause = f" WHERE {where}" if where else ""
    how = "CONCURRENTLY " if concurrently else ""
    return Step(
        f"{domain}/index.{name}", f"create index {name} on {table} {spec}{clause}",
        "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = %s "
        "AND n.nspname = current_schema() AND i.indisvalid)",
        f"CREATE INDEX {how}IF NOT EXISTS {name} ON {table} {spec}{clause}",
        concurrently=concurrently, params=(name,))


def _present(conn: psycopg.Connection, step: Step) -> bool:
    row = conn.execute(step.present_sql, step.params).fetchone()
    return bool(row and row[0])


def plan(conn: psycopg.Connection, steps: Iterable[Step]) -> list[Step]:
    """The steps not yet in place, in order. Read-only: runs only the `present_sql` probes."""
    return [s for s in steps if not _present(conn, s)]


def _drop_invalid_index(conn: psycopg.Connection, step: Step) -> None:
    """A concurrent build that failed (lock timeout, a crash) leaves an INVALID index that
    IF NOT EXISTS would keep for ever: it is ours, so drop it and build again."""
    if not step.concurrently:
        return
    name = step.params[0]
    row = conn.execute(
        "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = %s "
        "AND n.nspname = current_schema()", (name,)).fetchone()
    if row and row[0]:
        conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


def _record(conn: psycopg.Connection, step: Step) -> None:
    conn.execute("INSERT INTO hp_schema_migrations (step_id, description) VALUES (%s, %s) "
                 "ON CONFLICT (step_id) DO NOTHING", (step.id, step.description))


def _apply_one(conn: psycopg.Connection, step: Step, lock_timeout_ms: int) -> None:
    conn.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
    try:
        if step.concurrently:
            _drop_invalid_index(conn, step)
            conn.execute(step.apply_sql)
            _record(conn, step)
        else:
            with conn.transaction():
                conn.execute(step.apply_sql)
                _record(conn, step)
    finally:
        conn.execute("RESET lock_timeout")


class MigrationBlocked(RuntimeError):
    """A step could not get its lock within the retries: something holds the table."""


def migrate(conn: psycopg.Connection, steps: Sequence[Step], *, lock_timeout_ms: int = 2000,
            attempts: int = 5, backoff_s: float = 0.5) -> list[Step]:
    """Apply what `plan` reports, step by step; returns the steps applied. `conn` must be in
    autocommit mode (concurrent index builds cannot run inside a transaction)."""
    if not conn.autocommit:
        raise ValueError("migrate() needs an autocommit connection")
    conn.execute("SELECT pg_advisory_lock(%s, %s)", MIGRATE_LOCK)
    try:
        conn.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
        conn.execute(LEDGER_DDL)
        conn.execute("RESET lock_timeout")
        applied: list[Step] = []
        for step in plan(conn, steps):
            for attempt in range(1, attempts + 1):
                try:
                    _apply_one(conn, step, lock_timeout_ms)
                    break
                except pg_errors.LockNotAvailable as exc:
                    if attempt == attempts:
                        raise MigrationBlocked(
                            f"schema step {step.id} ({step.description}) could not take its "
                            f"lock in {attempts} tries of {lock_timeout_ms} ms: a long "
                            "transaction holds the table; retry later or run `hybrid-pipelines "
                            "db migrate` when the platform is quiet") from exc
                    time.sleep(backoff_s * attempt)
            applied.append(step)
        return applied
    finally:
        if not conn.closed and not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", MIGRATE_LOCK)


def recorded(conn: psycopg.Connection) -> dict[str, str]:
    """step id -> description of every step recorded as applied (empty before the first)."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (LEDGER,)).fetchone()
    if not (row and row[0]):
        return {}
    rows = conn.execute("SELECT step_id, description FROM hp_schema_migrations").fetchall()
    return {r[0]: r[1] for r in rows}
