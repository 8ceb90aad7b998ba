"""A circuit breaker per backend as a pure state machine: the state is a value, every
transition takes the current time, so the state can live in a database between runs and tests
drive the clock.

closed    --N consecutive failures-->  open
open      --cool-down elapsed------->  half_open (one trial call is let through)
half_open --success----------------->  closed
half_open --failure----------------->  open (cool-down starts again)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int = 3
    cooldown_s: float = 60.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {self.failure_threshold}")
        if self.cooldown_s < 0:
            raise ValueError(f"cooldown_s must be >= 0, got {self.cooldown_s}")


@dataclass(frozen=True)
class BreakerState:
    state: str = CLOSED
    consecutive_failures: int = 0
    opened_at: float | None = None  # seconds since the epoch
    last_error: str = ""

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"unknown breaker state {self.state!r}; expected one of {STATES}")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    state: BreakerState
    reason: str


def decide(state: BreakerState, policy: BreakerPolicy, now: float) -> Decision:
    """May a call go to the backend now? Open breakers let one trial through after cool-down."""
    if state.state == CLOSED:
        return Decision(True, state, "closed")
    if state.state == HALF_OPEN:
        return Decision(True, state, "half-open: trial call")
    opened = state.opened_at if state.opened_at is not None else now
    waited = now - opened
    if waited >= policy.cooldown_s:
        return Decision(True, replace(state, state=HALF_OPEN), "cool-down over: trial call")
    retry_in = policy.cooldown_s - waited
    why = f": {state.last_error}" if state.last_error else ""
    return Decision(False, state, f"circuit open after {state.consecutive_failures} consecutive "
                                  f"failures{why}; next trial in {retry_in:.0f}s")


def on_success(state: BreakerState) -> BreakerState:
    return BreakerState()


def on_failure(state: BreakerState, policy: BreakerPolicy, now: float,
               error: str = "") -> BreakerState:
    failures = state.consecutive_failures + 1
    if state.state == HALF_OPEN or failures >= policy.failure_threshold:
        return BreakerState(OPEN, failures, now, error)
    return BreakerState(CLOSED, failures, None, error)
