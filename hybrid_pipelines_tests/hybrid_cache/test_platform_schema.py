"""file_metadata created VERBATIM from the file server's DDL, rows inserted as it inserts them:
before the migration every job fails (`column "sync_priority" does not exist`); `db check`
lists what we would add and changes nothing; `db migrate` adds it; then the queue works on the
platform's column types (naive UTC TIMESTAMPs, NULL nas_status, VARCHAR lengths)."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from hybrid_pipelines.cli import main
from hybrid_pipelines.hybrid_cache import metadata_store as store
from hybrid_pipelines.hybrid_cache.shared_keys import ANOTHER_ROW_NEEDS_KEY
from hybrid_pipelines.hybrid_cache.sync import SyncSettings, run_pending_sync
from hybrid_pipelines.sql.hybrid_cache_schema import STEPS
from hybrid_pipelines.sql.platform import FILE_SERVER, platform_ddl
from hybrid_pipelines_tests.conftest import postgres_resource_for

from .conftest import row

PLATFORM_INSERT = (
    "INSERT INTO file_metadata (id, original_name, stored_name, mime_type, size, hash,"
    " seaweed_fid, cache_status, nas_path, nas_status, sync_attempts, created_at, updated_at)"
    " VALUES (%s, %s, %s, 'video/mp4', %s, %s, %s, 'cached', %s, 'pending', 0, NOW(), NOW())")


@pytest.fixture()
def verbatim(pg_server):
    """A new database holding only the platform's table, created from its DDL, with one row
    written as the file server writes it."""
    name = f"fs_verbatim_{secrets.token_hex(4)}"
    admin = postgres_resource_for(pg_server, database="postgres")
    with admin.connect(autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')  # a generated name, not input
    pg = postgres_resource_for(pg_server, database=name)
    with pg.connect(autocommit=True) as c:
        c.execute(platform_ddl(FILE_SERVER))
        c.execute(PLATFORM_INSERT, (uuid.uuid4(), "a.mp4", "a.mp4", 10, "0" * 64, "3,01637037d6",
                                    "videos/a.mp4"))
    return pg


def _columns(pg) -> list[tuple]:
    with pg.connect() as c:
        return c.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default"
            " FROM information_schema.columns WHERE table_schema = 'public'"
            " ORDER BY table_name, column_name").fetchall()


def _indexes(pg) -> list[tuple]:
    with pg.connect() as c:
        return c.execute("SELECT indexname, indexdef FROM pg_indexes"
                         " WHERE schemaname = 'public' ORDER BY indexname").fetchall()


def _env_file(tmp_path, pg, monkeypatch):
    for key in ("HP_PG_HOST", "HP_PG_PORT", "HP_PG_USER", "HP_PG_PASSWORD", "HP_PG_DATABASE"):
        monkeypatch.delenv(key, raising=False)
    f = tmp_path / "stack.env"
    f.write_text(f"HP_PG_HOST={pg.host}\nHP_PG_PORT={pg.port}\nHP_PG_USER={pg.user}\n"
                 f"HP_PG_PASSWORD={pg.password}\nHP_PG_DATABASE={pg.database}\n")
    return str(f)


def test_jobs_fail_on_the_verbatim_table_until_migrated(verbatim) -> None:
    """The reported bug: the platform's table has none of our columns."""
    with verbatim.connect(autocommit=True) as c, pytest.raises(psycopg.errors.UndefinedColumn,
                                                               match="sync_priority"):
        store.claim_pending(c, "probe", 10, 60, 3)


def test_db_check_reports_and_changes_nothing_then_migrate_applies(
        verbatim, tmp_path, monkeypatch, capsys) -> None:
    env = _env_file(tmp_path, verbatim, monkeypatch)
    cols, idx = _columns(verbatim), _indexes(verbatim)

    assert main(["db", "check", "--schema", "hybrid_cache", "--env-file", env]) == 0
    out = capsys.readouterr().out
    assert f"would add {len(STEPS) - 1} of {len(STEPS)} steps" in out  # the table exists
    for what in ("file_metadata.sync_priority", "file_metadata.claimed_by",
                 "file_metadata.nas_verified_at", "index.file_metadata_pending_idx",
                 "hybrid_cache/backend_circuit"):
        assert what in out
    assert _columns(verbatim) == cols and _indexes(verbatim) == idx  # nothing changed
    with verbatim.connect() as c:
        assert c.execute("SELECT to_regclass('hp_schema_migrations')").fetchone()[0] is None

    assert main(["db", "migrate", "--schema", "hybrid_cache", "--env-file", env]) == 0
    assert f"added {len(STEPS) - 1} of" in capsys.readouterr().out
    after = {(t, c): rest for t, c, *rest in _columns(verbatim)}
    # The platform's columns keep their types; ours are added with their defaults.
    for t, c, *rest in cols:
        assert after[(t, c)] == rest
    assert after[("file_metadata", "sync_priority")][:2] == ["integer", "NO"]
    assert main(["db", "check", "--schema", "hybrid_cache", "--env-file", env]) == 0
    assert "would add 0 of" in capsys.readouterr().out


def test_platform_row_types_on_the_queue(hc_postgres, conn, s3, s3_resource, nas_fs,
                                        prefix) -> None:
    """Naive UTC timestamps, a NULL nas_status (treated as not synced), a NULL sync_attempts,
    and a default nas_path longer than VARCHAR(500) refused with the reason."""
    odd = uuid.uuid4()
    long_name = "n" * 200 + ".bin"
    data = b"platform bytes"
    key = f"{prefix}/odd.bin"
    s3.put_object(Bucket=s3_resource.bucket, Key=key, Body=data)
    conn.execute(
        "INSERT INTO file_metadata (id, original_name, stored_name, size, seaweed_fid,"
        " cache_status, nas_status, sync_attempts) VALUES (%s, 'odd', %s, %s, %s, 'cached',"
        " NULL, NULL)", (odd, long_name, len(data), key))
    before = datetime.now(UTC)
    report = run_pending_sync(conn, s3, s3_resource.bucket, nas_fs, SyncSettings(
        retry_delay_s=0, nas_prefix=f"{prefix}/{'d' * 150}/{'e' * 150}"))
    r = row(conn, odd)
    assert report.claimed == 1 and report.failed_final == 1  # NULL status was queued
    assert r["nas_status"] == "failed" and r["nas_path"] is None and r["sync_attempts"] == 1
    assert "over the 500" in r["last_error"] and "nas_prefix" in r["last_error"]
    assert r["last_sync_at"].tzinfo is None  # the platform's TIMESTAMP, UTC
    assert r["last_sync_at"].replace(tzinfo=UTC) >= before.replace(microsecond=0)
    # A NULL-status row still needs its object: eviction never treats it as synced.
    conn.execute("UPDATE file_metadata SET nas_status = NULL WHERE id = %s", (odd,))
    other = uuid.uuid4()
    conn.execute("INSERT INTO file_metadata (id, original_name, stored_name, size, seaweed_fid,"
                 " cache_status, nas_status, nas_verified_at) VALUES (%s, 'o', 'o', 1, %s,"
                 " 'cached', 'synced', now())", (other, key))
    needs = conn.execute(f"SELECT {ANOTHER_ROW_NEEDS_KEY} FROM file_metadata f"  # noqa: S608
                         " WHERE id = %s", (other,)).fetchone()[0]
    assert needs is True
