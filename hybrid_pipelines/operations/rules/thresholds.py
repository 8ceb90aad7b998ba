"""What is alarming, as plain data: the hybrid-cache design's metric thresholds and the
consistency design's critical cases, turned into one Observation per incident key.

An Observation says whether a condition holds now (`firing`), or that it could not be measured
this time (`firing is None`): an unmeasured condition leaves its incident as it is, so a quiet
access log or a stale metric neither opens nor closes anything."""

from __future__ import annotations

from dataclasses import dataclass, field

from hybrid_pipelines.hybrid_cache.rules.alarms import (
    FAILURE_RATE_ALARM,
    HIT_RATE_ALARM,
    QUEUE_ALARM_FILES,
    USAGE_ALARM_PERCENT,
)

WARNING, CRITICAL = "warning", "critical"
SEVERITIES = (WARNING, CRITICAL)


@dataclass(frozen=True)
class Observation:
    key: str                   # the incident's identity, stable across ticks
    firing: bool | None        # None: not measured now (the incident stays as it is)
    severity: str = WARNING
    title: str = ""
    detail: str = ""
    hold_s: float = 0.0        # the condition must hold this long before the incident opens
    since: float | None = None  # when the condition began, if the source knows it

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} is not one of {SEVERITIES}")


@dataclass(frozen=True)
class Limits:
    """The designs' numbers. Strict comparisons, as the designs word them ("> 90%")."""
    hit_rate_min: float = HIT_RATE_ALARM          # alarm below 70 %
    usage_max_percent: float = USAGE_ALARM_PERCENT  # alarm above 90 %
    queue_max: int = QUEUE_ALARM_FILES            # alarm above 1,000 files
    failure_rate_max: float = FAILURE_RATE_ALARM  # alarm above 5 %
    latency_max_ms: float = 500.0                 # alarm above 500 ms average
    min_downloads: int = 20        # fewer downloads in the window: hit rate/latency unmeasured
    breaker_open_s: float = 300.0  # a breaker open this long is critical (design 003)
    unhealthy_hold_s: float = 60.0  # one failed probe is a blip; two in a row (30 s) is not
    mismatch_warn_percent: float = 1.0
    mismatch_critical_percent: float = 5.0


@dataclass(frozen=True)
class Breaker:
    state: str                 # closed | open | half_open (backend_circuit.state)
    failures: int              # consecutive failed probes
    opened_at: float | None    # epoch seconds
    last_error: str = ""


@dataclass(frozen=True)
class Metrics:
    """Everything measured this evaluation; None = not measured (or too old to trust)."""
    downloads: int = 0
    hit_rate: float | None = None          # 0..1 over the access-log window
    avg_latency_ms: float | None = None
    usage_percent: float | None = None
    sync_queue: int | None = None
    sync_failure_rate: float | None = None  # 0..1
    healthy: dict[str, bool] = field(default_factory=dict)   # backend -> last probe ok
    breakers: dict[str, Breaker] = field(default_factory=dict)
    mismatch_percent: float | None = None


def _above(key: str, value: float | None, limit: float, title: str, shown: str) -> Observation:
    if value is None:
        return Observation(key, None)
    return Observation(key, value > limit, WARNING, title, shown)


def cache_observations(m: Metrics, lim: Limits = Limits()) -> list[Observation]:
    """The hybrid-cache design's metric thresholds."""
    enough = m.downloads >= lim.min_downloads
    hit = m.hit_rate if enough else None
    latency = m.avg_latency_ms if enough else None
    obs = [
        Observation("cache.hit_rate", None) if hit is None else Observation(
            "cache.hit_rate", hit < lim.hit_rate_min, WARNING, "Cache hit rate low",
            f"hit rate {hit:.1%} over {m.downloads} downloads (alarm below "
            f"{lim.hit_rate_min:.0%})"),
        _above("cache.download_latency", latency, lim.latency_max_ms,
               "Download latency high",
               f"average download latency {latency or 0:.0f} ms over {m.downloads} downloads "
               f"(alarm above {lim.latency_max_ms:.0f} ms)"),
        _above("cache.usage", m.usage_percent, lim.usage_max_percent, "Cache nearly full",
               f"cache usage {m.usage_percent or 0:.1f}% (alarm above "
               f"{lim.usage_max_percent:.0f}%)"),
        _above("cache.sync_queue", m.sync_queue, lim.queue_max, "Sync queue long",
               f"{m.sync_queue} files waiting for the NAS (alarm above {lim.queue_max})"),
        _above("cache.sync_failure_rate", m.sync_failure_rate, lim.failure_rate_max,
               "Sync failures", f"sync failure rate {m.sync_failure_rate or 0:.1%} (alarm "
               f"above {lim.failure_rate_max:.0%})"),
    ]
    for backend, ok in sorted(m.healthy.items()):
        obs.append(Observation(f"backend.{backend}.unhealthy", not ok, WARNING,
                               f"{backend} unhealthy",
                               f"{backend}: the last health probe failed" if not ok
                               else f"{backend}: healthy", hold_s=lim.unhealthy_hold_s))
    return obs


def consistency_observations(m: Metrics, lim: Limits = Limits()) -> list[Observation]:
    """The consistency design's critical cases: a breaker open for 5 minutes, both stores
    down; drift between metadata and stores (> 1 % warning, > 5 % critical)."""
    obs: list[Observation] = []
    for backend, b in sorted(m.breakers.items()):
        tripped = b.state != "closed"  # half_open is a trial call of a still-broken backend
        why = f" ({b.last_error})" if b.last_error else ""
        obs.append(Observation(
            f"breaker.{backend}.open", tripped, CRITICAL, f"{backend} circuit breaker open",
            f"{backend} circuit {b.state} after {b.failures} consecutive failures{why}",
            hold_s=lim.breaker_open_s, since=b.opened_at if tripped else None))
    if len(m.healthy) >= 2:
        down = sorted(name for name, ok in m.healthy.items() if not ok)
        obs.append(Observation(
            "stores.both_down", len(down) == len(m.healthy), CRITICAL, "Both stores down",
            f"every store is down: {', '.join(down)}; downloads and uploads fail"
            if len(down) == len(m.healthy) else f"down: {', '.join(down) or 'none'}",
            hold_s=lim.unhealthy_hold_s))
    pct = m.mismatch_percent
    if pct is None:
        obs.append(Observation("consistency.mismatch", None))
    else:
        sev = CRITICAL if pct > lim.mismatch_critical_percent else WARNING
        obs.append(Observation(
            "consistency.mismatch", pct > lim.mismatch_warn_percent, sev,
            "Metadata and stores disagree",
            f"{pct:.2f}% of files drifted (warning above {lim.mismatch_warn_percent:g}%, "
            f"critical above {lim.mismatch_critical_percent:g}%)"))
    return obs


def evaluate(m: Metrics, lim: Limits = Limits()) -> list[Observation]:
    return cache_observations(m, lim) + consistency_observations(m, lim)
