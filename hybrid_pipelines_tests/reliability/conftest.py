"""Helpers of the reliability suite's fault tests.

`PgGate` parks a job inside a chosen transaction on a real PostgreSQL server, so a fault
(a restart, another server killed) lands mid-job at a known point instead of "somewhere,
if the timing is lucky". It is a trigger plus an advisory lock on the test's own private
server: the job runs its real statements against the real server, it simply waits on a
lock the test holds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from hybrid_pipelines.dev.stack.postgres import PostgresServer
from hybrid_pipelines.resources import PostgresResource
from hybrid_pipelines_tests.conftest import ServerFactory, postgres_resource_for

GATE_KEY = 7_274_007


class PgGate:
    """Blocks the first `event` statement on `table` after which `when_sql` holds, until the
    test lets go.

    The trigger runs after each such statement, inside the job's transaction: once `when_sql`
    (a SQL boolean, e.g. a row count) is true it waits for a shared advisory lock that the
    test holds exclusively, so that transaction is open and uncommitted when the fault hits."""

    def __init__(self, pg: PostgresResource, table: str, when_sql: str,
                 event: str = "INSERT") -> None:
        self.pg, self.table, self.when_sql, self.event = pg, table, when_sql, event
        self._holder: psycopg.Connection | None = None

    def install(self) -> None:
        fn = f"hp_gate_{self.table}"
        with self.pg.connect(autocommit=True) as conn:
            # Test-owned identifiers and conditions only; nothing comes from outside.
            conn.execute(f"""
                CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF {self.when_sql} THEN
                        PERFORM pg_advisory_xact_lock_shared({GATE_KEY});
                    END IF;
                    RETURN NULL;
                END $$""")
            conn.execute(f"DROP TRIGGER IF EXISTS hp_gate ON {self.table}")
            conn.execute(f"CREATE TRIGGER hp_gate AFTER {self.event} ON {self.table} "
                         f"FOR EACH STATEMENT EXECUTE FUNCTION {fn}()")

    def remove(self) -> None:
        with self.pg.connect(autocommit=True) as conn:
            conn.execute(f"DROP TRIGGER IF EXISTS hp_gate ON {self.table}")

    def close(self) -> None:
        holder, self._holder = self._holder, None
        if holder is not None:
            try:
                holder.close()
            except psycopg.Error:  # its server was restarted under it: nothing to close
                pass

    def hold(self) -> None:
        self._holder = psycopg.connect(self.pg.conninfo(), autocommit=True)
        self._holder.execute("SELECT pg_advisory_lock(%s)", (GATE_KEY,))

    def blocked_backends(self) -> int:
        with self.pg.connect(autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND wait_event = 'advisory' AND pid != pg_backend_pid()").fetchone()
        return int(row[0]) if row else 0

    def wait_blocked(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.blocked_backends() == 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"no job reached the gate on {self.table} in {timeout_s}s")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def private_pg(server_factory: ServerFactory) -> PostgresServer:
    """A PostgreSQL of this module's own: its tests restart it."""
    server = server_factory("postgres")
    assert isinstance(server, PostgresServer)
    return server


@pytest.fixture()
def when_gated() -> Iterator[Callable[[PgGate, Callable[[], None]], Callable[[], None]]]:
    """`when_gated(gate, fault)`: hold the gate, and from a thread run `fault` once the job is
    parked at it, then let go. Returns a function that waits for the thread and re-raises
    what went wrong in it."""
    threads: list[threading.Thread] = []
    errors: list[BaseException] = []

    def finished() -> None:
        for t in threads:
            t.join(timeout=120)
            assert not t.is_alive(), "the fault thread did not finish"
        if errors:
            raise errors[0]

    def arm(gate: PgGate, fault: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                gate.wait_blocked()
                fault()
            except BaseException as exc:  # noqa: BLE001 - re-raised by finished()
                errors.append(exc)
            finally:
                gate.close()

        gate.hold()
        t = threading.Thread(target=run, name="fault-injector", daemon=True)
        threads.append(t)
        t.start()
        return finished

    yield arm
    for t in threads:
        t.join(timeout=120)


def pg_for(server: PostgresServer) -> PostgresResource:
    return postgres_resource_for(server)


@pytest.fixture()
def cache_pg(private_pg: PostgresServer) -> Iterator[PostgresResource]:
    """The hybrid cache's tables on the module's private PostgreSQL, emptied, no gate left."""
    from hybrid_pipelines.hybrid_cache.runtime import prepare

    res = pg_for(private_pg)
    prepare(res)
    with res.connect(autocommit=True) as conn:
        conn.execute("DROP TRIGGER IF EXISTS hp_gate ON file_metadata")
        conn.execute("TRUNCATE file_metadata, backend_circuit, nas_path_reservations")
    yield res
