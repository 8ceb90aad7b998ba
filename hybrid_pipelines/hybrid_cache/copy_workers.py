"""The copy threads of one sync run, and how long each has gone without progress.

Not a ThreadPoolExecutor: its threads are joined when the interpreter exits, so a copy stuck
in a NAS call that never returns (smbprotocol waits for some answers without a timeout; a
server that accepts a connection and then never answers is enough) would hold the run's
process open forever. These are daemon threads: a run gives up on a stuck copy after a
bounded wait (its row handed back, its lease gone, so if the call ever returns the copy stops
at its next chunk and removes its temporary file) and the process still ends."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class CopyWorkers:
    def __init__(self, count: int, name: str):
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple] | None] = \
            queue.SimpleQueue()
        self._name = name
        self._threads: list[threading.Thread] = []
        for _ in range(count):
            self.add_thread()

    def add_thread(self) -> None:
        """One more thread: in place of one stuck in a call that does not return."""
        t = threading.Thread(target=self._loop, name=f"{self._name}_{len(self._threads)}",
                             daemon=True)
        self._threads.append(t)
        t.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        self._jobs.put((fut, fn, args))
        return fut

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            fut, fn, args = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the run's thread
                fut.set_exception(exc)

    def shutdown(self, timeout_s: float) -> list[str]:
        """Let every thread finish within `timeout_s`; the names of those still stuck."""
        for _ in self._threads:
            self._jobs.put(None)
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in self._threads if t.is_alive()]


class Stalls:
    """When each file in flight last made progress (a chunk copied or read back)."""

    def __init__(self) -> None:
        self._last: dict[Any, float] = {}
        self._lock = threading.Lock()

    def touch(self, key: Any) -> None:
        with self._lock:
            self._last[key] = time.monotonic()

    def done(self, key: Any) -> None:
        with self._lock:
            self._last.pop(key, None)

    def stalled(self, longer_than_s: float) -> list[Any]:
        now = time.monotonic()
        with self._lock:
            return [k for k, t in self._last.items() if now - t > longer_than_s]
