"""Cache eviction: free SeaweedFS space by deleting objects whose NAS copy is synced and
verified, chosen by policy, until usage is back under the target.

Order per batch: lock the candidate rows (FOR UPDATE SKIP LOCKED, so a reconcile or another
eviction waits or skips), delete the objects, then clear cache_status in the same transaction.
A crash between the delete and the update leaves 'object gone, row still cached' on a row that
is synced and verified: no data is lost (the NAS holds it), and the reconcile job clears the
flag. A row that is not synced is never a candidate, whatever the policy."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from hybrid_pipelines.hybrid_cache.rules.eviction_policy import (
    ORDER_BY,
    Candidate,
    Policy,
    bytes_to_free,
    parse_policy,
    take_until,
    validate_thresholds,
)

log = logging.getLogger(__name__)

DELETE_CHUNK = 1000  # S3 DeleteObjects limit


@dataclass(frozen=True)
class EvictionSettings:
    capacity_bytes: int
    threshold: float = 0.8
    target: float = 0.7
    policy: Policy = Policy.LRU
    batch_size: int = 100
    max_files: int = 10_000
    key_prefix: str = ""  # only objects under this prefix count and are evicted

    def __post_init__(self) -> None:
        validate_thresholds(self.capacity_bytes, self.threshold, self.target)
        object.__setattr__(self, "policy", parse_policy(str(self.policy)))
        if self.batch_size < 1 or self.max_files < 1:
            raise ValueError("eviction batch_size and max_files must be >= 1")


@dataclass(frozen=True)
class Usage:
    bytes: int
    objects: int
    capacity_bytes: int

    @property
    def percent(self) -> float:
        return 100.0 * self.bytes / self.capacity_bytes if self.capacity_bytes else 0.0


@dataclass
class EvictionReport:
    policy: str
    usage_before: Usage
    bytes_needed: int = 0
    files_evicted: int = 0
    bytes_evicted: int = 0
    delete_errors: int = 0
    evicted_ids: list[UUID] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def usage_after_bytes(self) -> int:
        return max(0, self.usage_before.bytes - self.bytes_evicted)

    @property
    def usage_after_percent(self) -> float:
        cap = self.usage_before.capacity_bytes
        return 100.0 * self.usage_after_bytes / cap if cap else 0.0

    @property
    def shortfall_bytes(self) -> int:
        """Bytes still to free when not enough synced files were cached."""
        return max(0, self.bytes_needed - self.bytes_evicted)


def measure_usage(s3: Any, bucket: str, prefix: str, capacity_bytes: int) -> Usage:
    """Bytes really held in the cache bucket (under `prefix`), page by page."""
    total = count = 0
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            total += int(obj["Size"])
            count += 1
    return Usage(total, count, capacity_bytes)


def select_candidates(conn: psycopg.Connection, policy: Policy, limit: int, key_prefix: str = "",
                      exclude: list[UUID] | None = None, lock: bool = True) -> list[Candidate]:
    """Evictable rows in policy order. Only cached rows whose NAS copy is synced AND verified
    qualify; `lock` takes row locks (call inside a transaction)."""
    clauses = ["cache_status = 'cached'", "nas_status = 'synced'", "nas_verified_at IS NOT NULL",
               "seaweed_fid IS NOT NULL"]
    params: list[Any] = []
    if key_prefix:
        clauses.append("starts_with(seaweed_fid, %s)")
        params.append(key_prefix)
    if exclude:
        clauses.append("NOT (id = ANY(%s))")
        params.append(exclude)
    params.append(limit)
    # Only fixed strings are composed: the clauses above and the ORDER BY of a known policy.
    query = sql.SQL(
        "SELECT id, seaweed_fid, size, created_at, last_accessed, access_count"
        " FROM file_metadata WHERE {where} ORDER BY {order} LIMIT %s{lock}").format(
        where=sql.SQL(" AND ".join(clauses)), order=sql.SQL(ORDER_BY[policy]),
        lock=sql.SQL(" FOR UPDATE SKIP LOCKED" if lock else ""))
    rows = conn.execute(query, params).fetchall()
    return [Candidate(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


def delete_objects(s3: Any, bucket: str, keys: list[str]) -> tuple[set[str], list[str]]:
    """Delete keys in chunks; returns (deleted keys, error texts). S3 reports deleting a key that
    is already gone as success, which is what we want: the object is not in the cache."""
    deleted: set[str] = set()
    errors: list[str] = []
    for i in range(0, len(keys), DELETE_CHUNK):
        chunk = keys[i:i + DELETE_CHUNK]
        resp = s3.delete_objects(Bucket=bucket, Delete={
            "Objects": [{"Key": k} for k in chunk], "Quiet": False})
        deleted.update(d["Key"] for d in resp.get("Deleted", []))
        for err in resp.get("Errors", []):
            errors.append(f"{err.get('Key')}: {err.get('Code')} {err.get('Message', '')}")
    return deleted, errors


def _mark_evicted(conn: psycopg.Connection, ids: list[UUID]) -> int:
    cur = conn.execute(
        "UPDATE file_metadata SET cache_status = NULL, updated_at = now()"
        " WHERE id = ANY(%s) AND cache_status = 'cached' AND nas_status = 'synced'", (ids,))
    return cur.rowcount


def evict(conn: psycopg.Connection, s3: Any, bucket: str, policy: Policy, need_bytes: int,
          max_files: int, batch_size: int = 100, key_prefix: str = "",
          report: EvictionReport | None = None) -> EvictionReport:
    """Evict in policy order until `need_bytes` are freed or `max_files` evicted. `conn` must be
    in autocommit mode: each batch is one transaction."""
    if report is None:
        report = EvictionReport(policy.value, Usage(0, 0, 0), need_bytes)
    skip: list[UUID] = []  # rows whose delete failed: don't pick them again this run
    while report.bytes_evicted < need_bytes and report.files_evicted < max_files:
        with conn.transaction():
            batch = select_candidates(conn, policy, batch_size, key_prefix, skip)
            chosen = take_until(batch, need_bytes - report.bytes_evicted,
                                max_files - report.files_evicted)
            if not chosen:
                break
            deleted, errors = delete_objects(s3, bucket, [c.key for c in chosen])
            gone = [c for c in chosen if c.key in deleted]
            skip.extend(c.id for c in chosen if c.key not in deleted)
            report.delete_errors += len(errors)
            report.errors.extend(errors[:20])
            _mark_evicted(conn, [c.id for c in gone])
        report.files_evicted += len(gone)
        report.bytes_evicted += sum(c.size for c in gone)
        report.evicted_ids.extend(c.id for c in gone)
        if not gone:
            break
    return report


def run_eviction(conn: psycopg.Connection, s3: Any, bucket: str, settings: EvictionSettings,
                 usage: Usage | None = None) -> EvictionReport:
    """Measure, and evict down to the target if usage is above the threshold."""
    usage = usage or measure_usage(s3, bucket, settings.key_prefix, settings.capacity_bytes)
    need = bytes_to_free(usage.bytes, settings.capacity_bytes, settings.threshold,
                         settings.target)
    report = EvictionReport(settings.policy.value, usage, need)
    if need <= 0:
        return report
    evict(conn, s3, bucket, settings.policy, need, settings.max_files, settings.batch_size,
          settings.key_prefix, report)
    if report.shortfall_bytes:
        log.warning("freed %d of %d bytes: not enough cached files are synced and verified on "
                    "the NAS yet (unsynced files are never evicted)", report.bytes_evicted, need)
    return report
