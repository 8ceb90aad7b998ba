"""Re-cache: files the file server wrote straight to the NAS while SeaweedFS was down
(cache_status NULL, recache_requested) are streamed back into the cache once it recovers.

One row at a time, locked for the copy (FOR UPDATE SKIP LOCKED), so two runs never copy the
same file; the object is written under its final key and the row is flipped to 'cached' only
after the bytes read from the NAS matched the recorded SHA-256 and the object's size is right.

seaweed_fid is not unique on the platform's table (shared_keys): the row's own key is reused
only when no other row references it; otherwise the bytes go under a key of this row's own,
so re-caching never overwrites another row's object, and a mismatch deletes only an object
that no other row references (checked under their row locks)."""

from __future__ import annotations

import logging
import posixpath
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
from boto3.s3.transfer import TransferConfig

from hybrid_pipelines.hybrid_cache.hashing_copy import CHUNK_SIZE, HashingReader
from hybrid_pipelines.hybrid_cache.rules.nas_location import root_relative
from hybrid_pipelines.hybrid_cache.shared_keys import referenced_by_others
from hybrid_pipelines.hybrid_cache.sync import BackendDown, Probe, describe
from hybrid_pipelines.resources.nas_fs import NASFileSystem
from hybrid_pipelines.shared.nas_root import NASRoot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecacheSettings:
    max_files: int = 500
    key_prefix: str = "uploads/"
    chunk_size: int = 8 * CHUNK_SIZE  # multipart part size; memory per copy is one part
    location: NASRoot | None = None  # how stored nas_path values name the NAS root

    def __post_init__(self) -> None:
        if self.max_files < 1:
            raise ValueError(f"max_files must be >= 1, got {self.max_files} (files re-cached "
                             "per run; the default is 500)")


@dataclass
class RecacheReport:
    recached: int = 0
    bytes_recached: int = 0
    failed: int = 0
    refused: int = 0  # NAS copy does not match the recorded hash: left for an operator
    stopped_reason: str = ""
    stopped_backend: str = ""
    recached_ids: list[UUID] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class HashMismatch(RuntimeError):
    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(message)


# file_metadata.seaweed_fid is VARCHAR(100) on the platform's table.
FID_MAX = 100


def recache_key(prefix: str, file_id: UUID, stored_name: str) -> str:
    """A key of this row's own: the id and the name's extension (the stored name itself can
    be 255 characters, the column holds 100). A prefix that leaves no room fails clearly."""
    ext = posixpath.splitext(stored_name)[1][:16]
    key = posixpath.join(prefix, f"{file_id.hex}{ext}") if prefix else f"{file_id.hex}{ext}"
    if len(key) > FID_MAX:
        raise ValueError(f"re-cache key {key!r} is {len(key)} characters, over the {FID_MAX} "
                         "that file_metadata.seaweed_fid holds: shorten the re-cache key_prefix "
                         f"({prefix!r})")
    return key


def _claim_one(conn: psycopg.Connection, skip: list[UUID]) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT id, stored_name, size, hash, nas_path, seaweed_fid FROM file_metadata"
        " WHERE recache_requested AND cache_status IS NULL AND nas_status = 'synced'"
        "   AND nas_path IS NOT NULL AND NOT (id = ANY(%s))"
        " ORDER BY sync_priority DESC, created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
        (skip,)).fetchone()


def cache_key_for(conn: psycopg.Connection, file_id: UUID, fid: str | None, prefix: str,
                  stored_name: str) -> str:
    """The row's own seaweed_fid if no other row references it, else a key of its own."""
    for key in (fid, recache_key(prefix, file_id, stored_name)):
        if key and not referenced_by_others(conn, key, file_id):
            return key
    return recache_key(prefix, uuid.uuid4(), stored_name)


def discard_object(conn: psycopg.Connection, s3: Any, bucket: str, key: str,
                   file_id: UUID) -> list[UUID]:
    """Delete what a failed re-cache wrote, unless another row references the key: those rows
    are locked first (inside the caller's transaction) so none can start needing it meanwhile.
    Returns the rows that kept the object ([] when it was deleted)."""
    others = referenced_by_others(conn, key, file_id, lock=True)
    if not others:
        s3.delete_object(Bucket=bucket, Key=key)
    return others


