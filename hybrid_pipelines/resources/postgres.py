"""PostgreSQL for the project's own tables (psycopg 3).

No connection pool: connect() opens a connection and closes it when the block ends. The
project's connections are few and long (a sensor tick, a batch of a job), and a fresh
connection always reports its real cause (refused, wrong password) at once, where a pool
would hide it behind a timeout; it also survives a restarted server without any recovery
logic, and session state (advisory locks, autocommit) never leaks from one user to the next.

Schemas (`sql/<name>.sql`) are applied once per process and database, not at every call:
a sensor that calls apply_schema every tick runs no DDL after the first."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources as pkg_resources

import dagster as dg
import psycopg
from psycopg.conninfo import make_conninfo

from hybrid_pipelines.resources.errors import Health, probe_health, require
from hybrid_pipelines.sql import schema_steps
from hybrid_pipelines.sql.migrations import migrate

ENV_VARS = ("HP_PG_HOST", "HP_PG_PORT", "HP_PG_USER", "HP_PG_PASSWORD", "HP_PG_DATABASE")
# The AI platform's database (resource key ai_postgres): its own variables, or the platform's.
AI_ENV_VARS = ("HP_AI_PG_HOST", "HP_AI_PG_PORT", "HP_AI_PG_USER", "HP_AI_PG_PASSWORD",
               "HP_AI_PG_DATABASE", "POSTGRES_HOST/PORT/USER/PASSWORD/DB")

# (server, port, user, database, schema) applied by this process. Process state, not a
# client cache: it only remembers that the idempotent DDL already ran against that database.
_APPLIED: set[tuple[str, int, str, str, str]] = set()
_APPLIED_LOCK = threading.Lock()


def explain_pg_error(exc: BaseException) -> str:
    text = str(exc)
    if "password authentication failed" in text:
        return "password authentication failed: wrong user or password"
    if "does not exist" in text and "database" in text:
        return "the database does not exist"
    if "Connection refused" in text or "connection failed" in text or "timeout" in text:
        return "cannot connect: the server is down or the host/port is wrong"
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


class PostgresResource(dg.ConfigurableResource):
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: str = ""
    database: str = "hybrid"
    connect_timeout_s: int = 5
    # Which variables an error tells the operator to check: HP_PG (the file server's database)
    # or HP_AI_PG (ai_platform).
    settings_prefix: str = "HP_PG"

    @property
    def address(self) -> str:
        return f"postgresql://{self.host}:{self.port}/{self.database}"

    def conninfo(self) -> str:
        return make_conninfo(host=self.host, port=self.port, user=self.user,
                             password=self.password, dbname=self.database,
                             connect_timeout=self.connect_timeout_s,
                             application_name="hybrid_pipelines",
                             # The platform's TIMESTAMP columns (no zone) hold UTC: with the
                             # session in UTC, now() and comparisons with timestamptz agree
                             # with what the platform's services write, whatever the server's
                             # own zone.
                             options="-c TimeZone=UTC")

    @contextmanager
    def connect(self, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        """A new connection, closed at the end of the block; without autocommit it commits
        on success and rolls back on error."""
        with psycopg.connect(self.conninfo(), autocommit=autocommit) as conn:
            yield conn

    def _schema_key(self, name: str) -> tuple[str, int, str, str, str]:
        return (self.host, self.port, self.user, self.database, name)

    def apply_schema(self, *names: str, force: bool = False) -> None:
        """Bring the database up to schema `name` the first time this process meets it, and
        skip it afterwards; `force` applies it anyway (a database recreated under a running
        process). A schema with a step list (`sql/<name>_schema.py`, see sql/migrations.py)
        is migrated online step by step; otherwise `sql/<name>.sql` (idempotent) is run."""
        with _APPLIED_LOCK:
            todo = [n for n in names if force or self._schema_key(n) not in _APPLIED]
        if not todo:
            return
        stepped = {n: steps for n in todo if (steps := schema_steps(n)) is not None}
        if stepped:
            with self.connect(autocommit=True) as conn:
                for steps in stepped.values():
                    migrate(conn, steps)
        scripts = [n for n in todo if n not in stepped]
        if scripts:
            with self.connect() as conn:
                # One lock so concurrent runs don't race on CREATE ... IF NOT EXISTS.
                conn.execute("SELECT pg_advisory_xact_lock(727274)")
                for name in scripts:
                    sql = pkg_resources.files("hybrid_pipelines.sql").joinpath(f"{name}.sql")
                    conn.execute(sql.read_text())
        # Remembered only once committed: a failed apply is tried again next time.
        with _APPLIED_LOCK:
            _APPLIED.update(self._schema_key(n) for n in todo)

    def health(self) -> Health:
        def check() -> str:
            with self.connect() as conn:
                row = conn.execute("SHOW server_version").fetchone()
            return f"PostgreSQL {row[0] if row else '?'}"

        return probe_health("PostgreSQL", self.address, check, explain_pg_error)

    def require_healthy(self) -> None:
        require(self.health(), AI_ENV_VARS if self.settings_prefix == "HP_AI_PG" else ENV_VARS)
