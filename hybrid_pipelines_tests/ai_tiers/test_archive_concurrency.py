"""The context archive's batches meeting other writers on the real PostgreSQL: an overlapping
run whose batch commits, the platform touching a picked conversation mid-batch, and a
platform transaction holding a conversation past the batch's lock wait (contexts.py: the
DELETE is the arbiter; a wait past BATCH_LOCK_WAIT redoes the batch with SKIP LOCKED)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from hybrid_pipelines.ai_tiers import contexts
from hybrid_pipelines.ai_tiers.contexts import ARCHIVE_BATCH_SQL, ArchiveReport, archive_contexts
from hybrid_pipelines.ai_tiers.rules.tier_policy import cutoff
from hybrid_pipelines.resources import PostgresResource

from .conftest import NOW, days_ago, naive, seed_contexts


def _old(n: int) -> list[tuple[str, str, list, Any]]:
    return [("u", f"old{i}", [{"role": "user", "content": str(i)}], days_ago(40))
            for i in range(n)]


def _places(pg: PostgresResource) -> tuple[list[str], list[str]]:
    """(warm conversation ids, archived ones), each sorted, duplicates kept."""
    with pg.connect() as conn:
        warm = sorted(r[0] for r in conn.execute("SELECT conversation_id FROM user_contexts"))
        arch = sorted(r[0] for r in conn.execute(
            "SELECT conversation_id FROM user_contexts_archive"))
    return warm, arch


class _Run(threading.Thread):
    """An archive run on its own connection, as a second Dagster run would be."""

    def __init__(self, pg: PostgresResource, batch_size: int) -> None:
        super().__init__(daemon=True)
        self.pg, self.batch_size = pg, batch_size
        self.report: ArchiveReport | None = None

    def run(self) -> None:
        with self.pg.connect(autocommit=True) as conn:
            self.report = archive_contexts(conn, cutoff(NOW, 30), NOW,
                                           batch_size=self.batch_size)


def _started_waiting(pg: PostgresResource, batch_size: int) -> _Run:
    """A run started while the test holds rows it picks: still waiting half a second on."""
    run = _Run(pg, batch_size)
    run.start()
    time.sleep(0.5)
    assert run.is_alive()
    return run


@pytest.mark.fault("ai_tiers: a second archive run meets rows the first run's open batch "
                   "holds -> it waits for that commit and skips them; nothing lost or doubled",
                   kind="concurrency")
def test_a_run_overlapping_an_open_batch_waits_then_skips_its_rows(
        ai_pg: PostgresResource) -> None:
    seed_contexts(ai_pg, _old(300))
    params = {"cutoff": cutoff(NOW, 30), "limit": 100, "archived_at": NOW, "after_ts": None,
              "after_id": None}
    with ai_pg.connect() as run_a:
        a_moved = run_a.execute(ARCHIVE_BATCH_SQL, params).fetchone()[0]  # not committed
        run_b = _started_waiting(ai_pg, batch_size=64)  # on the rows run A deleted
        run_a.commit()
        run_b.join(30)
    assert run_b.report is not None
    assert (a_moved, run_b.report.moved, run_b.report.skip_locked_batches) == (100, 200, 0)
    warm, arch = _places(ai_pg)
    assert warm == [] and arch == sorted(f"old{i}" for i in range(300))


@pytest.mark.fault("ai_tiers: the platform updates a conversation the batch picked, "
                   "committing while the batch waits -> it stays warm with the update",
                   kind="concurrency")
def test_a_conversation_the_platform_touches_mid_batch_stays_warm(
        ai_pg: PostgresResource) -> None:
    seed_contexts(ai_pg, _old(20))
    touched = [{"role": "user", "content": "still talking"}]
    with ai_pg.connect() as platform:
        platform.execute("UPDATE user_contexts SET messages = %s, updated_at = %s "
                         "WHERE conversation_id = 'old5'", (Jsonb(touched), naive(NOW)))
        run = _started_waiting(ai_pg, batch_size=8)  # its first batch picked old5
        platform.commit()
        run.join(30)
    assert run.report is not None
    assert (run.report.moved, run.report.skip_locked_batches) == (19, 0)
    warm, arch = _places(ai_pg)
    assert warm == ["old5"] and len(arch) == 19 and "old5" not in arch
    with ai_pg.connect() as conn:
        assert conn.execute("SELECT messages FROM user_contexts").fetchone()[0] == touched


@pytest.mark.fault("ai_tiers: a platform transaction holds a conversation past the batch's "
                   "lock wait -> the batch is redone skipping it; the rest moves, it waits "
                   "for the next run", kind="concurrency")
def test_a_conversation_held_past_the_lock_wait_is_left_for_the_next_run(
        ai_pg: PostgresResource, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contexts, "BATCH_LOCK_WAIT", "300ms")  # 2 s in production
    seed_contexts(ai_pg, _old(20))
    with ai_pg.connect() as platform:
        platform.execute("SELECT 1 FROM user_contexts WHERE conversation_id = 'old5' "
                         "FOR UPDATE")
        run = _Run(ai_pg, batch_size=8)
        run.start()
        run.join(30)  # never waits on the platform for longer than the lock wait
        assert run.report is not None
        assert run.report.moved == 19 and run.report.skip_locked_batches == 1
        platform.rollback()
    assert _places(ai_pg)[0] == ["old5"]
    again = _Run(ai_pg, batch_size=8)
    again.run()
    assert again.report is not None and again.report.moved == 1
    assert _places(ai_pg) == ([], sorted(f"old{i}" for i in range(20)))
