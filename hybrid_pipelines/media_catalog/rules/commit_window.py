"""How many Firestore batch commits the catalog sync keeps in flight, and how far its cursor
may move while several are.

A commit costs a round trip plus the server's work on up to 500 writes. One at a time, a
sync 30 ms from Firestore spends most of its time waiting; several in flight overlap those
waits. The window follows the BulkWriter idea (start small, grow while the server keeps up,
back off when it pushes back):

* the first `sequential_first` commits go one at a time: a small incremental sync (a few
  hundred changes) behaves exactly as a sequential one (each commit carries its own cursor,
  no extra round trip), and a server that fails at once fails on the first batch;
* after that, each acknowledged commit widens the window by one, up to `max_in_flight`;
* a retryable push-back (RESOURCE_EXHAUSTED, UNAVAILABLE, ABORTED: the client retries it
  with backoff) halves the window, never below one.

Commits may finish out of order; the sync's cursor only moves over the contiguous prefix of
acknowledged batches (firestore_bulk), so a crash at any moment resends from a change that
every earlier batch had already reached.

Pure logic: no I/O, no clients, no threads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CommitWindow:
    max_in_flight: int = 8
    sequential_first: int = 3
    limit: int = 1
    acknowledged: int = 0
    throttled: int = 0

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {self.max_in_flight}")
        if self.sequential_first < 0:
            raise ValueError(f"sequential_first must be >= 0, got {self.sequential_first}")

    def has_room(self, in_flight: int) -> bool:
        return in_flight < self.limit

    def on_success(self) -> None:
        self.acknowledged += 1
        if self.acknowledged >= self.sequential_first:
            self.limit = min(self.max_in_flight, self.limit + 1)

    def on_throttle(self) -> None:
        self.throttled += 1
        self.limit = max(1, self.limit // 2)

