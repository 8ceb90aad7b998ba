"""The platform simulator as a stack component (dev/stack/platform.py) on a real PostgreSQL:
it creates the platform's tables exactly as its DDL does (columns, types, indexes), only where
they are missing, creates the ai_platform database when absent, and never touches a table that
exists; its writer process (real SeaweedFS, real PostgreSQL) survives failing actions and a
PostgreSQL restart, and stops on SIGTERM."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from hybrid_pipelines.dev.platform_sim.runner import SimSettings, heartbeat_age, run_loop
from hybrid_pipelines.dev.stack.platform import (
    PlatformSim,
    create_missing_tables,
    ensure_database,
    prepare_platform,
    split_statements,
    table_statements,
)
from hybrid_pipelines.dev.stack.postgres import PostgresServer
from hybrid_pipelines.dev.stack.process import pid_alive
from hybrid_pipelines.dev.stack.seaweedfs import SeaweedFSServer
from hybrid_pipelines.sql.platform import AI_PLATFORM, FILE_SERVER, platform_ddl

V, TS, BIGINT, INT = "character varying", "timestamp without time zone", "bigint", "integer"
# (type, length, nullable) of every column, as the designs' DDL declares it.
EXPECTED: dict[str, dict[str, tuple[str, int | None, str]]] = {
    "file_metadata": {
        "id": ("uuid", None, "NO"), "original_name": (V, 255, "NO"),
        "stored_name": (V, 255, "NO"), "mime_type": (V, 100, "YES"), "size": (BIGINT, None, "NO"),
        "hash": (V, 64, "YES"), "seaweed_fid": (V, 100, "YES"), "cache_status": (V, 20, "YES"),
        "nas_path": (V, 500, "YES"), "nas_status": (V, 20, "YES"),
        "sync_attempts": (INT, None, "YES"), "last_sync_at": (TS, None, "YES"),
        "synced_at": (TS, None, "YES"), "last_accessed": (TS, None, "YES"),
        "access_count": (INT, None, "YES"), "created_at": (TS, None, "YES"),
        "updated_at": (TS, None, "YES")},
    "model_locations": {
        "model_id": (V, 255, "NO"), "tier": (V, 10, "NO"), "size_bytes": (BIGINT, None, "NO"),
        "last_access": (TS, None, "NO"), "created_at": (TS, None, "NO")},
    "user_contexts": {
        "id": (INT, None, "NO"), "user_id": (V, 255, "NO"), "conversation_id": (V, 255, "NO"),
        "messages": ("jsonb", None, "NO"), "created_at": (TS, None, "NO"),
        "updated_at": (TS, None, "NO")},
    "user_contexts_archive": {
        "id": (INT, None, "NO"), "user_id": (V, 255, "NO"), "conversation_id": (V, 255, "NO"),
        "messages": ("jsonb", None, "NO"), "created_at": (TS, None, "NO"),
        "archived_at": (TS, None, "NO")},
    "generated_outputs": {
        "output_id": ("uuid", None, "NO"), "user_id": (V, 255, "NO"), "filename": (V, 500, "NO"),
        "output_type": (V, 50, "NO"), "size_bytes": (BIGINT, None, "YES"),
        "hot_storage": ("boolean", None, "YES"), "cold_storage": ("boolean", None, "YES"),
        "access_count": (INT, None, "YES"), "created_at": (TS, None, "NO"),
        "last_accessed": (TS, None, "YES")},
}
INDEXES = {
    "file_metadata": {"file_metadata_pkey", "idx_nas_status", "idx_cache_status",
                      "idx_last_accessed"},
    "model_locations": {"model_locations_pkey", "idx_model_last_access", "idx_model_tier"},
    "user_contexts": {"user_contexts_pkey", "user_contexts_user_id_conversation_id_key",
                      "idx_user_updated", "idx_updated_at"},
    "user_contexts_archive": {"user_contexts_archive_pkey", "idx_archive_user",
                              "user_contexts_archive_user_id_conversation_id_key"},
    "generated_outputs": {"generated_outputs_pkey", "idx_output_user", "idx_output_hot"},
}


@pytest.fixture()
def fresh_db(pg_server: PostgresServer) -> str:
    """A new, empty database on the session's server; its conninfo."""
    name = f"plat_{uuid.uuid4().hex[:10]}"
    assert ensure_database(pg_server.dsn(), name)
    return pg_server.dsn(name)


def columns(conninfo: str, table: str) -> dict[str, tuple[str, int | None, str]]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type, character_maximum_length, is_nullable "
            "FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s",
            (table,)).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def indexes(conninfo: str, table: str) -> set[str]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public' "
                            "AND tablename = %s", (table,)).fetchall()
    return {r[0] for r in rows}


def oid(conninfo: str, table: str) -> int | None:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT to_regclass(%s)::oid", (table,)).fetchone()
    return row[0] if row else None


