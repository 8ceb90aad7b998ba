"""Pending sync: drain the SeaweedFS cache to the NAS, one verified copy per file, several
files in flight (sync_pipeline.SyncRun: file N+1 streams while file N is read back).

Per file: reserve its NAS name (two rows can never be placed at one name, as the NAS compares
names), stream the object from SeaweedFS to a new temporary name on the NAS while hashing it,
re-read what the NAS holds on the same handle and compare its SHA-256 with the recorded hash,
rename into place through that handle without replacing anything, and mark the row synced in
the same locked transaction, only if this run still holds the row's lease (renewed all along
the copy). A run that dies at any point leaves either a 'syncing' row (its lease expires and it
returns to the queue; a copy already renamed into place is recognised by its bytes) or a stray
temporary file (the reconcile job removes stale ones), never a row marked synced without a
verified copy, never a file replaced.

Where files may go: a row's nas_path as the file server recorded it, anywhere in the share by
default (it is the platform's column; `safe_relpath` keeps it inside the share); with
`nas_root` set, only beneath that folder, and a row pointing elsewhere fails for good with the
reason. Rows without a nas_path go under `nas_prefix` (which must lie within `nas_root`)."""

from __future__ import annotations

import errno
import hashlib
import logging
import posixpath
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

import psycopg

from hybrid_pipelines.hybrid_cache import metadata_store as store
from hybrid_pipelines.hybrid_cache.follow_read import WriteMark
from hybrid_pipelines.hybrid_cache.hashing_copy import (
    CHUNK_SIZE,
    CopyResult,
    Progress,
    copy_with_sha256,
    sha256_of_stream,
)
from hybrid_pipelines.hybrid_cache.objects import CacheObjects
from hybrid_pipelines.hybrid_cache.placement import reserve
from hybrid_pipelines.hybrid_cache.rules.nas_keys import canonical_key, is_within
from hybrid_pipelines.hybrid_cache.rules.nas_location import root_relative
from hybrid_pipelines.hybrid_cache.sync_errors import (
    BackendDown,
    LeaseLost,
    NASConflictError,
    PermanentSyncError,
    VerificationError,
)
from hybrid_pipelines.resources.errors import Health
from hybrid_pipelines.resources.nas_fs import NASEntry, NASFileSystem
from hybrid_pipelines.resources.nas_new_file import NewFile
from hybrid_pipelines.shared.nas_paths import UnsafePathError, safe_relpath
from hybrid_pipelines.shared.nas_root import NASRoot

__all__ = ["BackendDown", "LeaseLost", "NASConflictError", "PermanentSyncError",
           "SyncReport", "SyncSettings", "VerificationError", "run_pending_sync"]

log = logging.getLogger(__name__)
T = TypeVar("T")

PARTIAL_MARK = ".partial-"
# 1 MiB per read and write. Measured (bench/sync.py): 4 MiB requests were slower with
# smbprotocol, whose per-request signing and packing copy the whole payload; at 1 MiB the
# request round trip is already under a tenth of its transfer time on gigabit.
SYNC_CHUNK_SIZE = CHUNK_SIZE
# A file this large is looked for at its NAS name before it is copied (a crashed run may have
# placed it already: its bytes are then checked instead of copied again). Smaller files skip
# that round trip: the rename never replaces, so a name found taken is checked just the same,
# after a copy that costs less than the look-up saved on every other file.
PRECHECK_MIN_BYTES = 8 << 20
# A file of this many chunks or more (16 MiB at the default chunk) is read back while it is
# written (follow_read.py), a chunk behind the copy: one 1 GiB file otherwise takes its copy
# time twice. Smaller files overlap with the other files in flight instead.
FOLLOW_MIN_CHUNKS = 16
MAX_FILES_IN_FLIGHT = 32
# file_metadata.nas_path is VARCHAR(500) on the platform's table: a longer path cannot be
# recorded, so it is refused before anything is written.
NAS_PATH_MAX = 500


