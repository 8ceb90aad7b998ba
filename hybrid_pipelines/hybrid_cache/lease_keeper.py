"""Keep a sync run's leases alive while it works, from inside the copy and hash loops.

A lease is claimed for a whole batch at once and lasts `lease_timeout_s`. A copy plus read-back
may take longer than that (30 GB at 100 MB/s is 10 minutes); without renewal the next run
re-claims the row mid-copy, and the batch's waiting rows too. The keeper renews every row the
run still holds (the files in flight and the claimed rows waiting their turn) every lease/3
seconds of copying; once a file's row is no longer ours its copy raises LeaseLost at the next
chunk, which stops it before anything is placed.

Several files are copied at once (one worker thread each), so the keeper is shared: any
worker's chunk may trigger the renewal, which runs on the run's one database connection under
`db_lock` (the lock the run holds for its own statements and transactions)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from uuid import UUID

import psycopg

from hybrid_pipelines.hybrid_cache import metadata_store as store
from hybrid_pipelines.hybrid_cache.hashing_copy import Progress
from hybrid_pipelines.hybrid_cache.sync_errors import LeaseLost, RunStopped


class LeaseKeeper:
    def __init__(self, conn: psycopg.Connection, owner: str, lease_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 db_lock: threading.RLock | None = None):
        self._conn, self._owner, self._lease_s, self._clock = conn, owner, float(lease_s), clock
        self.db_lock = db_lock or threading.RLock()
        # A third of the lease: two renewals may be missed (a slow chunk, a busy database)
        # before the lease runs out.
        self.interval = self._lease_s / 3
        self._held: set[UUID] = set()
        self._state = threading.Lock()
        self._last = clock()
        self.renewals = 0
        self.stopped = threading.Event()  # set when the run stops: copies in flight end

    def claimed(self, ids: Iterable[UUID]) -> None:
        """Rows just claimed (their lease is fresh): renewed from now on."""
        with self._state:
            if not self._held:  # nothing older to renew: the clock starts with these leases
                self._last = self._clock()
            self._held.update(ids)

    def done(self, file_id: UUID) -> None:
        """The row left our hands (synced, failed, released): no longer renewed."""
        with self._state:
            self._held.discard(file_id)

    def holds(self, file_id: UUID) -> bool:
        """Still ours as of the last renewal (renewing first if one is due)."""
        self.tick()
        with self._state:
            return file_id in self._held

    def renew(self) -> set[UUID]:
        with self._state:
            ids = list(self._held)
        with self.db_lock:
            held = store.renew_lease(self._conn, self._owner, ids, self._lease_s) if ids \
                else set()
        with self._state:
            # A row lost meanwhile is not renewed again; its copy stops at its next chunk,
            # a waiting one is skipped when its turn comes.
            self._held.intersection_update(held | (self._held - set(ids)))
            self._last = self._clock()
            self.renewals += 1
            return set(self._held)

    def tick(self) -> None:
        if self._clock() - self._last >= self.interval:
            self.renew()

    def progress_for(self, file_id: UUID) -> Progress:
        """A `progress` callback for hashing_copy: called after every chunk of this file's
        copy or read-back; raises LeaseLost once the row is not ours, RunStopped once the run
        is stopping (a backend went down, or the run itself failed)."""

        def progress(nbytes: int) -> None:
            if self.stopped.is_set():
                raise RunStopped(file_id)
            if not self.holds(file_id):
                raise LeaseLost(file_id)

        return progress
