"""Hybrid-cache sensors: eviction when usage crosses the threshold, re-cache when SeaweedFS
recovers. Both keep their state in a JSON cursor."""

import time

import dagster as dg

from hybrid_pipelines.defs.hybrid_cache.config import capacity_from_env
from hybrid_pipelines.defs.hybrid_cache.jobs import cache_eviction_job, recache_job
from hybrid_pipelines.hybrid_cache.health_gate import SEAWEEDFS
from hybrid_pipelines.hybrid_cache.rules.circuit_breaker import BreakerPolicy
from hybrid_pipelines.hybrid_cache.rules.sensor_decisions import recache_decision, usage_decision
from hybrid_pipelines.hybrid_cache.runtime import backend_gates, prepare
from hybrid_pipelines.hybrid_cache.stats import queue_stats
from hybrid_pipelines.resources import NASResource, PostgresResource, SeaweedFSResource

DEFAULT_THRESHOLD = 0.8


@dg.sensor(job=cache_eviction_job, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Requests cache_eviction when cached bytes (sum of the cached rows' "
                       "sizes, a cheap proxy for the bucket listing the job itself does) cross "
                       "80% of HP_CACHE_CAPACITY_BYTES.")
def cache_usage_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    prepare(postgres)
    with postgres.connect(autocommit=True) as conn:
        stats = queue_stats(conn)
    decision = usage_decision(context.cursor, stats.cached_bytes, capacity_from_env(),
                              DEFAULT_THRESHOLD, time.time())
    context.update_cursor(decision.cursor)
    if not decision.request:
        return dg.SkipReason(decision.reason)
    return dg.RunRequest(run_key=f"usage-{int(time.time())}", tags={"reason": decision.reason})


@dg.sensor(job=recache_job, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Probes SeaweedFS and the NAS every minute (feeding their circuit "
                       "breakers) and requests recache when SeaweedFS is back and NAS-only "
                       "uploads wait.")
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
    return dg.RunRequest(run_key=f"recache-{int(time.time())}",
                         tags={"reason": decision.reason})
