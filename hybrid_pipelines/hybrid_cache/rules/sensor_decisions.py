"""Sensor decisions as pure functions over a JSON cursor (no Dagster, no I/O)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hybrid_pipelines.shared.sensor_cursor import load_cursor


@dataclass(frozen=True)
class SensorDecision:
    request: bool
    cursor: str
    reason: str


def usage_decision(cursor: str | None, usage_bytes: int, capacity_bytes: int,
                   threshold: float, now: float, repeat_s: float = 600.0) -> SensorDecision:
    """Request eviction when usage crosses the threshold upwards, and again every `repeat_s`
    while it stays above (an eviction that could not free enough is retried, not forgotten)."""
    state = load_cursor(cursor)
    fraction = usage_bytes / capacity_bytes if capacity_bytes > 0 else 0.0
    above = fraction > threshold
    last = float(state.get("last_request", 0.0))
    if above and (not state.get("above") or now - last >= repeat_s):
        new = {"above": True, "last_request": now}
        return SensorDecision(True, json.dumps(new),
                              f"cache usage {fraction:.1%} is above {threshold:.0%}")
    new = {"above": above, "last_request": last}
    why = (f"usage {fraction:.1%} still above {threshold:.0%}; eviction requested "
           f"{now - last:.0f}s ago") if above else \
        f"cache usage {fraction:.1%} is at or below {threshold:.0%}"
    return SensorDecision(False, json.dumps(new), why)


def recache_decision(cursor: str | None, seaweed_ok: bool, recache_pending: int, now: float,
                     repeat_s: float = 300.0) -> SensorDecision:
    """Request a re-cache run as soon as SeaweedFS is back (or healthy with work waiting),
    at most once per `repeat_s` while work remains."""
    state = load_cursor(cursor)
    was_ok = state.get("seaweed_ok", True)
    last = float(state.get("last_request", 0.0))
    new: dict[str, Any] = {"seaweed_ok": seaweed_ok, "last_request": last}
    if not seaweed_ok:
        return SensorDecision(False, json.dumps(new), "SeaweedFS is unhealthy")
    if recache_pending <= 0:
        return SensorDecision(False, json.dumps(new), "no file waits for re-cache")
    recovered = not was_ok
    if recovered or now - last >= repeat_s:
        new["last_request"] = now
        why = "SeaweedFS recovered" if recovered else "files wait for re-cache"
        return SensorDecision(True, json.dumps(new), f"{why}: {recache_pending} files")
    return SensorDecision(False, json.dumps(new),
                          f"re-cache requested {now - last:.0f}s ago; waiting")


def audit_decision(cursor: str | None, fingerprint: str, now: float,
                   max_age_s: float = 86400.0) -> SensorDecision:
    """Request the consistency audit when the metadata changed since the last request (a
    write is what can leave it out of step with the stores), and at least once every
    `max_age_s` regardless: drift made outside the metadata (a file deleted from the NAS by
    hand) changes no row, so only the audit's own look at the stores finds it."""
    state = load_cursor(cursor)
    last = float(state.get("last_request", 0.0))
    if state.get("fingerprint") != fingerprint:
        why = "the file metadata changed since the last audit" if last else "first audit"
    elif now - last >= max_age_s:
        why = f"no audit for {max_age_s / 3600:.0f} h (drift outside the metadata)"
    else:
        return SensorDecision(False, json.dumps(state),
                              f"file metadata unchanged since the audit {now - last:.0f}s ago")
    return SensorDecision(True, json.dumps({"fingerprint": fingerprint, "last_request": now}),
                          why)
