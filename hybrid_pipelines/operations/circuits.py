"""The hybrid cache's circuit breakers as the cache jobs record them (table backend_circuit),
read only: alerting never probes, opens or closes a breaker."""

from __future__ import annotations

import time

import psycopg

from hybrid_pipelines.operations.rules.thresholds import Breaker

STALE_S = 600.0  # rows older than this say nothing about now (the health sensor is stopped)


def read_breakers(conn: psycopg.Connection, now: float | None = None,
                  stale_s: float = STALE_S) -> dict[str, Breaker]:
    """backend -> its breaker, for rows updated in the last `stale_s` seconds. An absent table
    (the cache schema not applied yet) reads as no breakers."""
    now = time.time() if now is None else now
    exists = conn.execute("SELECT to_regclass('backend_circuit') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute(
        "SELECT backend, state, consecutive_failures, opened_at, last_error,"
        " extract(epoch FROM updated_at) FROM backend_circuit").fetchall()
    return {backend: Breaker(state, int(failures), opened, error or "")
            for backend, state, failures, opened, error, updated in rows
            if now - float(updated) <= stale_s}


def health_from_breakers(breakers: dict[str, Breaker]) -> dict[str, bool]:
    """A backend is healthy when its last probe succeeded (no consecutive failure)."""
    return {name: b.state == "closed" and b.failures == 0 for name, b in breakers.items()}
