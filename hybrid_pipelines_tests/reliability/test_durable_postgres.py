"""A durable PostgreSQL (fsync and synchronous_commit on, as production runs it; the test
servers run with fsync off) SIGKILLed with its every backend while the context archive has a
batch open, then restarted: crash recovery replays the WAL, every change the server had
acknowledged as committed before the kill is there, the open batch is not, and the next run
finishes the job."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
from psycopg.types.json import Jsonb

from hybrid_pipelines.defs.ai_tiers.assets import SCHEMA, user_contexts_archive
from hybrid_pipelines.dev.stack.postgres import PostgresServer
from hybrid_pipelines.dev.stack.process import free_port
from hybrid_pipelines.resources import PostgresResource
from hybrid_pipelines_tests.ai_tiers.conftest import NOW, days_ago

from .conftest import PgGate, pg_for

Arm = Callable[[PgGate, Callable[[], None]], Callable[[], None]]


@pytest.fixture(scope="module")
def durable_pg(stack_dir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(root=stack_dir / f"durable-pg-{secrets.token_hex(3)}",
                            port=free_port(), password=secrets.token_hex(8), durable=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _snapshot(pg: PostgresResource) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the server says is committed: warm and archived conversations with messages."""
    with pg.connect() as conn:
        warm = dict(conn.execute("SELECT conversation_id, messages FROM user_contexts").fetchall())
        arch = dict(conn.execute(
            "SELECT conversation_id, messages FROM user_contexts_archive").fetchall())
    return warm, arch


def _commit_one_by_one(pg: PostgresResource, acked: list[int]) -> None:
    """One row per transaction until the server dies; `acked` gets each id once COMMIT
    returned, i.e. once the server reported it flushed to the WAL on disk."""
    try:
        with pg.connect(autocommit=True) as conn:
            for i in range(1, 1_000_000):
                conn.execute("INSERT INTO durable_probe (id) VALUES (%s)", (i,))
                acked.append(i)
    except psycopg.Error:
        return  # the kill


def _archive(pg: PostgresResource, batch_size: int) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [user_contexts_archive], resources={"ai_postgres": pg}, raise_on_error=False,
        run_config={"ops": {"user_contexts_archive": {"config": {
            "now": NOW.isoformat(), "batch_size": batch_size}}}})


@pytest.mark.fault("durable PostgreSQL (fsync on) SIGKILLed with every backend mid context "
                   "archive -> after crash recovery every acknowledged commit is kept, the "
                   "open batch is gone, next run completes", kind="killed mid-I/O")
def test_sigkilled_durable_postgres_keeps_every_commit(durable_pg: PostgresServer,
                                                       when_gated: Arm) -> None:
    pg = pg_for(durable_pg)
    with pg.connect() as conn:
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('fsync', 'synchronous_commit', 'full_page_writes')").fetchall())
    assert settings == {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
    pg.apply_schema(SCHEMA)
    batch, eligible, recent = 40, 300, 30
    rows = [(f"old{i:04d}", days_ago(31 + i % 200)) for i in range(eligible)]
    rows += [(f"new{i:04d}", days_ago(i % 29)) for i in range(recent)]
    with pg.connect() as conn, conn.cursor() as cur:
        cur.execute("TRUNCATE user_contexts, user_contexts_archive RESTART IDENTITY")
        cur.executemany(
            "INSERT INTO user_contexts (user_id, conversation_id, messages, created_at, "
            "updated_at) VALUES (%s, %s, %s, %s, %s)",
            [("u", c, Jsonb([{"role": "user", "content": f"msg of {c} " + "x" * 200}]),
              ts - timedelta(days=1), ts) for c, ts in rows])
    everything = _snapshot(pg)[0]

    # The fourth batch's INSERT waits at the gate, uncommitted; three batches are committed.
    gate = PgGate(pg, "user_contexts_archive",
                  f"(SELECT count(*) FROM user_contexts_archive) >= {4 * batch}")  # noqa: S608
    gate.install()
    acknowledged: list[tuple[dict[str, Any], dict[str, Any]]] = []

    acked: list[int] = []  # commits the server acknowledged to a second writer
    writing = threading.Thread(target=_commit_one_by_one, args=(pg, acked), daemon=True)

    def crash() -> None:
        writing.start()
        deadline = time.monotonic() + 30
        while len(acked) < 50:  # the writer is committing (WAL flushes in flight) ...
            assert time.monotonic() < deadline, "the writer committed nothing"
            time.sleep(0.01)
        acknowledged.append(_snapshot(pg))  # read by another session: committed data only
        durable_pg.kill()  # ... when the postmaster and every backend get SIGKILL at once

    with pg.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS durable_probe (id int PRIMARY KEY)")
        conn.execute("TRUNCATE durable_probe")
    done = when_gated(gate, crash)
    result = _archive(pg, batch)
    done()
    writing.join(30)
    assert not result.success
    warm_before, arch_before = acknowledged[0]
    assert len(arch_before) == 3 * batch

    durable_pg.start()  # crash recovery from the WAL
    log = durable_pg.log_path.read_text(errors="replace")
    assert "not properly shut down" in log or "automatic recovery in progress" in log, \
        log[-2000:]
    warm, arch = _snapshot(pg)
    assert (warm, arch) == (warm_before, arch_before)  # every acknowledged commit, nothing more
    with pg.connect() as conn:
        kept = {r[0] for r in conn.execute("SELECT id FROM durable_probe")}
    # Every acknowledged commit survived; at most the one in flight at the kill may too.
    assert set(acked) <= kept <= set(acked) | {len(acked) + 1}, (len(acked), len(kept))
    assert {**warm, **arch} == everything  # each conversation once, messages intact

    gate.remove()
    again = _archive(pg, batch)
    assert again.success
    meta = {k: v.value for k, v in
            again.asset_materializations_for_node("user_contexts_archive")[0].metadata.items()}
    assert meta["contexts_moved"] == eligible - 3 * batch
    warm, arch = _snapshot(pg)
    assert set(arch) == {c for c, _ in rows if c.startswith("old")}
    assert {**warm, **arch} == everything
