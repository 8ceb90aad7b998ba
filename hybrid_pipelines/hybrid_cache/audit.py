"""Consistency audit: file_metadata against what SeaweedFS and the NAS really hold.

Cache side: one sorted merge of the bucket listing with the cached rows (missing objects,
orphaned objects, size mismatches). NAS side: synced rows against directory listings (missing,
size mismatch), and a walk of the upload folder for files no row points to (orphans, stale
temporary files). Hashes are checked on a random sample each run, because reading every byte
of a large cache every hour is not affordable.

`reconcile` fixes only what is safe and reports the rest untouched:
- a synced row whose NAS copy is missing while the cached object is intact -> back to 'pending'
- a cached row whose object vanished while the NAS copy is present -> cache_status NULL
- a NAS copy that fails its size or hash check -> nas_verified_at NULL, so it is never evicted
- our own temporary '.partial-' files older than the stale age -> removed
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any
from uuid import UUID

import psycopg

from hybrid_pipelines.hybrid_cache.audit_nas import audit_nas, walk_orphans
from hybrid_pipelines.hybrid_cache.hashing_copy import sha256_of_stream
from hybrid_pipelines.hybrid_cache.objects import FID, CacheObjects
from hybrid_pipelines.hybrid_cache.rules.cache_diff import merge_by_key
from hybrid_pipelines.hybrid_cache.rules.nas_location import root_relative
from hybrid_pipelines.hybrid_cache.shared_keys import count_shared_keys
from hybrid_pipelines.hybrid_cache.sync import describe
from hybrid_pipelines.resources.nas_fs import NASFileSystem
from hybrid_pipelines.shared.nas_root import NASRoot

log = logging.getLogger(__name__)

SAMPLE_LIMIT = 20  # ids/paths kept per category for the report


@dataclass(frozen=True)
class AuditSettings:
    key_prefix: str = ""           # cache objects under this prefix are audited
    nas_prefix: str = "uploads"    # NAS folder walked for orphans ('' skips the walk)
    hash_sample: int = 25          # files per side whose SHA-256 is re-read each run
    stale_partial_s: float = 86_400.0
    listing_cache_dirs: int = 512
    location: NASRoot | None = None  # how stored nas_path values name the NAS root


@dataclass
class AuditReport:
    rows_total: int = 0
    cached_rows: int = 0
    synced_rows: int = 0
    objects_seen: int = 0
    cache_missing_safe: list[UUID] = field(default_factory=list)   # NAS copy present
    cache_missing_at_risk: list[UUID] = field(default_factory=list)  # not on the NAS
    cache_orphaned: list[str] = field(default_factory=list)
    cache_size_mismatch: list[UUID] = field(default_factory=list)
    cache_hash_mismatch: list[UUID] = field(default_factory=list)
    nas_missing_requeue: list[UUID] = field(default_factory=list)  # cached copy intact
    nas_missing_lost: list[UUID] = field(default_factory=list)
    nas_size_mismatch: list[UUID] = field(default_factory=list)
    nas_hash_mismatch: list[UUID] = field(default_factory=list)
    nas_orphaned: list[str] = field(default_factory=list)
    nas_partials_stale: list[str] = field(default_factory=list)
    nas_partials_fresh: int = 0
    hashes_checked: int = 0
    sync_failed_rows: int = 0
    # Cache keys referenced by more than one row. Not drift (a file server may share objects
    # on purpose), but each such object is evicted only when all its rows are safe on the NAS.
    shared_keys: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {
            "cache_missing": len(self.cache_missing_safe) + len(self.cache_missing_at_risk),
            "cache_missing_at_risk": len(self.cache_missing_at_risk),
            "cache_orphaned": len(self.cache_orphaned),
            "cache_size_mismatch": len(self.cache_size_mismatch),
            "cache_hash_mismatch": len(self.cache_hash_mismatch),
            "nas_missing": len(self.nas_missing_requeue) + len(self.nas_missing_lost),
            "nas_missing_lost": len(self.nas_missing_lost),
            "nas_orphaned": len(self.nas_orphaned),
            "nas_size_mismatch": len(self.nas_size_mismatch),
            "nas_hash_mismatch": len(self.nas_hash_mismatch),
            "nas_stale_partials": len(self.nas_partials_stale),
        }

    @property
    def drifted_rows(self) -> int:
        ids: set[UUID] = set()
        for group in (self.cache_missing_safe, self.cache_missing_at_risk,
                      self.cache_size_mismatch, self.cache_hash_mismatch,
                      self.nas_missing_requeue, self.nas_missing_lost, self.nas_size_mismatch,
                      self.nas_hash_mismatch):
            ids.update(group)
        return len(ids)

    @property
    def drift_items(self) -> int:
        return self.drifted_rows + len(self.cache_orphaned) + len(self.nas_orphaned)

    @property
    def drift_percent(self) -> float:
        base = self.rows_total + len(self.cache_orphaned) + len(self.nas_orphaned)
        return round(100.0 * self.drift_items / base, 3) if base else 0.0

    @property
    def data_at_risk(self) -> int:
        return len(self.cache_missing_at_risk) + len(self.nas_missing_lost)

    def metadata(self) -> dict[str, int | float]:
        return {**self.counts, "rows_total": self.rows_total, "objects_seen": self.objects_seen,
                "drifted_rows": self.drifted_rows, "drift_items": self.drift_items,
                "drift_percent": self.drift_percent, "data_at_risk": self.data_at_risk,
                "hashes_checked": self.hashes_checked, "sync_failed_rows": self.sync_failed_rows,
                "shared_cache_keys": self.shared_keys}


@dataclass
class ReconcileReport:
    audit: AuditReport
    requeued: int = 0
    cache_cleared: int = 0
    unverified: int = 0
    partials_removed: int = 0

    def metadata(self) -> dict[str, int | float]:
        return {**self.audit.metadata(), "requeued": self.requeued,
                "cache_cleared": self.cache_cleared, "nas_unverified": self.unverified,
                "partials_removed": self.partials_removed,
                "left_for_operator": self.audit.drift_items - self.requeued
                - self.cache_cleared - self.unverified}


# ---- cache side --------------------------------------------------------------------------

def _list_objects(s3: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def _cached_rows(conn: psycopg.Connection, prefix: str) -> Iterator[tuple[Any, ...]]:
    # A server-side cursor streams the rows in the same byte order as the S3 listing.
    with conn.cursor(name="audit_cached_rows") as cur:
        cur.itersize = 2000
        cur.execute("SELECT seaweed_fid, id, size, nas_status FROM file_metadata"
                    " WHERE cache_status = 'cached' AND seaweed_fid IS NOT NULL"
                    "   AND starts_with(seaweed_fid, %s) AND seaweed_fid !~ %s"
                    " ORDER BY seaweed_fid COLLATE \"C\"", (prefix, FID.pattern))
        yield from cur


def _by_key(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    """Consecutive rows on one key together: seaweed_fid is not unique (shared_keys)."""
    for _key, group in groupby(rows, key=lambda r: r[0]):
        yield list(group)


def _audit_file_ids(conn: psycopg.Connection, objects: CacheObjects, report: AuditReport,
                    missing: dict[UUID, str | None]) -> None:
    """Cached rows whose seaweed_fid is a SeaweedFS file id are not in the bucket listing:
    each is asked of its volume server (HEAD)."""
    rows = conn.execute("SELECT seaweed_fid, id, size, nas_status FROM file_metadata"
                        " WHERE cache_status = 'cached' AND seaweed_fid ~ %s",
                        (FID.pattern,)).fetchall()
    for fid, file_id, size, nas_status in rows:
        report.cached_rows += 1
        try:
            held = objects.size(fid)
        except Exception as exc:  # noqa: BLE001 - reported, the audit goes on
            report.errors.append(f"{file_id}: cannot look up file id {fid}: {describe(exc)}")
            continue
        report.objects_seen += held is not None
        if held is None:
            missing[file_id] = nas_status
        elif held != int(size):
            report.cache_size_mismatch.append(file_id)


def _audit_cache(conn: psycopg.Connection, s3: Any, bucket: str, settings: AuditSettings,
                 report: AuditReport) -> dict[UUID, str | None]:
    """Returns cache-missing row id -> nas_status, decided together with the NAS side."""
    missing: dict[UUID, str | None] = {}
    with conn.transaction():
        for key, obj, rows in merge_by_key(_list_objects(s3, bucket, settings.key_prefix),
                                           _by_key(_cached_rows(conn, settings.key_prefix)),
                                           lambda o: o["Key"], lambda g: g[0][0]):
            if obj is not None:
                report.objects_seen += 1
            if rows is None:
                if len(report.cache_orphaned) < 10_000:
                    report.cache_orphaned.append(key)
                continue
            for row in rows:
                report.cached_rows += 1
                if obj is None:
                    missing[row[1]] = row[3]
                elif int(obj["Size"]) != int(row[2]):
                    report.cache_size_mismatch.append(row[1])
    return missing




# ---- hash samples ------------------------------------------------------------------------

def _hash_samples(conn: psycopg.Connection, objects: CacheObjects, nas: NASFileSystem,
                  settings: AuditSettings, report: AuditReport, nas_present: set[UUID],
                  cache_missing: dict[UUID, str]) -> None:
    if settings.hash_sample <= 0:
        return
    cached = conn.execute(
        "SELECT id, seaweed_fid, hash FROM file_metadata WHERE cache_status = 'cached'"
        " AND hash IS NOT NULL AND starts_with(seaweed_fid, %s) ORDER BY random() LIMIT %s",
        (settings.key_prefix, settings.hash_sample)).fetchall()
    for file_id, key, expected in cached:
        if file_id in cache_missing or file_id in report.cache_size_mismatch:
            continue
        try:
            body = objects.open(key)
            try:
                got = sha256_of_stream(body)
            finally:
                body.close()
        except Exception as exc:  # noqa: BLE001 - reported, the audit goes on
            report.errors.append(f"{file_id}: cannot read cache object: {describe(exc)}")
            continue
        report.hashes_checked += 1
        if got.sha256 != expected.lower():
            report.cache_hash_mismatch.append(file_id)
    synced = conn.execute(
        "SELECT id, nas_path, hash FROM file_metadata WHERE nas_status = 'synced'"
        " AND nas_path IS NOT NULL AND hash IS NOT NULL ORDER BY random() LIMIT %s",
        (settings.hash_sample,)).fetchall()
    for file_id, nas_path, expected in synced:
        if file_id not in nas_present or file_id in report.nas_size_mismatch:
            continue
        try:
            with nas.open_read(root_relative(nas_path, settings.location)) as fh:
                got = sha256_of_stream(fh)
        except Exception as exc:  # noqa: BLE001 - reported, the audit goes on
            report.errors.append(f"{file_id}: cannot read NAS copy: {describe(exc)}")
            continue
        report.hashes_checked += 1
        if got.sha256 != expected.lower():
            report.nas_hash_mismatch.append(file_id)


def run_audit(conn: psycopg.Connection, s3: Any, bucket: str, nas: NASFileSystem,
              settings: AuditSettings | None = None, now: float | None = None,
              master_url: str = "") -> AuditReport:
    """Read-only. `conn` must be in autocommit mode. Rows whose seaweed_fid is a SeaweedFS
    file id are audited through `master_url` (never counted missing from the bucket); without
    it, or with a key_prefix, they are left out of the cache side."""
    settings = settings or AuditSettings()
    report = AuditReport()
    row = conn.execute("SELECT count(*), count(*) FILTER (WHERE nas_status = 'failed')"
                       " FROM file_metadata").fetchone()
    report.rows_total, report.sync_failed_rows = (row[0], row[1]) if row else (0, 0)
    report.shared_keys = count_shared_keys(conn)
    objects = CacheObjects(s3, bucket, master_url)
    cache_missing = _audit_cache(conn, s3, bucket, settings, report)
    if master_url and not settings.key_prefix:
        _audit_file_ids(conn, objects, report, cache_missing)
    nas_present = audit_nas(conn, nas, settings, report, cache_missing)
    for file_id, nas_status in cache_missing.items():
        safe = nas_status == "synced" and file_id in nas_present
        (report.cache_missing_safe if safe else report.cache_missing_at_risk).append(file_id)
    walk_orphans(conn, nas, settings, report, time.time() if now is None else now)
    _hash_samples(conn, objects, nas, settings, report, nas_present, cache_missing)
    return report


def run_reconcile(conn: psycopg.Connection, s3: Any, bucket: str, nas: NASFileSystem,
                  settings: AuditSettings | None = None, now: float | None = None,
                  master_url: str = "") -> ReconcileReport:
    """Audit, then apply the safe fixes. Every update re-checks its precondition in SQL, so a
    sync or eviction that changed the row since the audit wins and the fix is skipped."""
    audit = run_audit(conn, s3, bucket, nas, settings, now, master_url)
    out = ReconcileReport(audit)
    if audit.nas_missing_requeue:
        out.requeued = conn.execute(
            "UPDATE file_metadata SET nas_status = 'pending', sync_attempts = 0,"
            " nas_verified_at = NULL, synced_at = NULL,"
            " last_error = 'reconcile: NAS copy missing, re-queued from the cache',"
            " updated_at = now()"
            " WHERE id = ANY(%s) AND nas_status = 'synced' AND cache_status = 'cached'",
            (audit.nas_missing_requeue,)).rowcount
    if audit.cache_missing_safe:
        out.cache_cleared = conn.execute(
            "UPDATE file_metadata SET cache_status = NULL,"
            " last_error = 'reconcile: cached object vanished; served from the NAS',"
            " updated_at = now()"
            " WHERE id = ANY(%s) AND cache_status = 'cached' AND nas_status = 'synced'",
            (audit.cache_missing_safe,)).rowcount
    bad_nas = audit.nas_size_mismatch + audit.nas_hash_mismatch
    if bad_nas:
        out.unverified = conn.execute(
            "UPDATE file_metadata SET nas_verified_at = NULL,"
            " last_error = 'reconcile: NAS copy fails its size/hash check; not evictable',"
            " updated_at = now() WHERE id = ANY(%s) AND nas_verified_at IS NOT NULL",
            (bad_nas,)).rowcount
    for path in audit.nas_partials_stale:
        try:
            nas.remove(path)
            out.partials_removed += 1
        except Exception as exc:  # noqa: BLE001 - reported, the rest goes on
            audit.errors.append(f"cannot remove {path}: {describe(exc)}")
    for group, what in ((audit.cache_missing_at_risk, "cached object gone, NOT on the NAS"),
                        (audit.nas_missing_lost, "NAS copy gone and no intact cached copy"),
                        (audit.cache_size_mismatch, "cache object size differs"),
                        (audit.cache_hash_mismatch, "cache object hash differs")):
        if group:
            log.error("%d files: %s (left for an operator): %s", len(group), what,
                      ", ".join(map(str, group[:SAMPLE_LIMIT])))
    return out
