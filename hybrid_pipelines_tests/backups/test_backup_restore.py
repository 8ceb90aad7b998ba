"""A full backup of a database, a bucket (a multipart object included) and a JuiceFS volume's
metadata, each verified; then restores into a FRESH database and a FRESH bucket compared with
the source: tables, row counts and rows; keys, sizes and MD5s."""

from __future__ import annotations

from pathlib import Path

from hybrid_pipelines.backups import buckets, engine, juicefs_meta, pg_tools
from hybrid_pipelines.backups.engine import BackupRun, BucketSource, DatabaseSource, MetaSource
from hybrid_pipelines.backups.rules import layout
from hybrid_pipelines_tests.backups.conftest import (
    bucket_state,
    fill_database,
    put_objects,
    table_contents,
)


def test_backup_then_restore_into_fresh_database_and_bucket(
        make_database, make_bucket, bucket_name, store, juicefs_volume, tmp_path: Path) -> None:
    source_db = make_database()
    fill_database(source_db)
    source_bucket = make_bucket("src")
    put_objects(store, source_bucket)
    backup_bucket = bucket_name("backups")
    client = store.get_client()
    meta_url, meta_password = juicefs_volume

    run = BackupRun(client, backup_bucket, "2026-11",
                    databases=[DatabaseSource("postgres.src", source_db)],
                    buckets_=[BucketSource(source_bucket, client, same_store=True)],
                    meta=MetaSource(meta_url, meta_password))
    outcome = run.run()

    assert outcome.verified, [p.summary() for p in outcome.parts]
    parts = {p.name: p for p in outcome.parts}
    assert parts["postgres.src"].tables == 2 and parts["postgres.src"].bytes > 0
    assert parts[f"bucket:{source_bucket}"].objects == 5
    assert parts["juicefs"].tables == 6  # /, models, models/m1, weights.bin, outputs, o.png
    manifest = engine.read_manifest(client, backup_bucket, "2026-11")
    assert manifest and manifest["verified"] is True and manifest["state"] == "done"
    assert engine.backup_labels(client, backup_bucket) == {"2026-11": True}

    # Restore the database into a fresh one and compare every table.
    dump = tmp_path / "restore.dump"
    client.download_file(backup_bucket, layout.dump_key("2026-11", "postgres.src"), str(dump))
    fresh_db = make_database()
    assert pg_tools.restore_database(dump, fresh_db) == 2
    assert table_contents(fresh_db) == table_contents(source_db)
    with fresh_db.connect() as conn:  # the sequence came back too: a new row gets id 4
        assert conn.execute("INSERT INTO files (path) VALUES ('new') RETURNING id"
                            ).fetchone() == (4,)

    # Restore the bucket into a fresh one and compare keys, sizes and content.
    fresh_bucket = bucket_name("restored")
    facts = buckets.restore_bucket(client, backup_bucket,
                                   layout.mirror_prefix("2026-11", source_bucket),
                                   client, fresh_bucket, same_store=True)
    assert facts.verified, facts.problems
    assert bucket_state(store, fresh_bucket) == bucket_state(store, source_bucket)
    assert len(bucket_state(store, fresh_bucket)) == 5

    # The metadata dump loads into an empty store with the same tree.
    jdump = tmp_path / "meta.json.gz"
    client.download_file(backup_bucket, layout.juicefs_key("2026-11"), str(jdump))
    juicefs_meta.restore_metadata(jdump, f"sqlite3://{tmp_path / 'restored.db'}")
    again = juicefs_meta.dump_metadata(f"sqlite3://{tmp_path / 'restored.db'}",
                                       tmp_path / "again.json")
    assert juicefs_meta.verify_metadata_dump(again).entries == 6
