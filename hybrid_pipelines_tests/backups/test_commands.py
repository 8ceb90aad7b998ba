"""`hybrid-pipelines backup run|list` and `restore database|bucket|juicefs`, driven through
the argument parser add_commands builds, with the HP_* variables pointed at the test servers:
a backup, then restores into a FRESH database and a FRESH bucket compared with the source."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from hybrid_pipelines.backups import commands
from hybrid_pipelines.backups.juicefs_meta import dump_metadata, verify_metadata_dump
from hybrid_pipelines.backups.pg_tools import with_database
from hybrid_pipelines_tests.backups.conftest import (
    bucket_state,
    fill_database,
    put_objects,
    table_contents,
    unique,
)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hybrid-pipelines")
    commands.add_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def call(argv: list[str]) -> int:
    args = parse(argv)
    return int(args.func(args) or 0)


@pytest.fixture()
def env(monkeypatch, tmp_path: Path, make_database, make_bucket, bucket_name, store,
        seaweed_server,
        juicefs_volume):
    db = make_database()
    fill_database(db)
    cold, outputs = make_bucket("cold"), make_bucket("outputs")
    put_objects(store, cold)
    meta_url, meta_password = juicefs_volume
    for name, value in {
        "HP_RESOURCES_MODE": "local", "HP_PG_HOST": db.host, "HP_PG_PORT": str(db.port),
        "HP_PG_USER": db.user, "HP_PG_PASSWORD": db.password, "HP_PG_DATABASE": db.database,
        "HP_AI_PG_DATABASE": db.database,  # the same database: dumped once
        "HP_OBJECT_STORE_ENDPOINT": store.endpoint_url,
        "HP_OBJECT_STORE_ACCESS_KEY": store.aws_access_key_id,
        "HP_OBJECT_STORE_SECRET_KEY": store.aws_secret_access_key,
        "HP_OBJECT_STORE_BUCKET": cold, "HP_OBJECT_STORE_OUTPUTS_BUCKET": outputs,
        "HP_SEAWEEDFS_S3_ENDPOINT": seaweed_server.address,
        "HP_SEAWEEDFS_ACCESS_KEY": seaweed_server.access_key,
        "HP_SEAWEEDFS_SECRET_KEY": seaweed_server.secret_key,
        "HP_JUICEFS_META_URL": meta_url, "META_PASSWORD": meta_password,
        "HP_BACKUP_BUCKET": bucket_name("backups"),
    }.items():
        monkeypatch.setenv(name, value)
    empty = tmp_path / "empty.env"
    empty.write_text("")
    return {"db": db, "cold": cold, "env_file": str(empty)}


def test_backup_then_restore_from_the_command_line(env, store, bucket_name, capsys,
                                                   tmp_path: Path) -> None:
    ef = ["--env-file", env["env_file"]]
    assert call(["backup", "run", "--label", "2026-10", *ef]) == 0
    out = capsys.readouterr().out
    assert "already in this backup: dumped once" in out
    assert "backup 2026-10 in" in out and "verified; retention deleted nothing" in out
    assert call(["backup", "list", *ef]) == 0
    listed = capsys.readouterr().out
    assert "2026-10  verified" in listed
    for part in (f"postgres.{env['db'].database}", "juicefs", f"bucket:{env['cold']}"):
        assert part in listed, listed

    source = env["db"]
    name = f"postgres.{source.database}"
    fresh = unique("restored").replace("-", "_")
    assert call(["restore", "database", "--label", "2026-10", "--name", name,
                 "--target-database", fresh, *ef]) == 0
    assert "(created)" in capsys.readouterr().out
    target = with_database(source, fresh)
    try:
        assert table_contents(target) == table_contents(source)
        assert sum(len(rows) for rows in table_contents(target).values()) == 53
        # Again into the now non-empty database: refused, then allowed with --force.
        with pytest.raises(RuntimeError, match="is not empty .* --force"):
            call(["restore", "database", "--label", "2026-10", "--name", name,
                  "--target-database", fresh, *ef])
        assert call(["restore", "database", "--label", "2026-10", "--name", name,
                     "--target-database", fresh, "--force", *ef]) == 0
        assert table_contents(target) == table_contents(source)
    finally:
        with with_database(source, "postgres").connect(autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')  # noqa: S608

    fresh_bucket = bucket_name("restored")
    assert call(["restore", "bucket", "--label", "2026-10", "--bucket", env["cold"],
                 "--target-bucket", fresh_bucket, *ef]) == 0
    assert "restored 5 object(s)" in capsys.readouterr().out
    assert bucket_state(store, fresh_bucket) == bucket_state(store, env["cold"])

    restored_meta = f"sqlite3://{tmp_path / 'meta.db'}"
    assert call(["restore", "juicefs", "--label", "2026-10", "--meta-url", restored_meta,
                 *ef]) == 0
    again = dump_metadata(restored_meta, tmp_path / "again.json")
    assert verify_metadata_dump(again).entries == 6


def test_restore_of_a_label_that_is_not_there_says_what_to_do(env, store, admin_pg) -> None:
    target = unique("t").replace("-", "_")
    argv = ["restore", "database", "--label", "2019-01", "--name", "postgres.x",
            "--target-database", target, "--env-file", env["env_file"]]
    with pytest.raises(RuntimeError, match="backup bucket .* does not exist"):
        call(argv)
    store.get_client().create_bucket(Bucket=os.environ["HP_BACKUP_BUCKET"])
    with pytest.raises(RuntimeError, match="2019-01/_postgres/postgres.x.dump.*backup list"):
        call(argv)
    with admin_pg.connect() as conn:  # no empty database left behind
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (target,)).fetchone() is None
