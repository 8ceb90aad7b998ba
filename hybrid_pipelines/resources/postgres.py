"""PostgreSQL for the project's own tables (psycopg 3, pooled)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources as pkg_resources

import dagster as dg
import psycopg
from psycopg.conninfo import make_conninfo
from pydantic import PrivateAttr

from hybrid_pipelines.resources.errors import Health, probe_health, require

ENV_VARS = ("HP_PG_HOST", "HP_PG_PORT", "HP_PG_USER", "HP_PG_PASSWORD", "HP_PG_DATABASE")


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
    pool_max_size: int = 8

    _pool: object = PrivateAttr(default=None)

    @property
    def address(self) -> str:
        return f"postgresql://{self.host}:{self.port}/{self.database}"

    def conninfo(self) -> str:
        return make_conninfo(host=self.host, port=self.port, user=self.user,
                             password=self.password, dbname=self.database,
                             connect_timeout=self.connect_timeout_s,
                             application_name="hybrid_pipelines")

    @contextmanager
    def connect(self, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        """A fresh connection; commits on success, rolls back on error."""
        with psycopg.connect(self.conninfo(), autocommit=autocommit) as conn:
            yield conn

    def apply_schema(self, *names: str) -> None:
        """Apply `sql/<name>.sql` files; each is idempotent (IF NOT EXISTS)."""
        with self.connect() as conn:
            # One lock so concurrent runs don't race on CREATE ... IF NOT EXISTS.
            conn.execute("SELECT pg_advisory_xact_lock(727274)")
            for name in names:
                sql = pkg_resources.files("hybrid_pipelines.sql").joinpath(f"{name}.sql")
                conn.execute(sql.read_text())

    def health(self) -> Health:
        def check() -> str:
            with self.connect() as conn:
                row = conn.execute("SHOW server_version").fetchone()
            return f"PostgreSQL {row[0] if row else '?'}"

        return probe_health("PostgreSQL", self.address, check, explain_pg_error)

    def require_healthy(self) -> None:
        require(self.health(), ENV_VARS)
