"""The platform's alarm thresholds for the hybrid cache, as plain data and one evaluator."""

from __future__ import annotations

from dataclasses import dataclass

USAGE_ALARM_PERCENT = 90.0
QUEUE_ALARM_FILES = 1000
FAILURE_RATE_ALARM = 0.05
HIT_RATE_ALARM = 0.70


@dataclass(frozen=True)
class CacheStats:
    cache_usage_percent: float
    sync_queue_size: int
    sync_failure_rate: float      # 0..1 over recent sync activity
    cache_hit_rate: float | None  # 0..1; None when nothing was accessed yet
    seaweed_healthy: bool
    nas_healthy: bool


@dataclass(frozen=True)
class Alarm:
    check_name: str
    passed: bool
    description: str
    value: float  # what was measured (-1: nothing to measure yet)
    threshold: float


def evaluate(stats: CacheStats) -> list[Alarm]:
    hit = stats.cache_hit_rate
    down = [name for name, ok in (("SeaweedFS", stats.seaweed_healthy),
                                  ("NAS", stats.nas_healthy)) if not ok]
    return [
        Alarm("cache_usage_ok", stats.cache_usage_percent <= USAGE_ALARM_PERCENT,
              f"cache usage {stats.cache_usage_percent:.1f}% "
              f"(alarm above {USAGE_ALARM_PERCENT:.0f}%)",
              stats.cache_usage_percent, USAGE_ALARM_PERCENT),
        Alarm("sync_queue_ok", stats.sync_queue_size <= QUEUE_ALARM_FILES,
              f"{stats.sync_queue_size} files waiting for the NAS "
              f"(alarm above {QUEUE_ALARM_FILES})", stats.sync_queue_size, QUEUE_ALARM_FILES),
        Alarm("sync_failure_rate_ok", stats.sync_failure_rate <= FAILURE_RATE_ALARM,
              f"sync failure rate {stats.sync_failure_rate:.1%} "
              f"(alarm above {FAILURE_RATE_ALARM:.0%})", stats.sync_failure_rate,
              FAILURE_RATE_ALARM),
        Alarm("cache_hit_rate_ok", hit is None or hit >= HIT_RATE_ALARM,
              "no cache accesses recorded yet" if hit is None else
              f"cache hit rate {hit:.1%} (alarm below {HIT_RATE_ALARM:.0%})",
              -1.0 if hit is None else hit, HIT_RATE_ALARM),
        Alarm("cache_backends_healthy", not down,
              "SeaweedFS and NAS healthy" if not down else f"unhealthy: {', '.join(down)}",
              2 - len(down), 2),
    ]