def test_statements_are_the_ddl_verbatim_grouped_by_table() -> None:
    for block in (FILE_SERVER, AI_PLATFORM):
        ddl = platform_ddl(block)
        statements = split_statements(ddl)
        assert all(s in ddl for s in statements)  # each one exactly as the designs wrote it
        assert sum(len(g) for g in table_statements(ddl).values()) == len(statements)
    assert list(table_statements(platform_ddl(FILE_SERVER))) == ["file_metadata"]
    assert len(table_statements(platform_ddl(FILE_SERVER))["file_metadata"]) == 4
    assert list(table_statements(platform_ddl(AI_PLATFORM))) == [
        "model_locations", "user_contexts", "user_contexts_archive", "generated_outputs"]


@pytest.mark.parametrize("block", [FILE_SERVER, AI_PLATFORM])
def test_creates_the_platform_tables_exactly_as_the_ddl(fresh_db: str, block: str) -> None:
    created = create_missing_tables(fresh_db, platform_ddl(block))
    assert created == list(table_statements(platform_ddl(block)))
    for table in created:
        assert columns(fresh_db, table) == EXPECTED[table], table
        assert indexes(fresh_db, table) == INDEXES[table], table
    if block == FILE_SERVER:  # the platform's defaults, not ours
        with psycopg.connect(fresh_db) as conn:
            conn.execute("INSERT INTO file_metadata (id, original_name, stored_name, size) "
                         "VALUES (gen_random_uuid(), 'a.mp4', 'a.mp4', 1)")
            row = conn.execute("SELECT sync_attempts, access_count, created_at IS NOT NULL "
                               "FROM file_metadata").fetchone()
        assert row == (0, 0, True)


def test_idempotent_second_run_creates_and_changes_nothing(fresh_db: str) -> None:
    for block in (FILE_SERVER, AI_PLATFORM):
        create_missing_tables(fresh_db, platform_ddl(block))
    before = {t: oid(fresh_db, t) for t in EXPECTED}
    for block in (FILE_SERVER, AI_PLATFORM):
        assert create_missing_tables(fresh_db, platform_ddl(block)) == []
    assert {t: oid(fresh_db, t) for t in EXPECTED} == before


def test_existing_table_rows_and_indexes_are_left_as_they_are(fresh_db: str) -> None:
    """The platform created file_metadata long ago (here without one of the DDL's indexes, and
    with a column someone added) and wrote a row: none of that changes; only the missing
    tables of the other block appear."""
    row_id = uuid.uuid4()
    with psycopg.connect(fresh_db) as conn:
        conn.execute(platform_ddl(FILE_SERVER).encode())
        conn.execute("DROP INDEX idx_last_accessed")
        conn.execute("ALTER TABLE file_metadata ADD COLUMN note text")
        conn.execute("INSERT INTO file_metadata (id, original_name, stored_name, size, "
                      "nas_status, note) VALUES (%s, 'old.mp4', 'x1', 7, 'synced', 'keep')",
                      (row_id,))
        conn.execute(platform_ddl(AI_PLATFORM).split("-- 사용자 컨텍스트 (Warm)")[0].encode())
        conn.execute("INSERT INTO model_locations (model_id, tier, size_bytes) "
                     "VALUES ('sdxl', 'cold', 42)")
    cols_before = columns(fresh_db, "file_metadata")
    assert create_missing_tables(fresh_db, platform_ddl(FILE_SERVER)) == []
    assert create_missing_tables(fresh_db, platform_ddl(AI_PLATFORM)) == [
        "user_contexts", "user_contexts_archive", "generated_outputs"]
    assert columns(fresh_db, "file_metadata") == cols_before
    assert "idx_last_accessed" not in indexes(fresh_db, "file_metadata")
    with psycopg.connect(fresh_db) as conn:
        rows = conn.execute("SELECT id, stored_name, size, nas_status, note "
                            "FROM file_metadata").fetchall()
        models = conn.execute("SELECT model_id, tier, size_bytes FROM model_locations").fetchall()
    assert rows == [(row_id, "x1", 7, "synced", "keep")]
    assert models == [("sdxl", "cold", 42)]


def test_prepare_platform_creates_the_ai_database_once(pg_server: PostgresServer) -> None:
    ai_db = f"ai_platform_{uuid.uuid4().hex[:8]}"
    file_db = f"files_{uuid.uuid4().hex[:8]}"
    assert ensure_database(pg_server.dsn(), file_db)
    env = {"HP_PG_HOST": "127.0.0.1", "HP_PG_PORT": str(pg_server.port),
           "HP_PG_USER": pg_server.user, "HP_PG_PASSWORD": pg_server.password,
           "HP_PG_DATABASE": file_db, "HP_AI_PG_DATABASE": ai_db,
           "HP_SEAWEEDFS_S3_ENDPOINT": "http://127.0.0.1:1"}
    settings = SimSettings.from_env(env)
    first = prepare_platform(settings)
    assert first == {f"database {ai_db}": [ai_db], FILE_SERVER: ["file_metadata"],
                     AI_PLATFORM: list(table_statements(platform_ddl(AI_PLATFORM)))}
    assert prepare_platform(settings) == {}
    assert columns(pg_server.dsn(ai_db), "model_locations") == EXPECTED["model_locations"]
    assert columns(pg_server.dsn(file_db), "file_metadata") == EXPECTED["file_metadata"]
    assert columns(pg_server.dsn(file_db), "model_locations") == {}  # each in its own database


