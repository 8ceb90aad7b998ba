"""What the alert sensor reads from Dagster's own records (the instance's event log):

- asset check evaluations, incrementally after a storage-id cursor: a check failing at ERROR
  opens an incident, its next passing (or merely WARN) evaluation recovers it; the
  hybrid cache's audit (`cache_consistency`) also carries the mismatch percentage;
- the hybrid cache's numbers, as its `seaweedfs_cache` asset last recorded them
  (materialization, or the observation of a skipped run): usage, queue, failure rate and the
  backends' health.
Nothing here writes to the instance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from hybrid_pipelines.operations.rules.thresholds import CRITICAL, Observation

CACHE_ASSET = dg.AssetKey("seaweedfs_cache")
AUDIT_CHECK = "cache_consistency"
METRICS_MAX_AGE_S = 1800.0  # the numbers are recorded every 5 min; older ones say nothing
FIRST_LOOK = 1000            # evaluations read on the very first tick (newest first)
BATCH = 1000                 # at most this many evaluations per tick


def _value(meta: dict[str, Any], name: str) -> Any:
    v = meta.get(name)
    return getattr(v, "value", v)


@dataclass
class CheckScan:
    after: int                                   # the next cursor (storage id)
    observations: list[Observation] = field(default_factory=list)
    mismatch_percent: float | None = None        # the newest audit that ran, this scan
    seen: int = 0


def scan_checks(instance: dg.DagsterInstance, after: int | None) -> CheckScan:
    """Check evaluations recorded after `after` (None: the newest FIRST_LOOK, so checks
    failing now alert at once without replaying all history)."""
    ev_type = dg.DagsterEventType.ASSET_CHECK_EVALUATION
    if after is None:
        records = list(reversed(instance.get_event_records(
            dg.EventRecordsFilter(ev_type), limit=FIRST_LOOK, ascending=False)))
    else:
        records = list(instance.get_event_records(
            dg.EventRecordsFilter(ev_type, after_cursor=after), limit=BATCH, ascending=True))
    scan = CheckScan(after=after or 0, seen=len(records))
    latest: dict[str, Observation] = {}
    for rec in records:
        scan.after = max(scan.after, rec.storage_id)
        ev = rec.event_log_entry.dagster_event
        data = ev.event_specific_data if ev is not None else None
        if data is None or not hasattr(data, "check_name"):
            continue
        asset = data.asset_key.to_user_string()
        key = f"check.{asset}.{data.check_name}"
        failing = not data.passed and data.severity == dg.AssetCheckSeverity.ERROR
        latest[key] = Observation(
            key, failing, CRITICAL, f"Check {data.check_name} on {asset} failing (ERROR)",
            data.description or ("failed" if not data.passed else "passed"))
        meta = dict(data.metadata or {})
        if data.check_name == AUDIT_CHECK and not _value(meta, "skipped"):
            pct = _value(meta, "drift_percent")
            if isinstance(pct, int | float):
                scan.mismatch_percent = float(pct)
    scan.observations = list(latest.values())
    return scan


@dataclass(frozen=True)
class CacheNumbers:
    usage_percent: float | None = None
    sync_queue: int | None = None
    sync_failure_rate: float | None = None
    healthy: dict[str, bool] = field(default_factory=dict)
    recorded_at: float | None = None


def _newest(instance: dg.DagsterInstance, key: dg.AssetKey) -> tuple[float, dict] | None:
    """The newest materialization or observation of `key`: (timestamp, metadata)."""
    best = None
    for fetch, attr in ((instance.fetch_materializations, "asset_materialization"),
                        (instance.fetch_observations, "asset_observation")):
        recs = fetch(key, limit=1).records
        if recs and (best is None or recs[0].storage_id > best[0]):
            event = getattr(recs[0], attr)
            best = (recs[0].storage_id, recs[0].timestamp, dict(event.metadata or {}))
    return None if best is None else (best[1], best[2])


def cache_numbers(instance: dg.DagsterInstance, now: float,
                  max_age_s: float = METRICS_MAX_AGE_S) -> CacheNumbers:
    found = _newest(instance, CACHE_ASSET)
    if found is None or now - found[0] > max_age_s:
        return CacheNumbers()
    ts, meta = found

    def num(name: str) -> float | None:
        v = _value(meta, name)
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    queue = num("sync_queue_size")
    healthy = {name: bool(v) for name, v in
               (("seaweedfs", num("seaweed_health")), ("nas", num("nas_health")))
               if v is not None}
    return CacheNumbers(num("cache_usage_percent"), None if queue is None else int(queue),
                        num("sync_failure_rate"), healthy, ts)
