"""Keep a sync run's leases alive while it works, from inside the copy and hash loops.

A lease is claimed for a whole batch at once and lasts `lease_timeout_s`. A copy plus read-back
may take longer than that (30 GB at 100 MB/s is 10 minutes); without renewal the next run
re-claims the row mid-copy, and the batch's waiting rows too. The keeper renews the current row
and the rest of the batch every lease/3 seconds of copying; once the current row is no longer
ours it raises LeaseLost, which stops the copy before anything is placed."""

from __future__ import annotations

import time
from collections.abc import Callable
from uuid import UUID

import psycopg

from hybrid_pipelines.hybrid_cache import metadata_store as store
from hybrid_pipelines.hybrid_cache.sync_errors import LeaseLost


class LeaseKeeper:
    """A `progress` callback for hashing_copy: `keeper(nbytes)` after every chunk."""

    def __init__(self, conn: psycopg.Connection, owner: str, lease_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self._conn, self._owner, self._lease_s, self._clock = conn, owner, float(lease_s), clock
        # A third of the lease: two renewals may be missed (a slow chunk, a busy database)
        # before the lease runs out.
        self.interval = self._lease_s / 3
        self._current: UUID | None = None
        self._waiting: list[UUID] = []
        self._last = clock()
        self.renewals = 0

    def hold(self, current: UUID, waiting: list[UUID]) -> bool:
        """Move on to `current` (the rest of the batch is `waiting`) and renew at once;
        False if `current` is no longer ours."""
        self._current, self._waiting = current, list(waiting)
        return self.renew()

    def renew(self) -> bool:
        ids = [self._current, *self._waiting] if self._current else list(self._waiting)
        held = store.renew_lease(self._conn, self._owner, ids, self._lease_s)
        self._last = self._clock()
        self.renewals += 1
        # A waiting row lost meanwhile is not renewed again; it is skipped when its turn comes.
        self._waiting = [i for i in self._waiting if i in held]
        return self._current in held

    def __call__(self, nbytes: int) -> None:
        if self._clock() - self._last < self.interval:
            return
        if not self.renew():
            assert self._current is not None
            raise LeaseLost(self._current)
