"""Hybrid-cache assets: seaweedfs_cache (uploads recorded in Postgres, measured) ->
nas_replicas (pending sync) -> cache_evictions; recached_files brings NAS-only uploads back."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import dagster as dg
import psycopg

from hybrid_pipelines.defs.hybrid_cache.config import (
    DEFAULT_CAPACITY_BYTES,
    CacheStatsConfig,
    EvictionConfig,
    RecacheConfig,
    SyncConfig,
)
from hybrid_pipelines.hybrid_cache.eviction import EvictionReport, measure_usage, run_eviction
from hybrid_pipelines.hybrid_cache.health_gate import NAS, SEAWEEDFS, record
from hybrid_pipelines.hybrid_cache.recache import RecacheReport, run_recache
from hybrid_pipelines.hybrid_cache.rules.alarms import CacheStats, evaluate
from hybrid_pipelines.hybrid_cache.rules.circuit_breaker import BreakerPolicy
from hybrid_pipelines.hybrid_cache.runtime import (
    backend_gates,
    blocked,
    health_metadata,
    prepare,
    probes,
)
from hybrid_pipelines.hybrid_cache.stats import QueueStats, queue_stats
from hybrid_pipelines.hybrid_cache.sync import SyncReport, run_pending_sync
from hybrid_pipelines.resources import NASResource, PostgresResource, SeaweedFSResource

GROUP = "hybrid_cache"
ALARM_CHECKS = ("cache_usage_ok", "sync_queue_ok", "sync_failure_rate_ok", "cache_hit_rate_ok",
                "cache_backends_healthy")


def _usage_percent(stats: QueueStats, capacity: int) -> float:
    return round(100.0 * stats.cached_bytes / capacity, 3) if capacity > 0 else 0.0


def _numbers(stats: QueueStats, health: dict[str, int], *, bytes_synced: int = 0,
             files_evicted: int = 0) -> dict:
    """The numbers every hybrid-cache run reports, so each plots as one series in the UI.
    Usage here is the rows' cached bytes against HP_CACHE_CAPACITY_BYTES; the measuring
    assets (seaweedfs_cache, cache_evictions) overwrite it with the bucket's real bytes."""
    return {**stats.metadata(), **health, "bytes_synced": bytes_synced,
            "files_evicted": files_evicted,
            "cache_usage_percent": _usage_percent(stats, DEFAULT_CAPACITY_BYTES),
            "usage_from_bucket": 0}


def _skip(context: dg.AssetExecutionContext, reason: str, metadata: dict) -> None:
    """A skipped run records an observation (numbers + reason), not a materialisation."""
    context.log.warning(f"skipped: {reason}")
    context.log_event(dg.AssetObservation(
        asset_key=context.asset_key,
        metadata={**metadata, "skipped": 1, "skip_reason": dg.MetadataValue.text(reason)}))


@contextmanager
def _gated(context: dg.AssetExecutionContext, postgres: PostgresResource,
           seaweedfs: SeaweedFSResource, nas: NASResource, policy: BreakerPolicy, what: str,
           zero_metric: str) -> Iterator[tuple[psycopg.Connection, dict[str, int]] | None]:
    """Open the metadata connection and consult both backends' breakers. Yields the
    connection and the health numbers, or None after recording a skip (no attempt charged)
    when SeaweedFS or the NAS is down: every cache job needs both."""
    prepare(postgres)
    with postgres.connect(autocommit=True) as conn:
        gates = backend_gates(conn, seaweedfs, nas, policy)
        health = health_metadata(gates)
        if reason := blocked(gates, (SEAWEEDFS, NAS)):
            _skip(context, f"{what} skipped: {reason}",
                  {**_numbers(queue_stats(conn), health), zero_metric: 0})
            yield None
        else:
            yield conn, health


