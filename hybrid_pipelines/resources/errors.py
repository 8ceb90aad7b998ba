"""Errors and health answers shared by every backend resource."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass


class BackendError(RuntimeError):
    """A backend is down or misconfigured. The message names the backend, its address, the
    cause and the environment variables that fix it, and never contains a secret."""

    def __init__(self, backend: str, address: str, cause: str, env_vars: Sequence[str]):
        self.backend, self.address, self.cause, self.env_vars = backend, address, cause, env_vars
        fix = ", ".join(env_vars)
        super().__init__(f"{backend} at {address}: {cause}. Check {fix}.")


@dataclass(frozen=True)
class Health:
    backend: str
    address: str
    ok: bool
    latency_ms: float
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def probe_health(backend: str, address: str, check: Callable[[], str | None],
                 explain: Callable[[BaseException], str]) -> Health:
    """Run `check` (which raises on failure, may return a detail) and turn the outcome into a
    Health; never raises, so sensors and asset checks can call it freely."""
    t0 = time.monotonic()
    try:
        detail = check() or "ok"
        ok = True
    except Exception as exc:  # noqa: BLE001 - health answers, it does not raise
        detail, ok = explain(exc), False
    return Health(backend, address, ok, round((time.monotonic() - t0) * 1000, 1), detail)


def require(health: Health, env_vars: Sequence[str]) -> None:
    if not health.ok:
        raise BackendError(health.backend, health.address, health.detail, env_vars)
