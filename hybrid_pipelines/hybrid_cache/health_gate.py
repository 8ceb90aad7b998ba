"""Backend health through a persisted circuit breaker: every probe feeds the breaker of its
backend (a row of backend_circuit), and jobs ask the breaker before touching the backend, so a
dead NAS is probed once per cool-down instead of failing every file of every run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from hybrid_pipelines.hybrid_cache.rules.circuit_breaker import (
    BreakerPolicy,
    BreakerState,
    decide,
    on_failure,
    on_success,
)
from hybrid_pipelines.resources.errors import Health

Clock = Callable[[], float]
SEAWEEDFS, NAS = "seaweedfs", "nas"


@dataclass(frozen=True)
class GateResult:
    backend: str
    allowed: bool
    reason: str
    state: BreakerState
    health: Health | None  # None when the open breaker spared the probe

    @property
    def healthy(self) -> bool:
        return self.allowed and self.health is not None and self.health.ok


def _load_for_update(conn: psycopg.Connection, backend: str) -> BreakerState:
    conn.execute("INSERT INTO backend_circuit (backend) VALUES (%s) ON CONFLICT DO NOTHING",
                 (backend,))
    row = conn.execute(
        "SELECT state, consecutive_failures, opened_at, last_error FROM backend_circuit"
        " WHERE backend = %s FOR UPDATE", (backend,)).fetchone()
    assert row is not None
    return BreakerState(row[0], row[1], row[2], row[3])


def _save(conn: psycopg.Connection, backend: str, state: BreakerState) -> None:
    conn.execute(
        "UPDATE backend_circuit SET state = %s, consecutive_failures = %s, opened_at = %s,"
        " last_error = %s, updated_at = now() WHERE backend = %s",
        (state.state, state.consecutive_failures, state.opened_at, state.last_error[:500],
         backend))


def load_state(conn: psycopg.Connection, backend: str) -> BreakerState:
    row = conn.execute(
        "SELECT state, consecutive_failures, opened_at, last_error FROM backend_circuit"
        " WHERE backend = %s", (backend,)).fetchone()
    return BreakerState(row[0], row[1], row[2], row[3]) if row else BreakerState()


def gate(conn: psycopg.Connection, backend: str, probe: Callable[[], Health],
         policy: BreakerPolicy, clock: Clock = time.time) -> GateResult:
    """Ask the breaker; if it lets the call through, probe the backend and record the outcome.
    The row lock makes concurrent runs take turns instead of losing each other's updates."""
    with conn.transaction():
        state = _load_for_update(conn, backend)
        decision = decide(state, policy, clock())
        if not decision.allowed:
            return GateResult(backend, False, decision.reason, decision.state, None)
        health = probe()
        if health.ok:
            new = on_success(decision.state)
            reason = "healthy"
        else:
            new = on_failure(decision.state, policy, clock(), health.detail)
            reason = f"{health.backend} at {health.address} is unhealthy: {health.detail}"
        _save(conn, backend, new)
    return GateResult(backend, health.ok, reason, new, health)


def record(conn: psycopg.Connection, backend: str, ok: bool, error: str, policy: BreakerPolicy,
           clock: Clock = time.time) -> BreakerState:
    """Feed an outcome seen during work (e.g. SeaweedFS died mid-batch) into the breaker."""
    with conn.transaction():
        state = _load_for_update(conn, backend)
        new = on_success(state) if ok else on_failure(state, policy, clock(), error)
        _save(conn, backend, new)
    return new
