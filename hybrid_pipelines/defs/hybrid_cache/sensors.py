"""Hybrid-cache sensors: eviction when usage crosses the threshold, re-cache when SeaweedFS
recovers. Both keep their state in a JSON cursor. Each tick reads the platform's settings as
they are then (CACHE_THRESHOLD_PERCENT, CACHE_EVICTION_POLICY, ...: shared/cache_settings.py);
the runs they request carry them in their run config and as tags. The health sensor probes
every HEALTH_CHECK_INTERVAL_MS (read when definitions load)."""

import time

import dagster as dg

from hybrid_pipelines.defs.hybrid_cache.config import LOADED
from hybrid_pipelines.defs.hybrid_cache.jobs import cache_eviction_job, recache_job
from hybrid_pipelines.defs.hybrid_cache.schedules import settings_run_request
from hybrid_pipelines.hybrid_cache.health_gate import SEAWEEDFS
from hybrid_pipelines.hybrid_cache.rules.circuit_breaker import BreakerPolicy
from hybrid_pipelines.hybrid_cache.rules.sensor_decisions import recache_decision, usage_decision
from hybrid_pipelines.hybrid_cache.runtime import backend_gates, prepare
from hybrid_pipelines.hybrid_cache.stats import queue_stats
from hybrid_pipelines.resources import NASResource, PostgresResource, SeaweedFSResource
from hybrid_pipelines.shared.cache_settings import cache_settings

DEFAULT_THRESHOLD = LOADED.threshold


@dg.sensor(job=cache_eviction_job, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Requests cache_eviction when cached bytes (sum of the cached rows' "
                       "sizes, a cheap proxy for the bucket listing the job itself does) cross "
                       "CACHE_THRESHOLD_PERCENT (default 80%) of HP_CACHE_CAPACITY_BYTES.")
def cache_usage_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    settings = cache_settings()  # as set now: a bad value fails the tick naming it
    prepare(postgres)
    with postgres.connect(autocommit=True) as conn:
        stats = queue_stats(conn)
    decision = usage_decision(context.cursor, stats.cached_bytes, settings.capacity_bytes,
                              settings.threshold, time.time())
    context.update_cursor(decision.cursor)
    if not decision.request:
        return dg.SkipReason(decision.reason)
    return settings_run_request(cache_eviction_job.name, run_key=f"usage-{int(time.time())}",
                                tags={"reason": decision.reason})


@dg.sensor(job=recache_job, minimum_interval_seconds=LOADED.health_check_interval_s,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Probes SeaweedFS and the NAS every HEALTH_CHECK_INTERVAL_MS (default "
                       "30 s; feeding their circuit breakers) and requests recache when "
                       "SeaweedFS is back and NAS-only uploads wait.")
def cache_health_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource,
                        seaweedfs: SeaweedFSResource, nas: NASResource):
    prepare(postgres)
    with postgres.connect(autocommit=True) as conn:
        gates = backend_gates(conn, seaweedfs, nas, BreakerPolicy())
        stats = queue_stats(conn)
    decision = recache_decision(context.cursor, gates[SEAWEEDFS].healthy,
                                stats.recache_pending, time.time())
    context.update_cursor(decision.cursor)
    if not decision.request:
        return dg.SkipReason(decision.reason)
    return settings_run_request(recache_job.name, run_key=f"recache-{int(time.time())}",
                                tags={"reason": decision.reason})
