"""The scan's batches written on a thread and SQLite connection of their own, one batch
behind the walk, so listing and diffing the next directories overlaps the writes.

Why: a first scan spent about half its time inside SQLite (inserting rows, updating the
indexes, committing to the WAL), during which the walk listed nothing. sqlite3 releases the
GIL while a statement runs, so the walk and the writes share two cores.

What does not change: every batch is still one transaction holding its rows, its directory
records and the checkpoint, committed in walk order; at most one batch waits while the next
is built (memory stays flat); the walk's checkpoint copy advances as each batch is handed
over, the committed one as each commits, and `on_batch` sees the committed one, in the
walk's thread. A write error surfaces in the walk at its next hand-over or at `wait()`.
The walk's own reads (a directory's known rows) never need a batch still in flight: each
directory is listed once per scan, and its rows are written only after its listing."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from hybrid_pipelines.media_catalog.catalog_store import CatalogStore, Checkpoint
from hybrid_pipelines.resources.sqlite_catalog import open_catalog


def database_file(conn: sqlite3.Connection) -> str:
    """The file behind `conn`'s main database ('' for an in-memory or temporary one)."""
    for _seq, name, path in conn.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return str(path or "")
    return ""


class ScanWriter:
    """Writes the batches of one scan, `cp` (the scan's checkpoint) in hand."""

    def __init__(self, path: str, timeout_s: float, cp: Checkpoint,
                 on_batch: Callable[[Checkpoint], None] | None):
        self._cp = dataclasses.replace(cp)  # the committed state, this thread's own
        self._on_batch = on_batch
        self._pending: Future[Checkpoint] | None = None
        self._store: CatalogStore | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="scan-writer")
        try:  # a connection is used on the thread that opened it
            self._pool.submit(self._open, path, timeout_s).result()
        except BaseException:
            self._pool.shutdown()
            raise

    @classmethod
    def start(cls, conn: sqlite3.Connection, cp: Checkpoint,
              on_batch: Callable[[Checkpoint], None] | None) -> ScanWriter | None:
        """A writer on `conn`'s database file; None when it has none (the walk then writes
        on `conn` itself)."""
        path = database_file(conn)
        if not path:
            return None
        timeout_ms = conn.execute("PRAGMA busy_timeout").fetchone()[0]
        return cls(path, timeout_ms / 1000, cp, on_batch)

    def _open(self, path: str, timeout_s: float) -> None:
        self._store = CatalogStore(open_catalog(path, timeout_s))

    def submit(self, **batch: Any) -> None:
        """Hand over the next batch (write_scan_batch's arguments but the checkpoint), once
        the one before it committed."""
        self.wait()
        self._pending = self._pool.submit(self._write, batch)

    def _write(self, batch: dict[str, Any]) -> Checkpoint:
        assert self._store is not None
        self._store.write_scan_batch(self._cp, **batch)
        return dataclasses.replace(self._cp)

    def wait(self) -> None:
        """Until every batch handed over is committed; raises a write's error."""
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        committed = pending.result()
        if self._on_batch is not None:
            self._on_batch(committed)

    def close(self) -> None:
        """Let a batch in flight end (committed whole or not at all), then close."""
        try:
            if self._pending is not None:
                self._pending.exception()  # its error, if any, is the caller's to report
        finally:
            self._pool.submit(self._close_store).result()
            self._pool.shutdown()

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.conn.close()
            self._store = None