def _note_stop(context: dg.AssetExecutionContext, conn: psycopg.Connection,
               report: SyncReport | RecacheReport | EvictionReport, health: dict[str, int],
               policy: BreakerPolicy) -> None:
    """A backend that failed mid-run opens its breaker and shows as unhealthy."""
    if report.stopped_reason:
        record(conn, report.stopped_backend, False, report.stopped_reason, policy)
        health["seaweed_health" if report.stopped_backend == SEAWEEDFS else "nas_health"] = 0
        context.log.warning(f"stopped early: {report.stopped_reason}")


@dg.asset(
    group_name=GROUP,
    description="The SeaweedFS cache as the file server recorded it in file_metadata: bytes in "
                "the cache bucket against capacity, queue, hit rate, backend health. Checks "
                "warn at the platform's alarm thresholds.",
    check_specs=[dg.AssetCheckSpec(name, asset="seaweedfs_cache") for name in ALARM_CHECKS],
)
def seaweedfs_cache(context: dg.AssetExecutionContext, config: CacheStatsConfig,
                    postgres: PostgresResource, seaweedfs: SeaweedFSResource, nas: NASResource):
    policy = config.breaker_policy()  # bad run config fails before any backend is touched
    prepare(postgres)
    with postgres.connect(autocommit=True) as conn:
        gates = backend_gates(conn, seaweedfs, nas, policy)
        stats = queue_stats(conn)
    health = health_metadata(gates)
    meta: dict = _numbers(stats, health)
    if gates[SEAWEEDFS].healthy:
        usage = measure_usage(seaweedfs.get_client(), seaweedfs.bucket, config.key_prefix,
                              config.capacity_bytes)
        meta |= {"cache_usage_bytes": usage.bytes, "cache_objects": usage.objects,
                 "cache_usage_percent": round(usage.percent, 3), "usage_from_bucket": 1}
    else:
        # The bucket cannot be listed: the rows' sizes are the best estimate we have.
        meta |= {"cache_usage_bytes": stats.cached_bytes,
                 "cache_usage_percent": _usage_percent(stats, config.capacity_bytes),
                 "usage_from_bucket": 0}
    meta["cache_capacity_bytes"] = config.capacity_bytes
    yield dg.MaterializeResult(metadata=meta)
    alarms = evaluate(CacheStats(meta["cache_usage_percent"], stats.sync_queue_size,
                                 stats.sync_failure_rate, stats.cache_hit_rate,
                                 bool(health["seaweed_health"]), bool(health["nas_health"])))
    for alarm in alarms:
        yield dg.AssetCheckResult(check_name=alarm.check_name, passed=alarm.passed,
                                  severity=dg.AssetCheckSeverity.WARN,
                                  description=alarm.description,
                                  metadata={"value": float(alarm.value),
                                            "threshold": float(alarm.threshold)})


@dg.asset(
    group_name=GROUP, deps=[seaweedfs_cache], output_required=False,
    description="Verified NAS copies of cached uploads: the pending-sync queue drained in "
                "batches (SHA-256 checked on the NAS before the row is marked synced).",
)
def nas_replicas(context: dg.AssetExecutionContext, config: SyncConfig,
                 postgres: PostgresResource, seaweedfs: SeaweedFSResource, nas: NASResource):
    settings = replace(config.settings(), location=nas.root())
    policy = config.breaker_policy()
    with _gated(context, postgres, seaweedfs, nas, policy,
                "pending sync (no attempt charged)", "files_synced") as gate:
        if gate is None:
            return
        conn, health = gate
        report = run_pending_sync(conn, seaweedfs.get_client(), seaweedfs.bucket, nas.fs(),
                                  settings, probes=probes(seaweedfs, nas),
                                  master_url=seaweedfs.master_url)
        _note_stop(context, conn, report, health, policy)
        stats = queue_stats(conn)
    for err in report.errors[:20]:
        context.log.warning(err)
    yield dg.MaterializeResult(metadata={
        **_numbers(stats, health, bytes_synced=report.bytes_synced),
        "files_claimed": report.claimed, "files_synced": report.synced,
        "attempts_failed": report.failed_attempts,
        "files_failed": report.failed_final, "files_released": report.released,
        "leases_expired": report.leases_expired, "leases_lost": report.leases_lost,
        "run_failure_rate": round(report.failure_rate, 4),
        "stopped_reason": dg.MetadataValue.text(report.stopped_reason or "-"),
    })


