"""What must hold when a backup cannot be trusted: pg_dump missing, a bucket that does not
exist, a backup altered between copy and verification, a corrupt dump, a non-empty restore
target. In every case the backup is marked failed and retention deletes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_pipelines.backups import buckets, engine, pg_tools
from hybrid_pipelines.backups.engine import BackupRun, BucketSource, DatabaseSource
from hybrid_pipelines.backups.rules import layout
from hybrid_pipelines_tests.backups.conftest import (
    fill_database,
    put_objects,
    table_contents,
    unique,
)

OLD = [f"2025-{m:02d}" for m in range(1, 13)] + ["2026-01", "2026-02"]  # 14 verified backups


def seed_old_backups(client, bucket: str) -> None:
    """14 older verified backups (a manifest and one object each): with keep=12, a verified
    run in 2026-11 would delete the 3 oldest (15 verified in all)."""
    buckets.ensure_bucket(client, bucket)
    for label in OLD:
        client.put_object(Bucket=bucket, Key=layout.manifest_key(label), Body=json.dumps(
            {"label": label, "state": "done", "verified": True, "parts": []}).encode())
        client.put_object(Bucket=bucket, Key=f"{label}/cold-models/x", Body=b"x")


def test_pg_dump_missing_names_the_binary_and_the_fix(make_database, store, bucket_name,
                                                      tmp_path: Path,
                                                      monkeypatch) -> None:
    monkeypatch.setenv(pg_tools.BIN_DIR_ENV, str(tmp_path))  # a folder without pg_dump
    with pytest.raises(pg_tools.MissingBinaryError) as err:
        pg_tools.pg_binary("pg_dump")
    assert "`pg_dump` not found" in str(err.value) and "postgresql-client" in str(err.value)
    assert pg_tools.BIN_DIR_ENV in str(err.value)

    client, backup_bucket = store.get_client(), bucket_name("backups")
    seed_old_backups(client, backup_bucket)
    db = make_database()
    outcome = BackupRun(client, backup_bucket, "2026-11", databases=[
        DatabaseSource("postgres.db", db)], buckets_=[], meta=None).run()
    assert not outcome.verified and outcome.deleted == []
    assert "`pg_dump` not found" in outcome.parts[0].error
    assert engine.backup_labels(client, backup_bucket)["2026-11"] is False
    assert set(OLD) <= set(engine.backup_labels(client, backup_bucket))


def test_a_bucket_that_does_not_exist_fails_the_backup(make_bucket, bucket_name, store) -> None:
    client, backup_bucket = store.get_client(), bucket_name("backups")
    seed_old_backups(client, backup_bucket)
    good = make_bucket("src")
    put_objects(store, good)
    missing = unique("nosuch")
    outcome = BackupRun(client, backup_bucket, "2026-11", databases=[], meta=None, buckets_=[
        BucketSource(missing, client, True), BucketSource(good, client, True)]).run()
    parts = {p.name: p for p in outcome.parts}
    assert f"source bucket '{missing}' does not exist" in parts[f"bucket:{missing}"].error
    assert parts[f"bucket:{good}"].verified  # the other parts still ran
    assert not outcome.verified and outcome.deleted == []
    assert len(engine.backup_labels(client, backup_bucket)) == len(OLD) + 1

    with pytest.raises(RuntimeError, match="backup bucket .* does not exist"):
        buckets.restore_bucket(client, unique("nosuch"), "2026-11/x/", client,
                               bucket_name("target"), same_store=True)


@pytest.mark.fault("a mirrored object and a dump altered in the backup bucket between copy "
                   "and verification -> backup marked failed, retention deletes nothing; a "
                   "clean rerun verifies and only then deletes the oldest", kind="state edited")
def test_backup_altered_behind_the_jobs_back_is_not_verified(make_database, make_bucket,
                                                             bucket_name,
                                                             store) -> None:
    client, backup_bucket = store.get_client(), bucket_name("backups")
    seed_old_backups(client, backup_bucket)
    db = make_database()
    fill_database(db)
    src = make_bucket("src")
    put_objects(store, src)

    def new_run() -> BackupRun:
        return BackupRun(client, backup_bucket, "2026-11",
                         databases=[DatabaseSource("postgres.db", db)],
                         buckets_=[BucketSource(src, client, True)], meta=None)

    run = new_run()
    run.copy_parts()
    # Behind the job's back: same key and size, other bytes; and a dump overwritten.
    prefix = layout.mirror_prefix("2026-11", src)
    client.put_object(Bucket=backup_bucket, Key=prefix + "a.txt", Body=b"HELLO")
    client.put_object(Bucket=backup_bucket, Key=layout.dump_key("2026-11", "postgres.db"),
                      Body=b"not a dump")
    run.verify_parts()
    outcome = run.finish()

    parts = {p.name: p for p in outcome.parts}
    assert "a.txt: ETag" in parts[f"bucket:{src}"].problems[0]
    assert "uploaded as" in parts["postgres.db"].problems[0]
    assert not outcome.verified and outcome.deleted == []
    manifest = engine.read_manifest(client, backup_bucket, "2026-11")
    assert manifest is not None and manifest["verified"] is False
    assert all(engine.backup_labels(client, backup_bucket)[m] for m in OLD)

    # The next clean run replaces the month's backup, verifies, and retention deletes the
    # oldest three (15 verified, keep 12).
    outcome = new_run().run()
    assert outcome.verified, [p.summary() for p in outcome.parts]
    assert outcome.deleted == ["2025-01", "2025-02", "2025-03"]
    left = engine.backup_labels(client, backup_bucket)
    assert sorted(left) == [*OLD[3:], "2026-11"] and all(left.values())
    assert not buckets.listing(client, backup_bucket, "2025-01/")


def test_a_corrupt_dump_is_refused_by_pg_restore(make_database, tmp_path: Path) -> None:
    db = make_database()
    fill_database(db)
    facts = pg_tools.dump_database(db, tmp_path / "d.dump")
    assert facts.tables == ["extra.notes", "public.files"]
    truncated = tmp_path / "t.dump"
    truncated.write_bytes(facts.path.read_bytes()[:200])
    with pytest.raises(RuntimeError, match="pg_restore --list t.dump failed"):
        pg_tools.list_dump_tables(truncated)


def test_restore_refuses_a_non_empty_target_unless_forced(make_database, make_bucket, store,
                                                          tmp_path: Path) -> None:
    src = make_database()
    fill_database(src)
    dump = pg_tools.dump_database(src, tmp_path / "d.dump").path
    target = make_database()
    with target.connect() as conn:
        conn.execute("CREATE TABLE precious (x int)")
        conn.execute("INSERT INTO precious VALUES (42)")
    with pytest.raises(RuntimeError, match="is not empty .* --force"):
        pg_tools.restore_database(dump, target)
    assert table_contents(target) == {"public.precious": [(42,)]}  # untouched
    pg_tools.restore_database(dump, target, force=True)
    got = table_contents(target)
    assert got.pop("public.precious") == [(42,)]  # not in the dump: left alone
    assert got == table_contents(src)
    pg_tools.restore_database(dump, target, force=True)  # twice: --clean, no duplicates
    assert len(table_contents(target)["public.files"]) == 3

    client = store.get_client()
    full = make_bucket("target")
    client.put_object(Bucket=full, Key="keep.txt", Body=b"k")
    with pytest.raises(RuntimeError, match="is not empty: .* --force"):
        buckets.restore_bucket(client, full, "x/", client, full, same_store=True)
