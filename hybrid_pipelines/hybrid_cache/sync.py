"""Pending sync: drain the SeaweedFS cache to the NAS, one verified copy per file.

Per file: stream the object from SeaweedFS to a temporary name on the NAS while hashing it,
re-read what the NAS holds and compare its SHA-256 with the recorded hash, rename into place,
and only then mark the row synced. A run that dies at any point leaves either a 'syncing' row
(its lease expires and it returns to the queue) or a stray temporary file (the reconcile job
removes stale ones), never a row marked synced without a verified copy."""

from __future__ import annotations

import logging
import posixpath
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg

from hybrid_pipelines.hybrid_cache import metadata_store as store
from hybrid_pipelines.hybrid_cache.hashing_copy import (
    CHUNK_SIZE,
    copy_with_sha256,
    sha256_of_stream,
)
from hybrid_pipelines.resources.errors import Health
from hybrid_pipelines.resources.nas_fs import NASFileSystem
from hybrid_pipelines.shared.nas_paths import UnsafePathError, safe_relpath

log = logging.getLogger(__name__)

PARTIAL_MARK = ".partial-"


@dataclass(frozen=True)
class SyncSettings:
    batch_size: int = 50
    max_batches: int = 20
    max_attempts: int = 3
    lease_timeout_s: float = 600.0
    nas_prefix: str = "uploads"
    chunk_size: int = CHUNK_SIZE
    retry_delay_s: float = 60.0  # a failed file waits this long before its next attempt

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_batches", "max_attempts", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"sync setting {name} must be >= 1, got {getattr(self, name)}")
        if self.lease_timeout_s < 1:
            raise ValueError(f"lease_timeout_s must be >= 1 second, got {self.lease_timeout_s}")
        if self.retry_delay_s < 0:
            raise ValueError(f"retry_delay_s must be >= 0, got {self.retry_delay_s}")


@dataclass
class SyncReport:
    owner: str
    claimed: int = 0
    synced: int = 0
    bytes_synced: int = 0
    failed_attempts: int = 0   # attempts that went back to 'pending'
    failed_final: int = 0      # rows that reached 'failed'
    released: int = 0          # handed back without charge (a backend went down)
    leases_expired: int = 0    # rows of crashed runs returned to the queue at start
    leases_lost: int = 0
    stopped_reason: str = ""
    stopped_backend: str = ""
    synced_ids: list[UUID] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def failure_rate(self) -> float:
        tried = self.synced + self.failed_attempts + self.failed_final
        return (self.failed_attempts + self.failed_final) / tried if tried else 0.0


class VerificationError(RuntimeError):
    """A copy whose bytes do not match the recorded size or SHA-256."""


class PermanentSyncError(RuntimeError):
    """Retrying cannot help (unsafe NAS path, path owned by another file): fail at once."""


class BackendDown(RuntimeError):
    def __init__(self, backend: str, detail: str):
        self.backend, self.detail = backend, detail
        super().__init__(f"{backend} went down: {detail}")


Probe = Callable[[], Health]


def default_nas_path(prefix: str, row: store.FileRow) -> str:
    """Where a file goes when the file server did not say: by upload day, then the id, so two
    uploads with the same name never collide."""
    day = row.created_at.strftime("%Y/%m/%d")
    return safe_relpath(posixpath.join(prefix, day, str(row.id), row.stored_name))


def temp_name(target: str, token: str) -> str:
    head, name = posixpath.split(target)
    # Keep the temporary name within the 255-byte limit of NAS file names.
    short = name.encode()[:180].decode(errors="ignore")
    return posixpath.join(head, f".{short}{PARTIAL_MARK}{token}") if head else \
        f".{short}{PARTIAL_MARK}{token}"


def is_partial(name: str) -> bool:
    base = posixpath.basename(name)
    return base.startswith(".") and PARTIAL_MARK in base


def describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:500]


def _remove_quietly(nas: NASFileSystem, path: str) -> None:
    try:
        nas.remove(path)
    except Exception as exc:  # noqa: BLE001 - reconcile removes what we could not
        log.warning("could not remove temporary NAS file %s: %s", path, describe(exc))


def copy_one(conn: psycopg.Connection, s3: Any, bucket: str, nas: NASFileSystem,
             row: store.FileRow, settings: SyncSettings, owner: str, token: str) -> int:
    """Copy one claimed row to the NAS and mark it synced; returns the bytes copied."""
    try:
        target = safe_relpath(row.nas_path) if row.nas_path else \
            default_nas_path(settings.nas_prefix, row)
    except UnsafePathError as exc:
        raise PermanentSyncError(f"nas_path {row.nas_path!r} is unsafe: {exc}") from exc
    if not target:
        raise PermanentSyncError("nas_path is empty (it names the share root)")
    if not row.nas_path:
        store.assign_nas_path(conn, row.id, owner, target)
    if other := store.nas_path_taken_by(conn, target, row.id):
        raise PermanentSyncError(f"NAS path {target!r} already holds file {other}; give this "
                                 "file its own nas_path")
    expected = row.hash.lower() if row.hash else None
    parent = posixpath.dirname(target)
    if parent:
        nas.makedirs(parent)
    tmp = temp_name(target, token)
    obj = s3.get_object(Bucket=bucket, Key=row.seaweed_fid)
    body = obj["Body"]
    try:
        try:
            with nas.open_write(tmp) as out:
                copied = copy_with_sha256(body, out, settings.chunk_size)
        finally:
            body.close()
        if copied.size != row.size:
            raise VerificationError(f"SeaweedFS object {row.seaweed_fid} is {copied.size} bytes, "
                                    f"the upload was recorded as {row.size}")
        if expected and copied.sha256 != expected:
            raise VerificationError(f"SeaweedFS object {row.seaweed_fid} does not match the "
                                    f"recorded SHA-256 (got {copied.sha256[:12]}..., recorded "
                                    f"{expected[:12]}...)")
        expected = expected or copied.sha256
        with nas.open_read(tmp) as fh:
            held = sha256_of_stream(fh, settings.chunk_size)
        if held.size != row.size or held.sha256 != expected:
            raise VerificationError(f"NAS copy {tmp} is corrupt: {held.size} bytes with SHA-256 "
                                    f"{held.sha256[:12]}..., expected {row.size} bytes "
                                    f"{expected[:12]}...")
        nas.rename(tmp, target)
    except BaseException:
        _remove_quietly(nas, tmp)
        raise
    if not store.mark_synced(conn, row.id, owner, expected, target):
        raise LeaseLost(row.id)
    return row.size


