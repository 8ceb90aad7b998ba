"""Several Firestore batch commits in flight, acknowledged to the caller in the order sent.

google-cloud-firestore's own BulkWriter sends single writes in batches it forms itself and
reports each write on its own; the catalog sync needs whole batches that carry its cursor
document, and a cursor that moves only over batches whose every predecessor is acknowledged.
So this is the small part of BulkWriter the sync needs:

* a thread pool commits batches; the caller keeps building the next one meanwhile (encoding
  hundreds of documents is real CPU work, overlapped with the round trips);
* backpressure: at most `CommitWindow.limit` commits in flight (rules.commit_window grows it
  while the server keeps up and halves it when a retryable error pushes back);
* retryable errors (ABORTED, RESOURCE_EXHAUSTED, UNAVAILABLE, INTERNAL) are retried with
  exponential backoff inside the commit's deadline; sets and deletes are idempotent, so a
  commit resent after a lost answer writes nothing twice;
* two batches that write the same document are never in flight together (a later version
  could otherwise land before an earlier one);
* acknowledgements reach `on_done` on the caller's thread, strictly in the order sent; a failed
  commit is raised only after every other commit in flight has finished, and nothing after
  it is acknowledged, so the caller's cursor never passes a batch that did not land.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type

from hybrid_pipelines.media_catalog.rules.commit_window import CommitWindow

T = TypeVar("T")

# Pushed back by the server: retry later, with fewer commits in flight.
THROTTLED = (gexc.ResourceExhausted, gexc.ServiceUnavailable, gexc.Aborted)
RETRYABLE = (*THROTTLED, gexc.InternalServerError)


class CommitFailed(Exception):
    """A commit failed for good (retries exhausted or not retryable); `cause` is why."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass
class _Sent(Generic[T]):
    future: Future[None]
    paths: frozenset[str]
    info: T


class BulkCommitter(Generic[T]):
    def __init__(self, *, timeout_s: float, window: CommitWindow,
                 on_done: Callable[[T], None]) -> None:
        self.timeout_s = timeout_s
        self.window = window
        self.on_done = on_done
        self.retry = Retry(predicate=if_exception_type(*RETRYABLE), initial=0.2, maximum=2.0,
                           multiplier=2.0, timeout=timeout_s, on_error=self._on_retry)
        self._lock = threading.Lock()
        self._sent: deque[_Sent[T]] = deque()
        self.peak = 0  # most commits in flight at once
        self.retries = 0  # retryable errors met (each retried after a backoff)
        self._pool = ThreadPoolExecutor(max_workers=window.max_in_flight,
                                        thread_name_prefix="firestore-commit")

    def __enter__(self) -> BulkCommitter[T]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # Never leave a commit running behind the caller's back (its cursor would not know).
        self._pool.shutdown(wait=True)

    @property
    def in_flight(self) -> int:
        return len(self._sent)

    def _on_retry(self, exc: Exception) -> None:
        with self._lock:
            self.retries += 1
            if isinstance(exc, THROTTLED):
                self.window.on_throttle()

    def _commit(self, batch: Any) -> None:
        batch.commit(retry=self.retry, timeout=self.timeout_s)

    def commit_now(self, batch: Any) -> None:
        """Commit on the caller's thread (with nothing in flight), same retries."""
        try:
            self._commit(batch)
        except Exception as exc:
            raise CommitFailed(exc) from exc

    def _report_done(self) -> None:
        while self._sent and self._sent[0].future.done():
            sent = self._sent.popleft()
            error = sent.future.exception()
            if error is not None:
                self._settle()
                raise CommitFailed(error) from error
            with self._lock:
                self.window.on_success()
            self.on_done(sent.info)

    def _settle(self) -> None:
        """After a failure: let every other commit finish, acknowledging none of them (the
        cursor stays before the failed batch; the next run resends them, idempotently)."""
        wait([s.future for s in self._sent])
        self._sent.clear()

    def _wait_one(self) -> None:
        running = [s.future for s in self._sent if not s.future.done()]
        if running:
            wait(running, return_when=FIRST_COMPLETED)

    def make_room(self, paths: frozenset[str]) -> bool:
        """Block until a batch writing `paths` may be sent: the window has room and no batch
        in flight writes any of those documents. Acknowledgements are reported meanwhile.
        True when nothing is in flight any more (every earlier batch acknowledged)."""
        while True:
            self._report_done()
            if not self._sent:
                return True
            with self._lock:
                room = self.window.has_room(len(self._sent))
            if room and not any(s.paths & paths for s in self._sent):
                return False
            self._wait_one()

    def submit(self, batch: Any, paths: frozenset[str], info: T) -> None:
        """Send `batch` (after `make_room`); `info` goes to on_done once it and every batch
        sent before it are acknowledged."""
        self._sent.append(_Sent(self._pool.submit(self._commit, batch), paths, info))
        self.peak = max(self.peak, len(self._sent))

    def drain(self) -> None:
        """Wait for every commit in flight; acknowledge them in order or raise CommitFailed
        for the first failure."""
        while self._sent:
            self._report_done()
            if self._sent:
                self._wait_one()