@dataclass(frozen=True)
class SyncSettings:
    batch_size: int = 50
    max_batches: int = 20
    max_attempts: int = 3
    lease_timeout_s: float = 600.0
    nas_prefix: str = "uploads"
    chunk_size: int = SYNC_CHUNK_SIZE
    retry_delay_s: float = 60.0  # a failed file waits this long before its next attempt
    nas_root: str = ""  # every nas_path must lie beneath this folder ('' = the whole NAS root)
    # How the file server's own nas_path values name the NAS root (NASResource.root()): UNC,
    # smb:// and absolute forms resolve through it; None takes relative paths only.
    location: NASRoot | None = None
    # Files copied and verified at once by one run (one worker thread and NAS session each,
    # the run's one database connection): file N+1 is copied while N is read back.
    # Runs themselves are capped by the nas_sync run pool (defs/pools.py).
    files_in_flight: int = 4
    # A file in flight with no chunk copied or read back for this long is given up (its row
    # re-queued with an attempt charged): a NAS call that never returns must not hold the run.
    stall_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_batches", "max_attempts", "chunk_size",
                     "files_in_flight"):
            if getattr(self, name) < 1:
                raise ValueError(f"sync setting {name} must be >= 1, got {getattr(self, name)}")
        if self.files_in_flight > MAX_FILES_IN_FLIGHT:
            raise ValueError(f"sync setting files_in_flight must be <= {MAX_FILES_IN_FLIGHT} "
                             f"(one NAS session and thread each), got {self.files_in_flight}")
        if self.stall_timeout_s <= 0:
            raise ValueError(f"stall_timeout_s must be > 0 seconds, got {self.stall_timeout_s}")
        if self.lease_timeout_s < 1:
            raise ValueError(f"lease_timeout_s must be >= 1 second, got {self.lease_timeout_s}")
        if self.retry_delay_s < 0:
            raise ValueError(f"retry_delay_s must be >= 0, got {self.retry_delay_s}")
        try:
            root, prefix = safe_relpath(self.nas_root), safe_relpath(self.nas_prefix)
        except UnsafePathError as exc:
            raise ValueError(f"sync setting nas_root or nas_prefix is unsafe: {exc}") from exc
        if root and canonical_key(prefix) != canonical_key(root) and \
                not is_within(prefix, root):
            raise ValueError(f"sync setting nas_prefix {self.nas_prefix!r} must lie within "
                             f"nas_root {self.nas_root!r}: rows without a nas_path go there")


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
    # Long enough for a 500-character nas_path and the fix that follows it.
    return f"{type(exc).__name__}: {text}"[:1200]


def resolve_target(row: store.FileRow, settings: SyncSettings) -> str:
    """The row's NAS path, checked: beneath the NAS root, not the root itself, within nas_root.
    The stored value may be root-relative, UNC, smb:// or absolute under the root's mount."""
    try:
        target = root_relative(row.nas_path, settings.location) if row.nas_path else \
            default_nas_path(settings.nas_prefix, row)
    except UnsafePathError as exc:
        raise PermanentSyncError(f"nas_path {row.nas_path!r} is unsafe: {exc}") from exc
    if not target:
        raise PermanentSyncError("nas_path is empty (it names the share root)")
    if not row.nas_path and len(target) > NAS_PATH_MAX:
        raise PermanentSyncError(
            f"the default NAS path for file {row.id} is {len(target)} characters, over the "
            f"{NAS_PATH_MAX} that file_metadata.nas_path holds: shorten the sync's nas_prefix "
            f"({settings.nas_prefix!r}) or the file's stored_name, or set its nas_path")
    if not is_within(target, settings.nas_root):
        raise PermanentSyncError(
            f"nas_path {row.nas_path!r} is outside the sync's NAS folder {settings.nas_root!r} "
            f"(setting nas_root): give file {row.id} a nas_path beneath it, or widen nas_root")
    return target



@dataclass(frozen=True)
class Job:
    """One claimed row on its way to the NAS: where it goes and what its bytes must hash to
    (None: the row records no hash; the copy's own hash is then checked on the read-back)."""
    seq: int  # queue order, so the report lists files in the order they were claimed
    row: store.FileRow
    target: str
    tmp: str
    expected: str | None


@dataclass(frozen=True)
class Verified:
    """`tmp` on the NAS was read back whole: exactly the row's size and this SHA-256. `file`
    is still open on it, for the rename into place (NewFile.rename_and_close)."""
    sha256: str
    file: NewFile


