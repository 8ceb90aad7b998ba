"""Hybrid-cache sensors: a run only when there is work (issue #17). Each tick asks one cheap
question (hybrid_cache/queue_probe.py: a count over a partial index) and returns a SkipReason
when the answer is "nothing". A run request carries a run key built from the work itself (the
queue's size and newest change), so re-evaluating the same queue never launches it twice.

- pending_sync_sensor: every SYNC_INTERVAL_MS (60 s), the sync queue.
- priority_sync_sensor: every 5 s, rows with sync_priority > 0 (the design's "immediately").
- cache_usage_sensor: every 60 s, cached bytes against CACHE_THRESHOLD_PERCENT.
- cache_health_sensor: every HEALTH_CHECK_INTERVAL_MS, SeaweedFS's health and the re-cache queue.

Each tick reads the platform's settings as they are then (shared/cache_settings.py); the runs
they request carry them in their run config and as tags."""

import json
import os
import time

import dagster as dg

from hybrid_pipelines.defs.hybrid_cache.config import LOADED
from hybrid_pipelines.defs.hybrid_cache.jobs import (
    cache_eviction_job,
    pending_sync_job,
    recache_job,
)
from hybrid_pipelines.defs.hybrid_cache.schedules import WAITING, settings_run_request
from hybrid_pipelines.defs.run_keys import work_key
from hybrid_pipelines.defs.sensor_cadence import EVERY_WAKE_S
from hybrid_pipelines.hybrid_cache.health_gate import NAS, SEAWEEDFS, load_state
from hybrid_pipelines.hybrid_cache.queue_probe import (
    Probe,
    cached_bytes,
    prepare_serialised,
    recache_due,
    sync_due,
)
from hybrid_pipelines.hybrid_cache.rules.circuit_breaker import BreakerPolicy, decide
from hybrid_pipelines.hybrid_cache.rules.sensor_decisions import (
    recache_decision,
    usage_decision,
)
from hybrid_pipelines.hybrid_cache.runtime import backend_gates
from hybrid_pipelines.resources import NASResource, PostgresResource, SeaweedFSResource
from hybrid_pipelines.shared.cache_settings import CacheSettings, cache_settings

DEFAULT_THRESHOLD = LOADED.threshold
PRIORITY_INTERVAL_S = EVERY_WAKE_S  # every 5 s, on each wake of the daemon
RETRY_DELAY_S = 60.0  # SyncConfig.retry_delay_s: a failed row is not due before this
ACTIVE = [*WAITING, dg.DagsterRunStatus.STARTED]


def _active_run(instance: dg.DagsterInstance, statuses: list) -> dg.DagsterRun | None:
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=pending_sync_job.name,
                                                   statuses=statuses), limit=1)
    return runs[0] if runs else None


def _sync_queue(postgres: PostgresResource,
                high_priority_only: bool) -> tuple[CacheSettings, Probe] | dg.SkipReason:
    """The sync sensors' shared question: the queue (one indexed count), and whether both
    backends' breakers let a sync through. A breaker held open by cache_health_sensor's
    probes means a run would only find the backend down again: skip, naming the backend."""
    settings = cache_settings()  # as set now: a bad value fails the tick naming it
    prepare_serialised(postgres)
    with postgres.connect(autocommit=True) as conn:
        probe = sync_due(conn, settings.sync_max_retries, RETRY_DELAY_S,
                         high_priority_only=high_priority_only)
        closed = [] if probe.idle else [(name, decide(load_state(conn, name), BreakerPolicy(),
                                                      time.time())) for name in (SEAWEEDFS, NAS)]
    what = "high-priority file" if high_priority_only else "file"
    if probe.idle:
        return dg.SkipReason(f"no {what} waits for sync")
    if down := [f"{name}: {d.reason}" for name, d in closed if not d.allowed]:
        return dg.SkipReason(f"{probe.count} {what}s wait, but the sync cannot reach its "
                             f"backends ({'; '.join(down)}); cache_health_sensor probes them "
                             "every HEALTH_CHECK_INTERVAL_MS")
    return settings, probe


@dg.sensor(job=pending_sync_job, minimum_interval_seconds=LOADED.sync_interval_s,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Every SYNC_INTERVAL_MS (default 60 s): one indexed count of the rows "
                       "due for sync. Requests pending_sync only when there are some, both "
                       "backends' breakers are closed and no pending_sync run is waiting or "
                       "running (it takes new rows in its next batch); run key = queue size + "
                       "newest change.")
