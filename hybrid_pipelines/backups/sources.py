"""From the job's configuration and resources to what a BackupRun copies: the databases
(deduplicated: `ai_postgres` may be the same database as `postgres`), the buckets with the
client of the store holding each, and the JuiceFS metadata URL with its password."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from hybrid_pipelines.backups.engine import BucketSource, DatabaseSource, MetaSource
from hybrid_pipelines.backups.juicefs_meta import PASSWORD_ENV
from hybrid_pipelines.backups.pg_tools import with_database
from hybrid_pipelines.backups.rules.layout import parse_bucket_spec, parse_database_spec
from hybrid_pipelines.resources import JuiceFSResource, ObjectStoreResource, PostgresResource


@dataclass
class Sources:
    databases: list[DatabaseSource] = field(default_factory=list)
    buckets: list[BucketSource] = field(default_factory=list)
    meta: MetaSource | None = None
    notes: list[str] = field(default_factory=list)


def meta_password(meta_url: str, postgres: PostgresResource | None) -> str | None:
    """META_PASSWORD when set. Otherwise, for a PostgreSQL metadata URL without a password on
    the server and user of the `postgres` resource (the local stack keeps JuiceFS's
    metadata there), that resource's password."""
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    parts = urlsplit(meta_url)
    if parts.password:
        return None  # in the URL itself
    if (postgres is not None and parts.scheme.startswith("postgres")
            and parts.hostname == postgres.host and (parts.port or 5432) == postgres.port
            and (parts.username or "postgres") == postgres.user):
        return postgres.password or None
    return None


def resolve_sources(*, databases: list[str], buckets: list[str], juicefs: bool,
                    resources: Mapping[str, Any], hot_tier: JuiceFSResource | None) -> Sources:
    out = Sources()
    seen: set[tuple[str, int, str]] = set()
    for text in databases:
        spec = parse_database_spec(text)
        pg: PostgresResource = resources[spec.resource]
        if spec.database:
            pg = with_database(pg, spec.database)
        ident = (pg.host, pg.port, pg.database)
        if ident in seen:
            out.notes.append(f"database {text} is {pg.database} at {pg.host}:{pg.port}, "
                             "already in this backup: dumped once")
            continue
        seen.add(ident)
        out.databases.append(DatabaseSource(spec.name(pg.database), pg))
    backup_store: ObjectStoreResource = resources["object_store"]
    specs = [parse_bucket_spec(b) for b in buckets] or [
        parse_bucket_spec(backup_store.bucket), parse_bucket_spec(backup_store.outputs_bucket)]
    names = set()
    for spec in specs:
        if spec.bucket in names:
            raise ValueError(f"bucket {spec.bucket} is listed twice (the mirror's prefix is "
                             "the bucket name): list it once")
        names.add(spec.bucket)
        store: ObjectStoreResource = resources[spec.store]
        out.buckets.append(BucketSource(
            spec.bucket, store.get_client(),
            same_store=(store.endpoint_url or "") == (backup_store.endpoint_url or "")
            and store.aws_access_key_id == backup_store.aws_access_key_id))
    if juicefs:
        url = hot_tier.meta_url if hot_tier is not None else ""
        if url:
            out.meta = MetaSource(url, meta_password(url, resources.get("postgres")))
        else:
            out.notes.append("no JuiceFS metadata URL (HP_JUICEFS_META_URL): the hot tier's "
                             "metadata is not in this backup; set it, or config juicefs=false")
    return out