@dataclass(frozen=True)
class AlreadyThere:
    """`target` already exists (a run placed it and stopped before marking, or a conflict)."""
    entry: NASEntry


def prepare(conn: psycopg.Connection, row: store.FileRow, settings: SyncSettings, owner: str,
            token: str, seq: int) -> Job:
    """The database half before the copy (run's thread, under its db lock): the target
    checked and recorded, its NAS name reserved. Raises PermanentSyncError for a bad path."""
    target = resolve_target(row, settings)
    if not row.nas_path:
        store.assign_nas_path(conn, row.id, owner, target)
    reserve(conn, row, target)
    return Job(seq, row, target, temp_name(target, token), row.hash.lower() if row.hash else None)


ReadBack = Callable[[str, WriteMark], "Future[CopyResult]"]
"""Starts reading `path` back in another thread (its own NAS session) as `mark` advances."""


def copy_and_verify(objects: CacheObjects, nas: NASFileSystem, job: Job, chunk_size: int,
                    progress: Progress, folders: set[str],
                    read_back: ReadBack | None = None) -> Verified | AlreadyThere:
    """The I/O half (a worker thread): put the object at `job.tmp` and re-read the whole NAS
    copy through the same handle, checking its size and SHA-256. A file of one chunk or less
    is read from SeaweedFS whole, checked, then written and read back in one exchange
    (NASFileSystem.put_new); a larger one is streamed while hashed and read back after the
    copy or, from FOLLOW_MIN_CHUNKS chunks with `read_back` given, during it. Any failure
    removes the temporary file (NewFile.discard); on success it stays open for the rename."""
    row, tmp = job.row, job.tmp
    if job.expected and row.size >= PRECHECK_MIN_BYTES and \
            (entry := nas.stat(job.target)) is not None:
        return AlreadyThere(entry)  # no copy needed: its bytes are checked before adopting
    assert row.seaweed_fid is not None  # claim_pending takes only rows with one
    body = objects.open(row.seaweed_fid)
    mark, follower, out = WriteMark(), None, None
    try:
        try:
            if row.size <= chunk_size:
                data = _read_whole(body, row.size)
                expected = _check_cached(job, CopyResult(len(data), _sha256(data)))
                out, back = _in_folder(nas, tmp, folders, lambda: nas.put_new(tmp, data))
                progress(len(data))
                held = CopyResult(len(back), _sha256(back))
            else:
                follow = read_back is not None and row.size >= FOLLOW_MIN_CHUNKS * chunk_size
                out = _in_folder(nas, tmp, folders,
                                 lambda: nas.create_new(tmp, followed=follow))
                step = progress
                if follow and not out.reads_back_as_written:
                    assert read_back is not None
                    follower = read_back(tmp, mark)
                    step = _following(progress, mark, follower)
                copied = copy_with_sha256(body, out, chunk_size, progress=step)
                mark.finished()
                expected = _check_cached(job, copied)
                held = follower.result() if follower is not None else \
                    _read_back(out, chunk_size, progress)
        finally:
            body.close()
        if held.size != row.size or held.sha256 != expected:
            raise VerificationError(f"NAS copy {tmp} is corrupt: {held.size} bytes with SHA-256 "
                                    f"{held.sha256[:12]}..., expected {row.size} bytes "
                                    f"{expected[:12]}...")
    except BaseException:
        if follower is not None:
            mark.failed()
            _settle(follower)
        if out is not None:
            out.discard()
        raise
    assert out is not None  # both ways of copying opened it
    return Verified(expected, out)


def _read_back(out: NewFile, chunk_size: int, progress: Progress) -> CopyResult:
    """The whole NAS copy hashed: over the lean SMB connection where there is one (a third of
    smbprotocol's CPU per byte, smb_wire_hash.py), else on the copy's own handle."""
    if (held := out.hash_on_server(progress)) is not None:
        return CopyResult(*held)
    return sha256_of_stream(out.reader(), chunk_size, progress=progress)


