"""The platform as it already runs, simulated on the local stack (`stack up --platform`).

Two things the real platform has before our jobs ever run: its tables, created by its own
services from their designs' DDL (`sql/platform.py`, verbatim), and those services writing
them all the time. This component gives the local stack both: it creates each platform table
that is missing, statement by statement exactly as the DDL has it (a table that exists is left
exactly as it is, indexes and rows included), then runs the writer process
(`hybrid_pipelines.dev.platform_sim.runner`) that uploads, downloads, uses models and writes
conversations the way the file server and the AI backend do, until `stack down`."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from hybrid_pipelines.dev.platform_sim.runner import (
    HEARTBEAT_ENV,
    INTERVAL_ENV,
    SEED_ENV,
    SimSettings,
    heartbeat_age,
)
from hybrid_pipelines.dev.stack.base import LocalServer
from hybrid_pipelines.dev.stack.process import spawn, wait_until
from hybrid_pipelines.sql.platform import AI_PLATFORM, FILE_SERVER, platform_ddl

PLATFORM_ENV = "HP_STACK_PLATFORM"  # 1: `stack up` (and `dev`) run the platform simulator
# Serialises two creators of the platform's tables on one database (two `stack up`, a test).
PLATFORM_LOCK = (7300, 13)
_TABLE = re.compile(r"\bCREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.IGNORECASE)
_INDEX = re.compile(r"\bCREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?\w+\s+ON\s+(\w+)",
                    re.IGNORECASE)


def platform_wanted(environ: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if environ is None else environ).get(PLATFORM_ENV, "").strip().lower()
    return value in ("1", "true", "yes", "on")


def _without_comments(text: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in text.splitlines())


def split_statements(block: str) -> list[str]:
    """The block's statements, each exactly as written (the comment lines before a statement
    stay with it: PostgreSQL ignores them). The seed ends every statement with `;` at the end
    of a line and has no `;` anywhere else."""
    out: list[str] = []
    current: list[str] = []
    for line in block.splitlines():
        current.append(line)
        if _without_comments(line).rstrip().endswith(";"):
            out.append("\n".join(current).strip())
            current = []
    rest = "\n".join(current).strip()
    if _without_comments(rest).strip():
        out.append(rest)
    return out


def table_statements(block: str) -> dict[str, list[str]]:
    """table -> its CREATE TABLE and the CREATE INDEX statements on it, in the DDL's order."""
    groups: dict[str, list[str]] = {}
    for stmt in split_statements(block):
        code = _without_comments(stmt)
        m = _TABLE.search(code) or _INDEX.search(code)
        if m is None:
            raise ValueError(f"platform DDL statement on no known table: {stmt[:80]!r}")
        table = m.group(1).lower()
        if m.re is _INDEX and table not in groups:
            raise ValueError(f"platform DDL indexes {table} before creating it")
        groups.setdefault(table, []).append(stmt)
    return groups


def create_missing_tables(conninfo: str, block: str) -> list[str]:
    """Create, in one transaction, each table of `block` that the database lacks, with its
    indexes, by running the DDL's own statements; returns the tables created. Tables that
    exist are not touched (not even an index added): they are the platform's."""
    created: list[str] = []
    with psycopg.connect(conninfo) as conn:
        conn.execute("SET lock_timeout = '5s'")
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", PLATFORM_LOCK)
        for table, statements in table_statements(block).items():
            row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
            if row and row[0]:
                continue
            for stmt in statements:
                conn.execute(stmt.encode())  # bytes: run as written, no placeholder parsing
            created.append(table)
    return created


def ensure_database(admin_conninfo: str, name: str) -> bool:
    """CREATE DATABASE `name` unless it exists; True when it was created."""
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if row:
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except (pg_errors.DuplicateDatabase, pg_errors.UniqueViolation):
            return False  # another `stack up` created it between our check and our CREATE
    return True


def prepare_platform(settings: SimSettings) -> dict[str, list[str]]:
    """The platform's databases and tables as its services left them on a fresh install:
    the ai_platform database, then each block's missing tables. Returns what was created."""
    created: dict[str, list[str]] = {}
    if ensure_database(settings.ai_conninfo(dbname="postgres"), settings.ai_database):
        created[f"database {settings.ai_database}"] = [settings.ai_database]
    for block, conninfo in ((FILE_SERVER, settings.file_server_conninfo()),
                            (AI_PLATFORM, settings.ai_conninfo())):
        tables = create_missing_tables(conninfo, platform_ddl(block))
        if tables:
            created[block] = tables
    return created


def ensure_buckets(settings: SimSettings) -> None:
    """The buckets the platform's services write to exist on a platform that runs."""
    clients = {"cache": settings.s3_client, "object_store": settings.object_store_client}
    for which, buckets in settings.buckets().items():
        client = clients[which]()
        have = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        for bucket in buckets:
            if bucket not in have:
                client.create_bucket(Bucket=bucket)


def read_env_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@dataclass
class PlatformSim(LocalServer):
    """The writer process standing in for the platform's file server and AI backend."""

    interval_s: float = 1.0
    seed: int | None = None
    name: ClassVar[str] = "platform"
    stop_signal: ClassVar[int] = signal.SIGTERM
    # The stack's environment when started by `stack up` (never recorded: it holds passwords
    # that stack.env already keeps); a later restart() reads stack.env next to `root`.
    stack_env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def heartbeat_path(self) -> Path:
        return self.root / "heartbeat.json"

    @property
    def address(self) -> str:
        return f"writer, 1 action per {self.interval_s:g}s"

    def record(self) -> dict[str, Any]:
        rec = super().record()
        rec.pop("stack_env", None)
        return rec

    def _env(self) -> dict[str, str]:
        return self.stack_env or read_env_file(self.root.parent / "stack.env")

    def start(self) -> None:
        env = self._env()
        settings = SimSettings.from_env(env)
        prepare_platform(settings)
        ensure_buckets(settings)
        self.root.mkdir(parents=True, exist_ok=True)
        self.heartbeat_path.unlink(missing_ok=True)
        child_env = {**env, INTERVAL_ENV: str(self.interval_s),
                     HEARTBEAT_ENV: str(self.heartbeat_path)}
        if self.seed is not None:
            child_env[SEED_ENV] = str(self.seed)
        proc = spawn([sys.executable, "-m", "hybrid_pipelines.dev.platform_sim.runner"],
                     self.log_path, env=child_env)
        self.pid = proc.pid
        wait_until(self.healthy, 60, "platform simulator (its first writes)", self.log_path,
                   proc)

    def healthy(self) -> bool:
        """Running and writing: its last successful action is recent (a writer that only
        fails, e.g. with PostgreSQL down, turns unhealthy)."""
        if not self.alive():
            return False
        age = heartbeat_age(self.heartbeat_path, time.time())
        return age is not None and age <= max(15.0, 10 * self.interval_s)


def platform_component(state_dir: Path, previous: LocalServer | None) -> PlatformSim | None:
    """The simulator `stack up` plans when HP_STACK_PLATFORM is set (None otherwise), keeping
    the interval and seed of a previous run unless the environment names new ones."""
    if not platform_wanted():
        return None
    interval = os.environ.get(INTERVAL_ENV)
    seed = os.environ.get(SEED_ENV)
    prev = previous if isinstance(previous, PlatformSim) else None
    return PlatformSim(
        root=state_dir / "platform",
        interval_s=float(interval) if interval else (prev.interval_s if prev else 1.0),
        seed=int(seed) if seed else (prev.seed if prev else None))