def pending_sync_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    found = _sync_queue(postgres, high_priority_only=False)
    if isinstance(found, dg.SkipReason):
        return found
    _, probe = found
    if run := _active_run(context.instance, ACTIVE):
        return dg.SkipReason(f"{probe.count} files wait; run {run.run_id} of pending_sync "
                             f"({run.status.value}) takes them")
    return in_process(settings_run_request(
        pending_sync_job.name, run_key=work_key(context, "sync", probe.marker),
        tags={"reason": f"{probe.count} files wait for sync"}))


@dg.sensor(job=pending_sync_job, minimum_interval_seconds=PRIORITY_INTERVAL_S,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Every 5 s: one indexed count of high-priority rows (sync_priority > "
                       "0) due for sync. Requests a one-batch pending_sync run sized to them "
                       "(the claim takes high priority first), so they reach the NAS within "
                       "seconds; skips while a pending_sync run waits to start or a backend's "
                       "breaker is open.")
def priority_sync_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    found = _sync_queue(postgres, high_priority_only=True)
    if isinstance(found, dg.SkipReason):
        return found
    settings, probe = found
    if run := _active_run(context.instance, WAITING):
        return dg.SkipReason(f"{probe.count} high-priority files wait; run {run.run_id} of "
                             "pending_sync is about to start and claims them first")
    request = settings_run_request(pending_sync_job.name,
                                   run_key=work_key(context, "priority", probe.marker),
                                   tags={"reason": f"{probe.count} high-priority files wait",
                                         "hybrid_pipelines/priority": "high"})
    cfg = request.run_config["ops"]["nas_replicas"]["config"]
    cfg.update(batch_size=min(probe.count, settings.sync_batch_size), max_batches=1)
    return in_process(request)


def in_process(request: dg.RunRequest) -> dg.RunRequest:
    """pending_sync is one step: running it in the run's own process saves starting (and
    loading the code in) a step process: seconds of the design's "immediately", and one
    process launch less per run. Only under Dagster's default executor."""
    if _default_executor():
        request.run_config["execution"] = {"config": {"in_process": {}}}
    return request


def _default_executor() -> bool:
    """definitions._executor's choice: Dagster's default executor, whose run config takes
    `in_process` (not the k8s job executor of a cluster)."""
    choice = os.environ.get("HP_EXECUTOR") or (
        "k8s" if "KUBERNETES_SERVICE_HOST" in os.environ else "default")
    return choice == "default"


@dg.sensor(job=cache_eviction_job, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Requests cache_eviction when cached bytes (sum of the cached rows' "
                       "sizes, a cheap proxy for the bucket listing the job itself does) cross "
                       "CACHE_THRESHOLD_PERCENT (default 80%) of HP_CACHE_CAPACITY_BYTES.")
def cache_usage_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    settings = cache_settings()  # as set now: a bad value fails the tick naming it
    prepare_serialised(postgres)
    with postgres.connect(autocommit=True) as conn:
        used = cached_bytes(conn)
    decision = usage_decision(context.cursor, used, settings.capacity_bytes,
                              settings.threshold, time.time())
    context.update_cursor(decision.cursor)
    if not decision.request:
        return dg.SkipReason(decision.reason)
    # The key is the decision's own time: one request per decision, never repeated.
    stamp = int(float(json.loads(decision.cursor)["last_request"]))
    return settings_run_request(cache_eviction_job.name, run_key=f"usage-{stamp}",
                                tags={"reason": decision.reason})


@dg.sensor(job=recache_job, minimum_interval_seconds=LOADED.health_check_interval_s,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Probes SeaweedFS and the NAS every HEALTH_CHECK_INTERVAL_MS (default "
                       "30 s; feeding their circuit breakers) and requests recache when "
                       "SeaweedFS is back and NAS-only uploads wait (one indexed count).")
def cache_health_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource,
                        seaweedfs: SeaweedFSResource, nas: NASResource):
    prepare_serialised(postgres)
    with postgres.connect(autocommit=True) as conn:
        gates = backend_gates(conn, seaweedfs, nas, BreakerPolicy())
        probe = recache_due(conn)
    decision = recache_decision(context.cursor, gates[SEAWEEDFS].healthy, probe.count,
                                time.time())
    context.update_cursor(decision.cursor)
    if not decision.request:
        return dg.SkipReason(decision.reason)
    stamp = int(float(json.loads(decision.cursor)["last_request"]))
    return settings_run_request(recache_job.name, run_key=f"recache:{probe.marker}:{stamp}",
                                tags={"reason": decision.reason})