@dg.asset(
    group_name=GROUP, deps=[seaweedfs_cache, nas_replicas], output_required=False,
    description="Cache eviction: above the usage threshold, delete cached objects whose NAS "
                "copy is synced, verified and re-checked on the NAS just before the delete "
                "(LRU/LFU/FIFO) down to the target. A copy found gone or changed is re-queued "
                "for sync and its object kept; an object another row still needs is kept; "
                "with the NAS down nothing is evicted.",
)
def cache_evictions(context: dg.AssetExecutionContext, config: EvictionConfig,
                    postgres: PostgresResource, seaweedfs: SeaweedFSResource, nas: NASResource):
    settings = replace(config.settings(), location=nas.root())
    policy = config.breaker_policy()
    # Every delete needs its NAS copy looked at first: with the NAS down, evict nothing.
    with _gated(context, postgres, seaweedfs, nas, policy, "eviction", "bytes_evicted") as gate:
        if gate is None:
            return
        conn, health = gate
        report = run_eviction(conn, seaweedfs.get_client(), seaweedfs.bucket, nas.fs(),
                              settings, probes=probes(seaweedfs, nas),
                              master_url=seaweedfs.master_url)
        _note_stop(context, conn, report, health, policy)
        stats = queue_stats(conn)
    if report.shortfall_bytes and not report.stopped_reason:
        context.log.warning(f"{report.shortfall_bytes} bytes still above the target: not enough "
                            "cached files are synced, verified and re-checked on the NAS yet")
    for err in report.errors:
        context.log.warning(err)
    yield dg.MaterializeResult(metadata={
        **_numbers(stats, health, files_evicted=report.files_evicted),
        "policy": dg.MetadataValue.text(report.policy),
        "bytes_evicted": report.bytes_evicted,
        "bytes_needed": report.bytes_needed, "shortfall_bytes": report.shortfall_bytes,
        "delete_errors": report.delete_errors,
        "recheck_failed": report.recheck_failed, "recheck_hashed": report.recheck_hashed,
        "recheck_bytes_hashed": report.bytes_hashed, "recheck_errors": report.recheck_errors,
        "keys_busy": report.keys_busy, "shared_keys_evicted": report.shared_keys_evicted,
        "stopped_reason": dg.MetadataValue.text(report.stopped_reason or "-"),
        "cache_usage_bytes_before": report.usage_before.bytes,
        "cache_usage_percent_before": round(report.usage_before.percent, 3),
        "cache_usage_percent": round(report.usage_after_percent, 3), "usage_from_bucket": 1,
        "cache_capacity_bytes": settings.capacity_bytes,
    })


@dg.asset(
    group_name=GROUP, deps=[nas_replicas], output_required=False,
    description="Uploads written straight to the NAS while SeaweedFS was down, copied back "
                "into the cache (hash-checked) once it is healthy again.",
)
def recached_files(context: dg.AssetExecutionContext, config: RecacheConfig,
                   postgres: PostgresResource, seaweedfs: SeaweedFSResource, nas: NASResource):
    policy = config.breaker_policy()
    # bad run config fails before any backend is touched
    settings = replace(config.settings(), location=nas.root())
    with _gated(context, postgres, seaweedfs, nas, policy, "re-cache", "files_recached") as gate:
        if gate is None:
            return
        conn, health = gate
        report = run_recache(conn, seaweedfs.get_client(), seaweedfs.bucket, nas.fs(),
                             settings, probes=probes(seaweedfs, nas))
        _note_stop(context, conn, report, health, policy)
        stats = queue_stats(conn)
    for err in report.errors[:20]:
        context.log.warning(err)
    yield dg.MaterializeResult(metadata={
        **_numbers(stats, health),
        "files_recached": report.recached, "bytes_recached": report.bytes_recached,
        "recache_failed": report.failed, "recache_refused": report.refused,
        "stopped_reason": dg.MetadataValue.text(report.stopped_reason or "-"),
    })
