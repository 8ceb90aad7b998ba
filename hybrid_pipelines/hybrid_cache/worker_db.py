"""One PostgreSQL connection per copy worker of a sync run, on which it places its own files.

A file is renamed into place inside a transaction that locks its row with the run's lease
still valid. On the run's one connection every rename waited its turn on the run's thread
(several NAS round trips each), and with small files that serial step, not the copies, set the
pace (bench/sync.py: four files in flight were hardly faster than one). Each worker now places
the files it copied on a connection of its own, opened with the run connection's parameters
(its password read from psycopg's ConnectionInfo, never logged)."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import make_conninfo

from hybrid_pipelines.shared.per_thread import PerThread

# A NAS rename that never returns must not hold its row lock for ever (the run's lease
# renewals would wait on it): the server ends a session idle inside a transaction this long,
# which releases the lock; the row is then charged an attempt, and a copy that did reach its
# name is recognised by its bytes on the next attempt.
PLACING_IDLE_TIMEOUT_MS = 60_000


class PerThreadDB:
    """`get()`: the calling thread's own autocommit connection, opened on first use."""

    def __init__(self, conn: psycopg.Connection):
        info = conn.info
        self._conninfo = make_conninfo(info.dsn, **({"password": info.password}
                                                     if info.password else {}))
        self._conns = PerThread(self._open, psycopg.Connection.close,
                                usable=lambda c: not c.closed)

    def _open(self) -> psycopg.Connection:
        conn = psycopg.connect(self._conninfo, autocommit=True)
        conn.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
                     (str(PLACING_IDLE_TIMEOUT_MS),))
        return conn

    def get(self) -> psycopg.Connection:
        return self._conns.get()

    def close(self) -> None:
        self._conns.close()
