"""Where each part of a backup lives in the backup bucket, and how the job's configuration
names databases and buckets.

    <label>/_manifest.json                  parts, sizes, verification outcome
    <label>/_postgres/<key>.<database>.dump pg_dump -Fc of each database
    <label>/_juicefs/metadata.json.gz       juicefs dump of the hot tier's metadata
    <label>/<bucket>/<key>                  the mirror of each bucket

Bucket names cannot start with `_`, so a mirror never collides with the dumps."""

from __future__ import annotations

import re
from dataclasses import dataclass

STORES = ("object_store", "seaweedfs")
DATABASE_KEYS = ("postgres", "ai_postgres")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def manifest_key(label: str) -> str:
    return f"{label}/_manifest.json"


def dump_key(label: str, name: str) -> str:
    return f"{label}/_postgres/{name}.dump"


def juicefs_key(label: str) -> str:
    return f"{label}/_juicefs/metadata.json.gz"


def mirror_prefix(label: str, bucket: str) -> str:
    return f"{label}/{bucket}/"


@dataclass(frozen=True)
class BucketSpec:
    store: str  # a resource key: object_store or seaweedfs
    bucket: str

    @property
    def text(self) -> str:
        return f"{self.store}:{self.bucket}"


def parse_bucket_spec(text: str) -> BucketSpec:
    """`bucket` (on the object store) or `store:bucket`, store one of STORES."""
    store, sep, bucket = text.strip().rpartition(":")
    store = store if sep else "object_store"
    if store not in STORES:
        raise ValueError(f"bucket {text!r}: store {store!r} is not one of {', '.join(STORES)} "
                         "(write `bucket` for the object store or `seaweedfs:bucket`)")
    if not _BUCKET_RE.match(bucket):
        raise ValueError(f"bucket {text!r}: {bucket!r} is not a valid S3 bucket name")
    return BucketSpec(store, bucket)


@dataclass(frozen=True)
class DatabaseSpec:
    resource: str  # postgres or ai_postgres
    database: str | None  # None: the resource's own database

    def name(self, resource_database: str) -> str:
        return f"{self.resource}.{self.database or resource_database}"


def parse_database_spec(text: str) -> DatabaseSpec:
    """`postgres`, `ai_postgres`, or `RESOURCE/DATABASE` for another database on the same
    server with the same credentials (e.g. `postgres/juicefs`)."""
    resource, _, database = text.strip().partition("/")
    if resource not in DATABASE_KEYS:
        raise ValueError(f"database {text!r}: {resource!r} is not one of "
                         f"{', '.join(DATABASE_KEYS)} (write `postgres`, `ai_postgres` or "
                         "`postgres/<database>`)")
    if database and not re.match(r"^[A-Za-z0-9_\-]{1,63}$", database):
        raise ValueError(f"database {text!r}: {database!r} is not a plain database name")
    return DatabaseSpec(resource, database or None)