def copy_to_cache(s3: Any, bucket: str, nas: NASFileSystem, nas_path: str, key: str,
                  size: int, expected: str | None, chunk_size: int) -> str:
    """Stream a NAS file into the cache, hashing on the way; returns the SHA-256. A mismatch
    raises HashMismatch naming the key; the caller removes the object (discard_object), so
    the cache never serves bytes the row does not describe."""
    config = TransferConfig(multipart_threshold=chunk_size, multipart_chunksize=chunk_size,
                            use_threads=False)
    with nas.open_read(nas_path) as fh:
        reader = HashingReader(fh, CHUNK_SIZE)
        s3.upload_fileobj(reader, bucket, key, Config=config)
    got = reader.result()
    if got.size != size or (expected and got.sha256 != expected.lower()):
        raise HashMismatch(key, f"NAS copy {nas_path} has {got.size} bytes with SHA-256 "
                           f"{got.sha256[:12]}..., the row records {size} bytes "
                           f"{(expected or '?')[:12]}...")
    head = s3.head_object(Bucket=bucket, Key=key)
    if int(head["ContentLength"]) != size:
        raise HashMismatch(key, f"cache object {key} holds {head['ContentLength']} bytes after "
                           f"upload, expected {size}")
    return got.sha256


def run_recache(conn: psycopg.Connection, s3: Any, bucket: str, nas: NASFileSystem,
                settings: RecacheSettings | None = None, *,
                probes: dict[str, Probe] | None = None,
                on_file: Callable[[UUID], None] | None = None) -> RecacheReport:
    """`conn` must be in autocommit mode; each file is one transaction."""
    settings = settings or RecacheSettings()
    report = RecacheReport()
    skip: list[UUID] = []
    while report.recached + report.failed + report.refused < settings.max_files:
        with conn.transaction():
            row = _claim_one(conn, skip)
            if row is None:
                break
            file_id, stored_name, size, expected, nas_path, fid = row
            key = cache_key_for(conn, file_id, fid, settings.key_prefix, stored_name)
            try:
                sha = copy_to_cache(s3, bucket, nas, root_relative(nas_path, settings.location),
                                    key, size, expected, settings.chunk_size)
            except HashMismatch as exc:
                # The NAS copy is not the uploaded file: caching it would spread the damage.
                if kept_for := discard_object(conn, s3, bucket, exc.key, file_id):
                    report.errors.append(f"{file_id}: object {exc.key} not deleted: rows "
                                         f"{', '.join(map(str, kept_for[:5]))} reference it")
                conn.execute(
                    "UPDATE file_metadata SET recache_requested = false, nas_verified_at = NULL,"
                    " last_error = %s, updated_at = now() WHERE id = %s",
                    (f"re-cache refused: {exc}"[:2000], file_id))
                report.refused += 1
                report.errors.append(f"{file_id}: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - outage or bad file; find out which
                for backend, probe in (probes or {}).items():
                    health = probe()
                    if not health.ok:
                        report.stopped_reason = str(BackendDown(backend, health.detail))
                        report.stopped_backend = backend
                        return report
                conn.execute("UPDATE file_metadata SET last_error = %s WHERE id = %s",
                             (f"re-cache failed: {describe(exc)}", file_id))
                skip.append(file_id)
                report.failed += 1
                report.errors.append(f"{file_id}: {describe(exc)}")
                continue
            conn.execute(
                "UPDATE file_metadata SET cache_status = 'cached', seaweed_fid = %s,"
                " recache_requested = false, hash = COALESCE(hash, %s),"
                " nas_verified_at = now(), last_error = NULL, updated_at = now() WHERE id = %s",
                (key, sha, file_id))
        report.recached += 1
        report.bytes_recached += size
        report.recached_ids.append(file_id)
        if on_file:
            on_file(file_id)
    return report
