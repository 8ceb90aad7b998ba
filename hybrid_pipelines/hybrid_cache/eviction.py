"""Cache eviction: free SeaweedFS space by deleting objects whose NAS copies are synced,
verified and still there, chosen by policy, until usage is back under the target.

Per batch:
1. choose candidates in policy order (no locks held): cached rows synced and verified on the
   NAS whose key no other row still needs (NOT EXISTS a row on the same seaweed_fid that is not
   synced and verified: seaweed_fid is not unique on the platform's table, see shared_keys);
2. re-check on the NAS every row on each chosen key (nas_recheck): a copy that is gone,
   replaced or changed sends its row back to the sync queue and its object is kept; an error
   reaching the NAS stops the run if the NAS is down, so nothing is deleted on a NAS that
   cannot be checked;
3. one transaction: lock every row on the keys (FOR UPDATE SKIP LOCKED) and keep only keys whose
   rows are exactly the ones re-checked, unchanged, none held by another session and none added
   since; delete those objects; clear cache_status of all their rows together.

The NAS is read before any row lock is taken, so the file server's writes to these rows never
wait on NAS reads. A crash between the delete and the update leaves 'object gone, row still
cached' on rows that are synced and verified: no data is lost (the NAS holds it), and the
reconcile job clears the flag. What no lock here can stop: the file server inserting a new row
that reuses an existing key between step 3's read and the delete (a file server that
deduplicates by content must check the key's rows itself; uploads.py mints a key per upload)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from hybrid_pipelines.hybrid_cache.health_gate import NAS
from hybrid_pipelines.hybrid_cache.nas_recheck import RecheckSettings, recheck_copy
from hybrid_pipelines.hybrid_cache.objects import FID, CacheObjects
from hybrid_pipelines.hybrid_cache.rules.eviction_policy import (
    ORDER_BY,
    RECHECK_HASH_MAX_BYTES,
    RECHECK_MTIME_SKEW_S,
    Candidate,
    Policy,
    bytes_to_free,
    parse_policy,
    take_until,
    validate_thresholds,
)
from hybrid_pipelines.hybrid_cache.shared_keys import (
    ANOTHER_ROW_NEEDS_KEY,
    KeyRow,
    key_rows,
    renew_verified,
    requeue_from_cache,
    states,
)
from hybrid_pipelines.hybrid_cache.sync import describe
from hybrid_pipelines.resources.errors import Health
from hybrid_pipelines.resources.nas_fs import NASFileSystem
from hybrid_pipelines.shared.nas_root import NASRoot

log = logging.getLogger(__name__)

MAX_ERRORS = 50  # error texts kept in a report

Probe = Callable[[], Health]
Step = Callable[[str, list[UUID]], None]  # ("checked" | "evicted", row ids): test hooks


@dataclass(frozen=True)
class EvictionSettings:
    capacity_bytes: int
    threshold: float = 0.8
    target: float = 0.7
    policy: Policy = Policy.LRU
    batch_size: int = 100
    max_files: int = 10_000
    key_prefix: str = ""  # only objects under this prefix count and are evicted
    recheck_hash_max_bytes: int = RECHECK_HASH_MAX_BYTES
    recheck_mtime_skew_s: float = RECHECK_MTIME_SKEW_S
    location: NASRoot | None = None  # how stored nas_path values name the NAS root

    def __post_init__(self) -> None:
        validate_thresholds(self.capacity_bytes, self.threshold, self.target)
        object.__setattr__(self, "policy", parse_policy(str(self.policy)))
        if self.batch_size < 1 or self.max_files < 1:
            raise ValueError("eviction batch_size and max_files must be >= 1")
        RecheckSettings(self.recheck_hash_max_bytes, self.recheck_mtime_skew_s)  # validates

    @property
    def recheck(self) -> RecheckSettings:
        return RecheckSettings(self.recheck_hash_max_bytes, self.recheck_mtime_skew_s,
                               self.location)


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
    files_evicted: int = 0  # rows whose object was deleted (all rows of a shared key)
    bytes_evicted: int = 0  # object bytes deleted (a shared key's object counts once)
    delete_errors: int = 0
    recheck_failed: int = 0  # NAS copies gone or changed: rows re-queued, objects kept
    recheck_hashed: int = 0  # NAS copies read whole by the re-check
    bytes_hashed: int = 0
    recheck_errors: int = 0  # NAS up but the copy could not be read: kept this run
    keys_busy: int = 0  # keys whose rows changed or were locked before the delete: kept
    shared_keys_evicted: int = 0  # objects deleted on behalf of more than one row
    stopped_reason: str = ""
    stopped_backend: str = ""
    evicted_ids: list[UUID] = field(default_factory=list)
    recheck_failed_ids: list[UUID] = field(default_factory=list)
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

    def note(self, text: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(text)


def measure_usage(s3: Any, bucket: str, prefix: str, capacity_bytes: int) -> Usage:
    """Bytes really held in the cache bucket (under `prefix`), page by page."""
    total = count = 0
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            total += int(obj["Size"])
            count += 1
    return Usage(total, count, capacity_bytes)


def _with_fid_bytes(conn: psycopg.Connection, usage: Usage) -> Usage:
    """Objects the file server wrote straight to SeaweedFS (seaweed_fid a file id) are not in
    the bucket listing: count them from their rows."""
    row = conn.execute(
        "SELECT count(*), COALESCE(sum(size), 0) FROM file_metadata"
        " WHERE cache_status = 'cached' AND seaweed_fid ~ %s", (FID.pattern,)).fetchone()
    objects, size = (int(row[0]), int(row[1])) if row else (0, 0)
    return Usage(usage.bytes + size, usage.objects + objects, usage.capacity_bytes)


def select_candidates(conn: psycopg.Connection, policy: Policy, limit: int, key_prefix: str = "",
                      exclude: list[UUID] | None = None, lock: bool = True) -> list[Candidate]:
    """Evictable rows in policy order: cached, synced AND verified, and on a key no other row
    still needs. Read in the order of the policy's partial index; the NOT EXISTS is one probe
    of file_metadata_fid_idx per row read. `lock` takes row locks (inside a transaction)."""
    clauses = ["cache_status = 'cached'", "nas_status = 'synced'", "nas_verified_at IS NOT NULL",
               "seaweed_fid IS NOT NULL", "NOT " + ANOTHER_ROW_NEEDS_KEY]
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
        " FROM file_metadata f WHERE {where} ORDER BY {order} LIMIT %s{lock}").format(
        where=sql.SQL(" AND ".join(clauses)), order=sql.SQL(ORDER_BY[policy]),
        lock=sql.SQL(" FOR UPDATE SKIP LOCKED" if lock else ""))
    rows = conn.execute(query, params).fetchall()
    return [Candidate(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


def delete_objects(s3: Any, bucket: str, keys: list[str], master_url: str = ""
                   ) -> tuple[set[str], list[str]]:
    """Delete keys (S3 keys in the bucket, SeaweedFS file ids on their volume server); returns
    (deleted keys, error texts). A key already gone counts as deleted: the object is not in
    the cache, which is what we want."""
    return CacheObjects(s3, bucket, master_url).delete(keys)


def _mark_evicted(conn: psycopg.Connection, ids: list[UUID]) -> int:
    cur = conn.execute(
        "UPDATE file_metadata SET cache_status = NULL, updated_at = now()"
        " WHERE id = ANY(%s) AND cache_status = 'cached' AND nas_status = 'synced'"
        "   AND nas_verified_at IS NOT NULL", (ids,))
    return cur.rowcount


def _nas_down(probes: dict[str, Probe] | None, exc: BaseException) -> str:
    """Why the NAS cannot be checked at all ('' when it is up and only this file failed)."""
    probe = (probes or {}).get(NAS)
    if probe is None:  # nothing to tell an outage from a bad file: assume the worst
        return f"NAS error and no health probe to tell an outage from a bad file: {describe(exc)}"
    health = probe()
    return "" if health.ok else f"NAS went down: {health.detail}"


def _recheck_keys(conn: psycopg.Connection, nas: NASFileSystem, chosen: list[Candidate],
                  settings: RecheckSettings, report: EvictionReport,
                  probes: dict[str, Probe] | None, seen: list[UUID]
                  ) -> dict[str, list[KeyRow]]:
    """The chosen keys whose every row passed its NAS re-check, with the rows as checked.
    Every row on the chosen keys goes into `seen`: a key is decided once per run."""
    rows_by_key = key_rows(conn, [c.key for c in chosen])
    seen.extend(r.id for rows in rows_by_key.values() for r in rows)
    passed: dict[str, list[KeyRow]] = {}
    for cand in chosen:
        rows = rows_by_key.get(cand.key, [])
        if not any(r.id == cand.id and r.cache_status == "cached" for r in rows) or \
                not all(r.safe_on_nas for r in rows):
            report.keys_busy += 1  # changed since it was chosen
            continue
        ok = True
        for r in rows:
            assert r.nas_verified_at is not None  # safe_on_nas
            try:
                verdict = recheck_copy(nas, r.nas_path, r.size, r.hash, r.nas_verified_at,
                                       settings)
            except Exception as exc:  # noqa: BLE001 - an outage or one unreadable file
                if down := _nas_down(probes, exc):
                    report.stopped_reason, report.stopped_backend = down, NAS
                    log.warning("eviction stopped, nothing more deleted: %s", down)
                    return {}
                report.recheck_errors += 1
                report.note(f"{r.id}: cannot re-check NAS copy {r.nas_path}: {describe(exc)}")
                ok = False
                break
            if verdict.hashed:
                report.recheck_hashed += 1
                report.bytes_hashed += r.size
            if not verdict.ok:
                ok = False
                if requeue_from_cache(conn, r, verdict.reason):
                    report.recheck_failed += 1
                    report.recheck_failed_ids.append(r.id)
                    report.note(f"{r.id}: not evicted, re-queued: {verdict.reason}")
                    log.warning("file %s not evicted: %s; re-queued for sync", r.id,
                                verdict.reason)
            elif verdict.modified:
                renew_verified(conn, r)
        if ok:
            passed[cand.key] = rows
    return passed


def _delete_keys(conn: psycopg.Connection, s3: Any, bucket: str, size_of: dict[str, int],
                 checked: dict[str, list[KeyRow]], report: EvictionReport,
                 master_url: str = "") -> list[UUID]:
    """Lock, confirm nothing changed since the re-check, delete, mark. Returns evicted ids."""
    with conn.transaction():
        locked = key_rows(conn, list(checked), lock=True)
        current = key_rows(conn, list(checked))
        keep = [k for k, rows in checked.items()
                if states(rows) == states(locked.get(k)) == states(current.get(k))]
        report.keys_busy += len(checked) - len(keep)
        if not keep:
            return []
        deleted, errors = delete_objects(s3, bucket, keep, master_url)
        report.delete_errors += len(errors)
        for err in errors:
            report.note(f"delete failed: {err}")
        gone = [k for k in keep if k in deleted]
        ids = [r.id for k in gone for r in locked[k] if r.cache_status == "cached"]
        _mark_evicted(conn, ids)
    report.files_evicted += len(ids)
    report.bytes_evicted += sum(size_of[k] for k in gone)
    report.shared_keys_evicted += sum(1 for k in gone if len(locked[k]) > 1)
    report.evicted_ids.extend(ids)
    return ids


def _one_per_key(candidates: list[Candidate]) -> list[Candidate]:
    seen: set[str] = set()
    out = []
    for c in candidates:
        if c.key not in seen:
            seen.add(c.key)
            out.append(c)
    return out


def evict(conn: psycopg.Connection, s3: Any, bucket: str, nas: NASFileSystem, policy: Policy,
          need_bytes: int, max_files: int, batch_size: int = 100, key_prefix: str = "",
          report: EvictionReport | None = None, *, recheck: RecheckSettings | None = None,
          probes: dict[str, Probe] | None = None, on_step: Step | None = None,
          master_url: str = "") -> EvictionReport:
    """Evict in policy order until `need_bytes` are freed or `max_files` evicted. `conn` must be
    in autocommit mode: each batch's delete is one transaction. `probes` (backend -> health)
    tell a NAS outage, which stops the run, from one unreadable file, which is skipped."""
    recheck = recheck or RecheckSettings()
    if report is None:
        report = EvictionReport(policy.value, Usage(0, 0, 0), need_bytes)
    done: list[UUID] = []  # chosen and not evicted (re-queued, busy, failed): not again this run
    while report.bytes_evicted < need_bytes and report.files_evicted < max_files:
        if len(done) >= max_files:
            report.note(f"stopped after {len(done)} candidates that could not be evicted")
            break
        batch = _one_per_key(select_candidates(conn, policy, batch_size, key_prefix, done,
                                               lock=False))
        chosen = take_until(batch, need_bytes - report.bytes_evicted,
                            max_files - report.files_evicted)
        if not chosen:
            break
        seen: list[UUID] = [c.id for c in chosen]
        checked = _recheck_keys(conn, nas, chosen, recheck, report, probes, seen)
        if report.stopped_reason:
            break
        if on_step:
            on_step("checked", [r.id for rows in checked.values() for r in rows])
        evicted = _delete_keys(conn, s3, bucket, {c.key: c.size for c in chosen}, checked,
                               report, master_url) if checked else []
        gone = set(evicted)
        done.extend(i for i in set(seen) if i not in gone)
        if on_step and evicted:
            on_step("evicted", evicted)
    return report


def run_eviction(conn: psycopg.Connection, s3: Any, bucket: str, nas: NASFileSystem,
                 settings: EvictionSettings, usage: Usage | None = None, *,
                 probes: dict[str, Probe] | None = None,
                 on_step: Step | None = None, master_url: str = "") -> EvictionReport:
    """Measure, and evict down to the target if usage is above the threshold. Every object is
    deleted only after its NAS copies were looked at again (nas_recheck)."""
    if usage is None:
        usage = measure_usage(s3, bucket, settings.key_prefix, settings.capacity_bytes)
        if not settings.key_prefix:
            usage = _with_fid_bytes(conn, usage)
    need = bytes_to_free(usage.bytes, settings.capacity_bytes, settings.threshold,
                         settings.target)
    report = EvictionReport(settings.policy.value, usage, need)
    if need <= 0:
        return report
    evict(conn, s3, bucket, nas, settings.policy, need, settings.max_files, settings.batch_size,
          settings.key_prefix, report, recheck=settings.recheck, probes=probes, on_step=on_step,
          master_url=master_url)
    if report.shortfall_bytes and not report.stopped_reason:
        log.warning("freed %d of %d bytes: not enough cached files are synced, verified and "
                    "re-checked on the NAS (unsynced files, and keys another row still needs, "
                    "are never evicted)", report.bytes_evicted, need)
    return report