class _Flaky:
    """Fails its first actions (as with PostgreSQL restarting), then succeeds."""

    def __init__(self, fail: int, stop: threading.Event, stop_after: int) -> None:
        self.fail, self.stop, self.stop_after, self.ok = fail, stop, stop_after, 0

    def tick(self, rng: random.Random) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("server closed the connection unexpectedly")
        self.ok += 1
        if self.ok >= self.stop_after:
            self.stop.set()


@pytest.mark.fault("a writer's action raises -> the loop logs it and goes on; the heartbeat "
                   "moves only on success", kind="patched exception")
def test_loop_survives_failing_actions_and_heartbeats_only_on_success(tmp_path: Path) -> None:
    stop = threading.Event()
    writer = _Flaky(fail=3, stop=stop, stop_after=2)
    heartbeat = tmp_path / "heartbeat.json"
    lines: list[str] = []
    counts = run_loop([("file_server", writer)], random.Random(1), stop, 0.01, heartbeat,
                      lines.append)
    assert counts == {"file_server": 2, "errors": 3}
    assert len(lines) == 1 and "ConnectionError" in lines[0]  # the same error said once
    assert heartbeat_age(heartbeat, time.time()) is not None


def _stack_like_env(pg: PostgresServer, sw: SeaweedFSServer, hot: Path) -> dict[str, str]:
    """What stack.env gives the simulator, pointed at these servers."""
    files_db = f"files_{uuid.uuid4().hex[:8]}"
    assert ensure_database(pg.dsn(), files_db)
    s3 = {"ENDPOINT": sw.address, "ACCESS_KEY": sw.access_key, "SECRET_KEY": sw.secret_key}
    return {"HP_PG_HOST": "127.0.0.1", "HP_PG_PORT": str(pg.port), "HP_PG_USER": pg.user,
            "HP_PG_PASSWORD": pg.password, "HP_PG_DATABASE": files_db,
            "HP_AI_PG_DATABASE": "ai_platform", "HP_SEAWEEDFS_S3_ENDPOINT": sw.address,
            "HP_SEAWEEDFS_ACCESS_KEY": sw.access_key, "HP_SEAWEEDFS_SECRET_KEY": sw.secret_key,
            "HP_SEAWEEDFS_MASTER_URL": sw.master_url, "HP_SEAWEEDFS_BUCKET": "media-cache",
            **{f"HP_OBJECT_STORE_{k}": v for k, v in s3.items()},
            "HP_OBJECT_STORE_BUCKET": "cold-models",
            "HP_OBJECT_STORE_OUTPUTS_BUCKET": "generated-outputs",
            "HP_JUICEFS_MOUNT_PATH": str(hot)}


def _rows(conninfo: str, table: str) -> int:
    try:
        with psycopg.connect(conninfo, connect_timeout=2) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
    except psycopg.OperationalError:
        return -1


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


@pytest.mark.fault("PostgreSQL stopped under the platform writer -> it logs the failures, keeps "
                   "running, writes again once the server is back; SIGTERM ends it cleanly",
                   kind="server stopped")
def test_writer_process_survives_a_postgres_restart(server_factory, seaweed_server,
                                                    tmp_path: Path) -> None:
    pg = server_factory("postgres")
    assert isinstance(pg, PostgresServer)
    (tmp_path / "hot").mkdir()
    env = _stack_like_env(pg, seaweed_server, tmp_path / "hot")
    sim = PlatformSim(root=tmp_path / "platform", interval_s=0.05, stack_env=env)
    sim.start()  # creates the tables and buckets, then waits for the first good action
    try:
        files = pg.dsn(env["HP_PG_DATABASE"])
        ai = pg.dsn("ai_platform")
        _wait(lambda: _rows(files, "file_metadata") > 0 and _rows(ai, "user_contexts") > 0,
              15, "rows from both writers")
        assert "password" not in json.dumps(sim.record())  # the stack's env is not recorded
        pg.stop()
        _wait(lambda: "action failed" in sim.log_path.read_text(), 15, "a logged failure")
        assert sim.alive()
        pg.start()
        before = _rows(files, "file_metadata")
        _wait(lambda: _rows(files, "file_metadata") > before, 20, "uploads after the restart")
        assert sim.healthy()
    finally:
        pid = sim.pid
        sim.stop()
    assert pid is not None and not pid_alive(pid)
    assert "platform simulator stopped" in sim.log_path.read_text()
