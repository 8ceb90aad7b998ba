"""A handle per thread (a database connection, a NAS session), opened on first use; every
handle opened is kept, so the owner can close them all at the end, whichever thread made
them (a worker thread may be gone by then)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerThread(Generic[T]):
    def __init__(self, open_: Callable[[], T], close: Callable[[T], None],
                 usable: Callable[[T], bool] = lambda _handle: True) -> None:
        self._open, self._close, self._usable = open_, close, usable
        self._local = threading.local()
        self._handles: list[T] = []
        self._lock = threading.Lock()

    def get(self) -> T:
        """The calling thread's handle; a new one if it has none or its one is unusable."""
        handle = getattr(self._local, "handle", None)
        if handle is None or not self._usable(handle):
            handle = self._open()
            with self._lock:
                self._handles.append(handle)
            self._local.handle = handle
        return handle

    def close(self) -> None:
        """Close every handle opened; a failure to close one (a server that dropped it) does
        not keep the others open."""
        with self._lock:
            handles, self._handles = self._handles, []
        for handle in handles:
            try:
                self._close(handle)
            except Exception:  # noqa: BLE001, S110 - already gone on the server's side
                pass
