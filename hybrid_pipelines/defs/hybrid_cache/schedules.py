"""Hybrid-cache schedules: daily safety nets only (issue #17). The work is launched by the
sensors (sensors.py) at the designs' cadence; each schedule here runs once a day and itself
skips when its queue is empty (the same cheap count the sensors use), so an idle platform
gets no run from it. The cache statistics are recorded by a sensor, not a run
(defs/operations/cache_metrics.py); the consistency audit is launched by
cache_audit_sensor (audit_sensor.py).

Each tick reads the platform's settings as they are then (CACHE_EVICTION_POLICY,
CACHE_THRESHOLD_PERCENT, SYNC_BATCH_SIZE, ... or their HP_* names), puts them into the run
config and tags the run with them (`hybrid_pipelines/settings.*`, no secret)."""

import dagster as dg

from hybrid_pipelines.defs.hybrid_cache.config import run_config_for
from hybrid_pipelines.defs.hybrid_cache.jobs import (
    cache_eviction_job,
    pending_sync_job,
    recache_job,
)
from hybrid_pipelines.hybrid_cache.queue_probe import (
    Probe,
    cached_bytes,
    prepare_serialised,
    recache_due,
    sync_due,
)
from hybrid_pipelines.resources import PostgresResource
from hybrid_pipelines.shared.cache_settings import cache_settings, settings_tags

WAITING = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
           dg.DagsterRunStatus.STARTING]
# Once a day, early UTC, spread so two never start together.
SAFETY_NET_CRON = {"pending_sync": "5 5 * * *", "recache": "25 5 * * *",
                   "cache_eviction": "45 5 * * *"}


def settings_run_request(job_name: str, **kwargs) -> dg.RunRequest:
    """A RunRequest carrying the settings in force now: in its run config and as tags.
    A malformed setting fails the tick with the message naming the variable."""
    settings = cache_settings()
    tags = {**settings_tags(settings=settings), **kwargs.pop("tags", {})}
    return dg.RunRequest(run_config=run_config_for(job_name, settings), tags=tags, **kwargs)


def _due(postgres: PostgresResource, what: str) -> Probe | int:
    settings = cache_settings()
    prepare_serialised(postgres)
    with postgres.connect(autocommit=True) as conn:
        if what == "sync":
            return sync_due(conn, settings.sync_max_retries, 60.0)
        if what == "recache":
            return recache_due(conn)
        return cached_bytes(conn)


@dg.schedule(job=pending_sync_job, cron_schedule=SAFETY_NET_CRON["pending_sync"],
             execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Daily safety net behind pending_sync_sensor (which syncs every "
                         "SYNC_INTERVAL_MS when files wait): skips when nothing is due or a "
                         "pending_sync run is still waiting. Batch size and retries: "
                         "SYNC_BATCH_SIZE, SYNC_MAX_RETRIES.")
def pending_sync_schedule(context: dg.ScheduleEvaluationContext, postgres: PostgresResource):
    waiting = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=pending_sync_job.name, statuses=WAITING), limit=1)
    if waiting:
        return dg.SkipReason(f"run {waiting[0].run_id} of pending_sync is still waiting")
    probe = _due(postgres, "sync")
    assert isinstance(probe, Probe)
    if probe.idle:
        return dg.SkipReason("no file waits for sync")
    return settings_run_request(pending_sync_job.name)


@dg.schedule(job=cache_eviction_job, cron_schedule=SAFETY_NET_CRON["cache_eviction"],
             execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Daily safety net behind cache_usage_sensor: evicts by "
                         "CACHE_EVICTION_POLICY only when the cached rows are above "
                         "CACHE_THRESHOLD_PERCENT, CACHE_EVICTION_BATCH_SIZE files per batch.")
def cache_eviction_schedule(context: dg.ScheduleEvaluationContext, postgres: PostgresResource):
    settings = cache_settings()
    used = _due(postgres, "eviction")
    assert isinstance(used, int)
    if used <= settings.threshold * settings.capacity_bytes:
        return dg.SkipReason(f"cached rows hold {used} bytes, at or below "
                             f"{settings.threshold_percent}% of {settings.capacity_bytes}")
    return settings_run_request(cache_eviction_job.name)


@dg.schedule(job=recache_job, cron_schedule=SAFETY_NET_CRON["recache"],
             execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Daily safety net behind cache_health_sensor: skips when no "
                         "NAS-only upload waits for re-cache.")
def recache_schedule(context: dg.ScheduleEvaluationContext, postgres: PostgresResource):
    probe = _due(postgres, "recache")
    assert isinstance(probe, Probe)
    if probe.idle:
        return dg.SkipReason("no file waits for re-cache")
    return settings_run_request(recache_job.name)