class LeaseLost(RuntimeError):
    def __init__(self, file_id: UUID):
        super().__init__(f"lease on {file_id} expired and another run took it over; raise "
                         "lease_timeout_s above the time a batch takes")


def _backend_down(probes: dict[str, Probe]) -> BackendDown | None:
    for backend, probe in probes.items():
        health = probe()
        if not health.ok:
            return BackendDown(backend, health.detail)
    return None


def run_pending_sync(conn: psycopg.Connection, s3: Any, bucket: str, nas: NASFileSystem,
                     settings: SyncSettings | None = None, *, owner: str | None = None,
                     probes: dict[str, Probe] | None = None,
                     on_file: Callable[[store.FileRow, str], None] | None = None) -> SyncReport:
    """Sync pending rows batch by batch. `conn` must be in autocommit mode. `probes` (backend ->
    health check) tell a backend outage from a bad file: on an outage the run hands its claimed
    rows back without charging attempts and stops. `on_file(row, outcome)` follows progress."""
    settings = settings or SyncSettings()
    owner = owner or f"sync-{uuid.uuid4().hex[:12]}"
    token = uuid.uuid4().hex[:8]
    report = SyncReport(owner)
    probes = probes or {}
    report.leases_expired = store.release_expired_leases(conn)
    tried: list[UUID] = []  # one attempt per file per run: a retry waits for a later run
    for _ in range(settings.max_batches):
        rows = store.claim_pending(conn, owner, settings.batch_size, settings.lease_timeout_s,
                                   settings.max_attempts, settings.retry_delay_s, tried)
        if not rows:
            break
        report.claimed += len(rows)
        tried.extend(r.id for r in rows)
        done = 0
        try:
            for row in rows:
                outcome = _sync_row(conn, s3, bucket, nas, row, settings, owner, token, report,
                                    probes)
                done += 1
                if on_file:
                    on_file(row, outcome)
        except BackendDown as down:
            report.stopped_reason, report.stopped_backend = str(down), down.backend
            report.released += store.release(conn, [r.id for r in rows[done:]], owner,
                                              f"released: {down}")
            log.warning("%s; %d rows handed back to the queue", down, report.released)
            return report
        finally:
            # Anything unexpected (the database itself failing, an interrupt): best effort to
            # hand back what we still hold; the lease expiry covers the rest.
            leftover = [r.id for r in rows[done:]]
            if leftover and not report.stopped_reason:
                try:
                    store.release(conn, leftover, owner, "released: the run stopped")
                except Exception:  # noqa: BLE001 - lease expiry returns them anyway
                    pass
    return report


def _sync_row(conn: psycopg.Connection, s3: Any, bucket: str, nas: NASFileSystem,
              row: store.FileRow, settings: SyncSettings, owner: str, token: str,
              report: SyncReport, probes: dict[str, Probe]) -> str:
    if not store.renew_lease(conn, owner, [row.id], settings.lease_timeout_s):
        report.leases_lost += 1
        return "lease_lost"
    try:
        report.bytes_synced += copy_one(conn, s3, bucket, nas, row, settings, owner, token)
    except LeaseLost as exc:
        report.leases_lost += 1
        report.errors.append(str(exc))
        return "lease_lost"
    except (VerificationError, PermanentSyncError, UnsafePathError) as exc:
        # A path the NAS refuses (e.g. characters SMB cannot store) will never work: fail now.
        return _fail(conn, row, owner, settings, report, exc,
                     permanent=not isinstance(exc, VerificationError))
    except Exception as exc:  # noqa: BLE001 - a backend error or a bad file; find out which
        if down := _backend_down(probes):
            raise down from exc
        return _fail(conn, row, owner, settings, report, exc, permanent=False)
    report.synced += 1
    report.synced_ids.append(row.id)
    return "synced"


def _fail(conn: psycopg.Connection, row: store.FileRow, owner: str, settings: SyncSettings,
          report: SyncReport, exc: BaseException, permanent: bool) -> str:
    reason = describe(exc)
    status = store.record_failure(conn, row.id, owner, reason, settings.max_attempts, permanent)
    report.errors.append(f"{row.id}: {reason}")
    if status == "failed":
        report.failed_final += 1
        log.error("file %s (%s) failed for good: %s", row.id, row.original_name, reason)
    elif status == "pending":
        report.failed_attempts += 1
        log.warning("file %s (%s) attempt failed, will retry: %s", row.id, row.original_name,
                    reason)
    else:
        report.leases_lost += 1
    return status or "lease_lost"
