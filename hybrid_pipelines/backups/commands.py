"""`hybrid-pipelines backup ...` and `hybrid-pipelines restore ...`.

  backup run [--label YYYY-MM] [--keep N] [--backup-bucket B] [--database D]... [--bucket B]...
  backup list                              labels in the backup bucket, verified or not
  restore database --label L --name postgres.hybrid --target-database NEW [--resource R] [--force]
  restore bucket --label L --bucket SRC --target-bucket NEW [--store seaweedfs] [--force]
  restore juicefs --label L --meta-url URL   (an empty metadata store; password in META_PASSWORD)

Connections come from the same HP_* variables as the jobs (or the local stack's stack.env),
built by resources/build.py. `backup run` runs the same engine as the Dagster `backup` job,
in this process (the job is the scheduled, recorded path)."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

BUCKET_ENV = "HP_BACKUP_BUCKET"


def _resources(keys: tuple[str, ...], env_file: str | None = None) -> dict[str, Any]:
    from hybrid_pipelines.resources.build import build_resources
    from hybrid_pipelines.shared.env import connection_env

    env = connection_env(Path(env_file) if env_file else None)
    return build_resources(env, only=keys)


def _backup_bucket(args: argparse.Namespace) -> str:
    return args.backup_bucket or os.environ.get(BUCKET_ENV) or "backups"


def _run(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from hybrid_pipelines.backups.engine import BackupRun
    from hybrid_pipelines.backups.rules.retention import label_for
    from hybrid_pipelines.backups.sources import resolve_sources

    res = _resources(("postgres", "ai_postgres", "object_store", "seaweedfs", "hot_tier"),
                     args.env_file)
    sources = resolve_sources(databases=args.database or ["postgres", "ai_postgres"],
                              buckets=args.bucket or [], juicefs=not args.no_juicefs,
                              resources=res, hot_tier=res["hot_tier"])
    for note in sources.notes:
        print(f"note: {note}")
    label = args.label or label_for(datetime.now(UTC))
    outcome = BackupRun(res["object_store"].get_client(), _backup_bucket(args), label,
                        databases=sources.databases, buckets_=sources.buckets,
                        meta=sources.meta, keep=args.keep).run()
    for part in outcome.parts:
        print(part.summary())
    if not outcome.verified:
        print(f"backup {label} in {_backup_bucket(args)} is NOT verified: retention deleted "
              "nothing")
        return 1
    print(f"backup {label} in {_backup_bucket(args)} verified; retention deleted "
          f"{', '.join(outcome.deleted) or 'nothing'}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from hybrid_pipelines.backups.engine import backup_labels, read_manifest

    client = _resources(("object_store",), args.env_file)["object_store"].get_client()
    bucket = _backup_bucket(args)
    labels = backup_labels(client, bucket)
    if not labels:
        print(f"no backup in bucket {bucket}")
        return 0
    for label, ok in sorted(labels.items(), reverse=True):
        manifest = read_manifest(client, bucket, label) or {}
        parts = manifest.get("parts", [])
        size = sum(int(p.get("bytes", 0)) for p in parts)
        print(f"{label}  {'verified' if ok else 'NOT verified':<13} {len(parts):>3} part(s) "
              f"{size:>16,} bytes")
        for p in parts:  # the names `restore database --name` and `--bucket` take
            state = "verified" if p.get("verified") else "NOT verified"
            print(f"    {p.get('name', '?'):<40} {state:<13} {int(p.get('bytes', 0)):>16,}")
    return 0


def _restore_database(args: argparse.Namespace) -> int:
    from hybrid_pipelines.backups import pg_tools
    from hybrid_pipelines.backups.buckets import require_bucket
    from hybrid_pipelines.backups.rules import layout
    from hybrid_pipelines.backups.rules.retention import check_label

    res = _resources(("object_store", args.resource), args.env_file)
    client, bucket = res["object_store"].get_client(), _backup_bucket(args)
    require_bucket(client, bucket, "backup")
    key = layout.dump_key(check_label(args.label), args.name)
    server = res[args.resource]
    target = pg_tools.with_database(server, args.target_database)
    with tempfile.TemporaryDirectory(prefix="hp-restore-") as work:
        dump = Path(work) / "restore.dump"
        try:
            client.download_file(bucket, key, str(dump))
        except Exception as exc:
            raise RuntimeError(f"cannot read {bucket}/{key}: {exc}; see `hybrid-pipelines "
                               "backup list` for the labels, and the manifest for the "
                               "dump names") from exc
        # Only once the dump is here: a failed download leaves no empty database behind.
        created = create_database_if_missing(server, args.target_database)
        tables = pg_tools.restore_database(dump, target, force=args.force)
    print(f"restored {tables} table(s) of {key} into database {args.target_database}"
          f"{' (created)' if created else ''} at {target.host}:{target.port}")
    return 0


def create_database_if_missing(server: Any, name: str) -> bool:
    """CREATE DATABASE `name` on `server` unless it exists; True when created."""
    from psycopg import sql

    with server.connect(autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return True


def _restore_bucket(args: argparse.Namespace) -> int:
    from hybrid_pipelines.backups.buckets import restore_bucket
    from hybrid_pipelines.backups.rules import layout
    from hybrid_pipelines.backups.rules.retention import check_label

    res = _resources(("object_store", args.store), args.env_file)
    backup, target = res["object_store"], res[args.store]
    prefix = layout.mirror_prefix(check_label(args.label), args.bucket)
    facts = restore_bucket(backup.get_client(), _backup_bucket(args), prefix,
                           target.get_client(), args.target_bucket,
                           same_store=args.store == "object_store", force=args.force)
    if not facts.objects:
        print(f"warning: {_backup_bucket(args)}/{prefix} holds no object")
    if not facts.verified:
        print(f"restore of {prefix} into {args.target_bucket} NOT verified: "
              + "; ".join(facts.problems))
        return 1
    print(f"restored {facts.objects} object(s), {facts.bytes} bytes, into bucket "
          f"{args.target_bucket}; keys, sizes and ETags/MD5s verified")
    return 0


def _restore_juicefs(args: argparse.Namespace) -> int:
    from hybrid_pipelines.backups import juicefs_meta
    from hybrid_pipelines.backups.rules import layout
    from hybrid_pipelines.backups.rules.retention import check_label

    client = _resources(("object_store",), args.env_file)["object_store"].get_client()
    key = layout.juicefs_key(check_label(args.label))
    with tempfile.TemporaryDirectory(prefix="hp-restore-") as work:
        dump = Path(work) / "metadata.json.gz"
        client.download_file(_backup_bucket(args), key, str(dump))
        juicefs_meta.restore_metadata(dump, args.meta_url,
                                      os.environ.get(juicefs_meta.PASSWORD_ENV))
    print(f"loaded {key} into {juicefs_meta.redact(args.meta_url)}; set the object store's "
          "secret again: juicefs config META_URL --secret-key ...")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backup-bucket", help=f"bucket holding the backups (default "
                        f"${BUCKET_ENV} or `backups`)")
    common.add_argument("--env-file", help="HP_* settings file (default: the local stack's)")

    bk = sub.add_parser("backup", help="take or list verified backups")
    acts = bk.add_subparsers(dest="backup_action", required=True)
    run = acts.add_parser("run", parents=[common], help="take a verified backup now")
    run.add_argument("--label", help="YYYY-MM (default: this month, UTC)")
    run.add_argument("--keep", type=int, default=12, help="verified monthly backups to keep")
    run.add_argument("--database", action="append", help="postgres, ai_postgres or "
                     "RESOURCE/DATABASE (repeat; default: postgres and ai_postgres)")
    run.add_argument("--bucket", action="append", help="bucket or seaweedfs:bucket (repeat; "
                     "default: the object store's two buckets)")
    run.add_argument("--no-juicefs", action="store_true", help="leave the JuiceFS metadata out")
    run.set_defaults(func=_run)
    acts.add_parser("list", parents=[common], help="backups and whether each verified"
                    ).set_defaults(func=_list)

    rs = sub.add_parser("restore", help="restore a backup into a NEW database, bucket or "
                        "metadata store")
    what = rs.add_subparsers(dest="restore_action", required=True)
    db = what.add_parser("database", parents=[common], help="pg_restore a dump")
    db.add_argument("--label", required=True)
    db.add_argument("--name", required=True, help="the dump's name, e.g. postgres.hybrid "
                    "(see the manifest or `backup list`)")
    db.add_argument("--target-database", required=True, help="created if missing; refused "
                    "when it holds tables unless --force")
    db.add_argument("--resource", choices=["postgres", "ai_postgres"], default="postgres",
                    help="the server to restore on (default: postgres)")
    db.add_argument("--force", action="store_true", help="restore into a non-empty database "
                    "(drops and recreates the dump's objects)")
    db.set_defaults(func=_restore_database)
    bu = what.add_parser("bucket", parents=[common], help="copy a bucket mirror back")
    bu.add_argument("--label", required=True)
    bu.add_argument("--bucket", required=True, help="the mirrored bucket's name")
    bu.add_argument("--target-bucket", required=True, help="created if missing; refused when "
                    "it holds objects unless --force")
    bu.add_argument("--store", choices=["object_store", "seaweedfs"], default="object_store")
    bu.add_argument("--force", action="store_true", help="overwrite same-named objects")
    bu.set_defaults(func=_restore_bucket)
    jf = what.add_parser("juicefs", parents=[common], help="juicefs load the metadata dump")
    jf.add_argument("--label", required=True)
    jf.add_argument("--meta-url", required=True, help="an EMPTY metadata store (no password "
                    "in it: set META_PASSWORD)")
    jf.set_defaults(func=_restore_juicefs)
