"""The hybrid cache's numbers without a run (issue #17): `cache_stats_sensor` measures what a
`cache_stats` run measured (the rows' queue and hit counts, the bucket's real bytes against
capacity, both backends' health) every 5 minutes and records them as an observation of
`seaweedfs_cache` with the same metadata names, plus the same alarm checks as check
evaluations (WARN). The catalog page plots them as before, and the alerts sensor
(alert_sources.cache_numbers reads the newest materialization *or observation*) sees them.
It launches no run: the work a failing alarm calls for (eviction, sync) is launched by the
hybrid cache's own sensors when their queue says so."""

from __future__ import annotations

import dagster as dg

from hybrid_pipelines.hybrid_cache.eviction import measure_usage
from hybrid_pipelines.hybrid_cache.health_gate import SEAWEEDFS
from hybrid_pipelines.hybrid_cache.queue_probe import prepare_serialised
from hybrid_pipelines.hybrid_cache.rules.alarms import CacheStats, evaluate
from hybrid_pipelines.hybrid_cache.rules.circuit_breaker import BreakerPolicy
from hybrid_pipelines.hybrid_cache.runtime import backend_gates, health_metadata
from hybrid_pipelines.hybrid_cache.stats import queue_stats
from hybrid_pipelines.resources import NASResource, PostgresResource, SeaweedFSResource
from hybrid_pipelines.shared.cache_settings import cache_settings

CACHE_ASSET = dg.AssetKey("seaweedfs_cache")
STATS_INTERVAL_S = 300  # as fresh as the old */5 cache_stats schedule


def measure(postgres: PostgresResource, seaweedfs: SeaweedFSResource, nas: NASResource,
            capacity_bytes: int, key_prefix: str = "") -> list:
    """The observation and check evaluations a cache_stats run would have recorded."""
    prepare_serialised(postgres)
    with postgres.connect(autocommit=True) as conn:
        gates = backend_gates(conn, seaweedfs, nas, BreakerPolicy())
        stats = queue_stats(conn)
    health = health_metadata(gates)
    meta: dict = {**stats.metadata(), **health, "bytes_synced": 0, "files_evicted": 0}
    if gates[SEAWEEDFS].healthy:
        usage = measure_usage(seaweedfs.get_client(), seaweedfs.bucket, key_prefix,
                              capacity_bytes)
        meta |= {"cache_usage_bytes": usage.bytes, "cache_objects": usage.objects,
                 "cache_usage_percent": round(usage.percent, 3), "usage_from_bucket": 1}
    else:
        # The bucket cannot be listed: the rows' sizes are the best estimate there is.
        pct = round(100.0 * stats.cached_bytes / capacity_bytes, 3) if capacity_bytes else 0.0
        meta |= {"cache_usage_bytes": stats.cached_bytes, "cache_usage_percent": pct,
                 "usage_from_bucket": 0}
    meta["cache_capacity_bytes"] = capacity_bytes
    meta["recorded_by"] = dg.MetadataValue.text("cache_stats_sensor")
    events: list = [dg.AssetObservation(asset_key=CACHE_ASSET, metadata=meta)]
    alarms = evaluate(CacheStats(meta["cache_usage_percent"], stats.sync_queue_size,
                                 stats.sync_failure_rate, stats.cache_hit_rate,
                                 bool(health["seaweed_health"]), bool(health["nas_health"])))
    for alarm in alarms:
        events.append(dg.AssetCheckEvaluation(
            asset_key=CACHE_ASSET, check_name=alarm.check_name, passed=alarm.passed,
            severity=dg.AssetCheckSeverity.WARN, description=alarm.description,
            metadata={"value": float(alarm.value), "threshold": float(alarm.threshold)}))
    return events


@dg.sensor(name="cache_stats_sensor", minimum_interval_seconds=STATS_INTERVAL_S,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Every 5 minutes: the hybrid cache's numbers (usage, queue, failure "
                       "and hit rate, backend health) recorded as an observation of "
                       "seaweedfs_cache and its alarm checks as check evaluations. No run.")
def cache_stats_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource,
                       seaweedfs: SeaweedFSResource, nas: NASResource) -> dg.SensorResult:
    settings = cache_settings()  # as set now: a bad value fails the tick naming it
    events = measure(postgres, seaweedfs, nas, settings.capacity_bytes)
    failing = [e.check_name for e in events
               if isinstance(e, dg.AssetCheckEvaluation) and not e.passed]
    if failing:
        context.log.warning(f"cache alarms failing: {', '.join(failing)}")
    return dg.SensorResult(asset_events=events)


defs = dg.Definitions(sensors=[cache_stats_sensor])
