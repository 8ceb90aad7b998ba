"""One sync run with several files in flight: while file N is read back from the NAS and
hashed, file N+1 is already streaming from SeaweedFS, so the read-back check costs little
wall time instead of doubling it.

Who does what: the run's own thread owns the run's database connection (claims,
reservations, failures); up to `files_in_flight` worker threads carry one file each from
start to end: copy to a temporary name, full read-back and hash check, then the locked rename
+ mark on the worker's own database connection (worker_db.py), so renames of small files no
longer queue behind one another. Workers touch the run's connection only to renew its leases,
under the run's `db_lock`. So every guarantee of the one-file-at-a-time sync holds per file:
names reserved before the copy, rename without replace under a locked, still-valid lease,
conflicts left alone, a lost lease stopping the copy at its next chunk. A file that fails
verification is charged an attempt and re-queued whatever the files around it do; a backend
outage stops the copies in flight at their next chunk, removes their temporary files and
hands every held row back uncharged (a file already placed stays synced)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from uuid import UUID

import psycopg

from hybrid_pipelines.hybrid_cache import metadata_store as store
from hybrid_pipelines.hybrid_cache.copy_workers import CopyWorkers, Stalls
from hybrid_pipelines.hybrid_cache.follow_read import WriteMark, read_back_following
from hybrid_pipelines.hybrid_cache.hashing_copy import CopyResult
from hybrid_pipelines.hybrid_cache.lease_keeper import LeaseKeeper
from hybrid_pipelines.hybrid_cache.nas_sessions import PerThreadNAS
from hybrid_pipelines.hybrid_cache.objects import CacheObjects
from hybrid_pipelines.hybrid_cache.placement import adopt_existing, place, remove_quietly
from hybrid_pipelines.hybrid_cache.sync import (
    AlreadyThere,
    Job,
    Probe,
    SyncReport,
    SyncSettings,
    Verified,
    copy_and_verify,
    fail,
    prepare,
)
from hybrid_pipelines.hybrid_cache.sync_errors import (
    BackendDown,
    LeaseLost,
    PermanentSyncError,
    RunStopped,
    VerificationError,
)
from hybrid_pipelines.hybrid_cache.worker_db import PerThreadDB
from hybrid_pipelines.resources.nas_fs import NASFileSystem
from hybrid_pipelines.shared.nas_paths import UnsafePathError

log = logging.getLogger(__name__)

STALL_CHECK_S = 5.0  # how often the run looks for a stalled copy while none finishes
STOP_GRACE_S = 30.0  # how long a stopping run waits for its copies to end


class CopyStalled(Exception):
    """A file in flight made no progress for stall_timeout_s."""


@dataclass
class SyncRun:
    conn: psycopg.Connection
    objects: CacheObjects
    nas: NASFileSystem
    settings: SyncSettings
    owner: str
    token: str
    report: SyncReport
    probes: dict[str, Probe]
    on_file: Callable[[store.FileRow, str], None] | None = None
    keeper: LeaseKeeper = field(init=False)
    _waiting: deque[store.FileRow] = field(default_factory=deque)
    _in_flight: dict[Future[bool], Job] = field(default_factory=dict)
    _tried: list[UUID] = field(default_factory=list)  # one attempt per file per run
    _batches: int = 0
    _seq: int = 0
    _synced: list[tuple[int, UUID]] = field(default_factory=list)
    _worker_nas: PerThreadNAS = field(init=False)
    _worker_db: PerThreadDB = field(init=False)
    _readers: CopyWorkers = field(init=False)  # large files' read-backs (follow_read.py)
    _folders: set[str] = field(default_factory=set)  # NAS folders this run made sure exist
    _stalls: Stalls = field(default_factory=Stalls)

    def __post_init__(self) -> None:
        self.keeper = LeaseKeeper(self.conn, self.owner, self.settings.lease_timeout_s)

    # ---- the loop ----------------------------------------------------------------------
    def run(self) -> None:
        workers = CopyWorkers(self.settings.files_in_flight, f"{self.owner}-copy")
        # Threads of their own: a copy worker waits for its file's reader, so the two must
        # never queue behind one another.
        self._readers = CopyWorkers(self.settings.files_in_flight, f"{self.owner}-read")
        self._worker_nas = PerThreadNAS(self.nas)
        self._worker_db = PerThreadDB(self.conn)
        try:
            while self._fill(workers):
                done, _ = wait(self._in_flight, timeout=STALL_CHECK_S,
                               return_when=FIRST_COMPLETED)
                if not done:
                    self._check_stalls(workers)
                for fut in sorted(done, key=lambda f: self._in_flight[f].seq):
                    self._finish(self._in_flight.pop(fut), fut)
        except BackendDown as down:
            self.report.stopped_reason, self.report.stopped_backend = str(down), down.backend
            self.report.released += self._stop(f"released: {down}")
            log.warning("%s; %d rows handed back to the queue", down, self.report.released)
        except BaseException:
            # The database itself failing, an interrupt: best effort to hand back what we
            # still hold; the lease expiry covers the rest.
            try:
                self._stop("released: the run stopped")
            except Exception:  # noqa: BLE001 - lease expiry returns them anyway
                pass
            raise
        finally:
            stuck = workers.shutdown(STOP_GRACE_S) + self._readers.shutdown(STOP_GRACE_S)
            if stuck:  # daemon threads: they cannot hold the process; their rows went back
                log.warning("copy threads %s still stuck in a NAS or SeaweedFS call; left "
                            "behind", ", ".join(stuck))
            else:
                self._worker_nas.close()
                self._worker_db.close()
            self._synced.sort()
            self.report.synced_ids.extend(i for _, i in self._synced)

    def _fill(self, workers: CopyWorkers) -> bool:
        """Start copies until `files_in_flight` run; False when nothing is left to do."""
        while len(self._in_flight) < self.settings.files_in_flight:
            if not self._waiting and not self._claim():
                break
            row = self._waiting.popleft()
            if not self.keeper.holds(row.id):
                self.report.leases_lost += 1
                self._outcome(row, "lease_lost")
                continue
            with self.keeper.db_lock:
                try:
                    job = prepare(self.conn, row, self.settings, self.owner, self.token,
                                  self._seq)
                except (PermanentSyncError, UnsafePathError) as exc:
                    outcome = fail(self.conn, row, self.owner, self.settings, self.report,
                                   exc, permanent=True)
                except BaseException:
                    self._waiting.appendleft(row)  # still ours: handed back with the rest
                    raise
                else:
                    outcome = ""
            if outcome:
                self._outcome(row, outcome)
                continue
            self._seq += 1
            self._stalls.touch(row.id)  # the stall clock starts at submission
            fut = workers.submit(self._carry, job, self._progress(row.id))
            self._in_flight[fut] = job
        return bool(self._in_flight)

    def _claim(self) -> bool:
        if self._batches >= self.settings.max_batches:
            return False
        self._batches += 1
        s = self.settings
        with self.keeper.db_lock:
            rows = store.claim_pending(self.conn, self.owner, s.batch_size, s.lease_timeout_s,
                                       s.max_attempts, s.retry_delay_s, self._tried)
        if not rows:
            self._batches = s.max_batches
            return False
        self.keeper.claimed(r.id for r in rows)
        self.report.claimed += len(rows)
        self._tried.extend(r.id for r in rows)
        self._waiting.extend(rows)
        return True

    def _progress(self, file_id: UUID) -> Callable[[int], None]:
        lease = self.keeper.progress_for(file_id)

        def progress(nbytes: int) -> None:
            if nbytes:  # a reader waiting for its writer checks in with 0: not progress
                self._stalls.touch(file_id)
            lease(nbytes)

        return progress

    def _check_stalls(self, workers: CopyWorkers) -> None:
        """A copy without progress for stall_timeout_s: a backend down stops the run;
        otherwise that copy is given up (charged, re-queued) and its thread replaced, so a
        call that never returns cannot hold the run."""
        stalled = set(self._stalls.stalled(self.settings.stall_timeout_s))
        if not stalled:
            return
        if down := self._backend_down():
            raise down
        for fut, job in list(self._in_flight.items()):
            if job.row.id in stalled:
                del self._in_flight[fut]
                self._stalls.done(job.row.id)
                workers.add_thread()
                self._readers.add_thread()
                exc = CopyStalled(f"no progress copying or verifying {job.row.nas_path!r} for "
                                  f"{self.settings.stall_timeout_s:.0f} s (a NAS or SeaweedFS "
                                  "call that does not return); retried by a later run")
                self._outcome(job.row, self._fail(job, exc, permanent=False))

    # ---- one file, in its worker thread ------------------------------------------------
    def _carry(self, job: Job, progress: Callable[[int], None]) -> bool:
        """Copy, verify and place one file; True if this copy was renamed into place, False
        if the NAS already held its bytes there (adopted)."""
        def read_back(path: str, mark: WriteMark) -> Future[CopyResult]:
            return self._readers.submit(self._follow, path, mark, progress)

        result = copy_and_verify(self.objects, self._worker_nas, job, self.settings.chunk_size,
                                 progress, self._folders, read_back)
        if self.keeper.stopped.is_set():  # the run is handing its rows back: place nothing
            if isinstance(result, Verified):
                result.file.discard()
            raise RunStopped(job.row.id)
        return self._place(job, result, self._worker_db.get())

    def _follow(self, path: str, mark: WriteMark, progress: Callable[[int], None]
                ) -> CopyResult:
        """A reader thread: read `path` back on this thread's own NAS session as written."""
        return read_back_following(self._worker_nas.open_read(path, while_written=True), mark,
                                   self.settings.chunk_size, progress)

    # ---- one file's end ----------------------------------------------------------------
    def _finish(self, job: Job, fut: Future[bool]) -> None:
        self._stalls.done(job.row.id)
        try:
            outcome = self._count(job, fut.result())
        except LeaseLost as exc:
            self.report.leases_lost += 1
            self.report.errors.append(str(exc))
            outcome = "lease_lost"
        except (VerificationError, PermanentSyncError, UnsafePathError) as exc:
            # A path the NAS refuses (e.g. characters SMB cannot store) will never work.
            outcome = self._fail(job, exc, permanent=not isinstance(exc, VerificationError))
        except Exception as exc:  # noqa: BLE001 - a backend error or a bad file; find out which
            if down := self._backend_down():
                self._waiting.appendleft(job.row)  # handed back with the rest
                raise down from exc
            outcome = self._fail(job, exc, permanent=False)
        self._outcome(job.row, outcome)

    def _place(self, job: Job, result: Verified | AlreadyThere,
               conn: psycopg.Connection) -> bool:
        row, s, nas = job.row, self.settings, self._worker_nas
        progress = self.keeper.progress_for(row.id)
        if isinstance(result, AlreadyThere):
            assert job.expected is not None
            adopt_existing(conn, nas, row, job.target, job.expected, self.owner, progress,
                           s.chunk_size, result.entry)
            return False
        try:
            return place(conn, nas, row, result.file, job.target, result.sha256, self.owner,
                         progress, s.chunk_size)
        except BaseException:
            result.file.discard()  # nothing once renamed: the handle closed with the rename
            remove_quietly(nas, job.tmp)
            raise

    def _count(self, job: Job, placed: bool) -> str:
        row = job.row
        self.report.bytes_synced += row.size if placed else 0
        self.report.synced += 1
        self._synced.append((job.seq, row.id))
        return "synced"

    def _fail(self, job: Job, exc: BaseException, permanent: bool) -> str:
        with self.keeper.db_lock:
            return fail(self.conn, job.row, self.owner, self.settings, self.report, exc,
                        permanent)

    def _outcome(self, row: store.FileRow, outcome: str) -> None:
        self.keeper.done(row.id)
        if self.on_file:
            self.on_file(row, outcome)

    def _backend_down(self) -> BackendDown | None:
        for backend, probe in self.probes.items():
            health = probe()
            if not health.ok:
                return BackendDown(backend, health.detail)
        return None

    # ---- stopping ----------------------------------------------------------------------
    def _stop(self, reason: str) -> int:
        """End the copies in flight (at their next chunk), remove what they left on the NAS
        and hand every row still held back to the queue uncharged; returns the rows released."""
        self.keeper.stopped.set()
        held = [job.row.id for job in self._in_flight.values()]
        held += [row.id for row in self._waiting]
        deadline = time.monotonic() + STOP_GRACE_S
        for fut, job in list(self._in_flight.items()):
            try:
                # Placed before the stop reached it: synced for good, counted as such.
                self._count(job, fut.result(max(0.0, deadline - time.monotonic())))
            except FutureTimeout:
                # Stuck in a call that does not return: its row goes back below; if the call
                # ever returns, the copy stops at its next chunk and removes its own file.
                log.warning("gave up waiting for the copy of %s", job.row.nas_path)
            except BaseException:  # noqa: BLE001 - the copy removed its own temporary file
                pass
        self._in_flight.clear()
        self._waiting.clear()
        with self.keeper.db_lock:
            return store.release(self.conn, held, self.owner, reason)