def _read_whole(body: Any, size: int) -> bytes:
    """A small object whole, and one byte more if it holds more than `size`."""
    parts, got = [], 0
    while got <= size and (part := body.read(size + 1 - got)):
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_cached(job: Job, copied: CopyResult) -> str:
    """What SeaweedFS gave is the upload as recorded; the SHA-256 the NAS copy must have."""
    row = job.row
    if copied.size != row.size:
        # A small object is read one byte past its recorded size, no further.
        got = f"more than {row.size}" if copied.size > row.size else str(copied.size)
        raise VerificationError(f"SeaweedFS object {row.seaweed_fid} is {got} bytes, the "
                                f"upload was recorded as {row.size}")
    if job.expected and copied.sha256 != job.expected:
        raise VerificationError(f"SeaweedFS object {row.seaweed_fid} does not match the "
                                f"recorded SHA-256 (got {copied.sha256[:12]}..., recorded "
                                f"{job.expected[:12]}...)")
    return job.expected or copied.sha256


def _following(progress: Progress, mark: WriteMark, follower: Future[CopyResult]) -> Progress:
    """The writer's progress: tell the reader how far it may read; stop if the reader failed
    (a read error found mid-copy need not wait for the whole file to be written)."""

    def step(nbytes: int) -> None:
        progress(nbytes)
        mark.advance(nbytes)
        if follower.done() and (exc := follower.exception()) is not None:
            raise exc

    return step


def _settle(follower: Future[CopyResult], timeout_s: float = 30.0) -> None:
    """Let a failed copy's reader end (it was told) before its file is removed."""
    try:
        follower.result(timeout_s)
    except BaseException:  # noqa: BLE001, S110 - the copy's own error is the one reported
        pass


_MAKING_FOLDERS = threading.Lock()


def _in_folder(nas: NASFileSystem, path: str, folders: set[str], create: Callable[[], T]) -> T:
    """`create()` a file at `path`, its folder made first unless this run already made sure
    of it (`folders`, shared by the run's workers: one round trip saved per file)."""
    parent = posixpath.dirname(path)
    if parent and parent not in folders:
        with _MAKING_FOLDERS:  # one worker at a time (smb_wire_worker.makedirs: Samba's panic)
            if parent not in folders:
                nas.makedirs(parent)
                folders.add(parent)
    try:
        return create()
    except OSError as exc:
        if exc.errno != errno.ENOENT or not parent:
            raise
    nas.makedirs(parent)  # the folder was removed during the run: made again, once
    return create()


def run_pending_sync(conn: psycopg.Connection, s3: Any, bucket: str, nas: NASFileSystem,
                     settings: SyncSettings | None = None, *, owner: str | None = None,
                     probes: dict[str, Probe] | None = None,
                     on_file: Callable[[store.FileRow, str], None] | None = None,
                     master_url: str = "") -> SyncReport:
    """Sync pending rows, `settings.files_in_flight` files at a time. `conn` must be in
    autocommit mode; only this call's thread and its lease renewals use it. `probes`
    (backend -> health check) tell a backend outage from a bad file: on an outage the run
    hands its claimed rows back without charging attempts and stops. `on_file(row, outcome)`
    follows progress. `master_url` (SeaweedFS master) reads rows whose seaweed_fid is a
    SeaweedFS file id."""
    from hybrid_pipelines.hybrid_cache.sync_pipeline import SyncRun

    settings = settings or SyncSettings()
    owner = owner or f"sync-{uuid.uuid4().hex[:12]}"
    report = SyncReport(owner)
    report.leases_expired = store.release_expired_leases(conn)
    SyncRun(conn, CacheObjects(s3, bucket, master_url), nas, settings, owner,
            uuid.uuid4().hex[:8], report, probes or {}, on_file).run()
    return report


def fail(conn: psycopg.Connection, row: store.FileRow, owner: str, settings: SyncSettings,
         report: SyncReport, exc: BaseException, permanent: bool) -> str:
    reason = describe(exc)
    status = store.record_failure(conn, row.id, owner, reason, settings.max_attempts, permanent)
    report.errors.append(f"{row.id}: {reason}")
    if status == "failed":
        # It placed nothing: its NAS name is free for the file that should have it.
        store.release_reservations(conn, row.id)
        report.failed_final += 1
        log.error("file %s (%s) failed for good: %s", row.id, row.original_name, reason)
    elif status == "pending":
        report.failed_attempts += 1
        log.warning("file %s (%s) attempt failed, will retry: %s", row.id, row.original_name,
                    reason)
    else:
        report.leases_lost += 1
    return status or "lease_lost"
