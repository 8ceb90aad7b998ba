"""Hybrid-cache schedules. Each tick reads the platform's settings as they are then
(CACHE_EVICTION_POLICY, CACHE_THRESHOLD_PERCENT, SYNC_BATCH_SIZE, ... or their HP_* names),
puts them into the run config and tags the run with them (`hybrid_pipelines/settings.*`, no
secret). The sync cadence follows SYNC_INTERVAL_MS as read when definitions load (cron counts
whole minutes: the platform's 60 s is every minute)."""

import dagster as dg

from hybrid_pipelines.defs.hybrid_cache.config import LOADED, run_config_for
from hybrid_pipelines.defs.hybrid_cache.jobs import (
    cache_consistency_audit_job,
    cache_eviction_job,
    cache_stats_job,
    pending_sync_job,
    recache_job,
)
from hybrid_pipelines.shared.cache_settings import cache_settings, interval_cron, settings_tags

WAITING = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
           dg.DagsterRunStatus.STARTING]


def settings_run_request(job_name: str, **kwargs) -> dg.RunRequest:
    """A RunRequest carrying the settings in force now: in its run config and as tags.
    A malformed setting fails the tick with the message naming the variable."""
    settings = cache_settings()
    tags = {**settings_tags(settings=settings), **kwargs.pop("tags", {})}
    return dg.RunRequest(run_config=run_config_for(job_name, settings), tags=tags, **kwargs)


@dg.schedule(job=pending_sync_job, cron_schedule=interval_cron(LOADED.sync_interval_ms),
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Every SYNC_INTERVAL_MS (whole minutes; default every minute), unless "
                         "a pending_sync run is still waiting to start (a backlog of queued "
                         "runs would only pile up behind the pool limit). Batch size and "
                         "retries: SYNC_BATCH_SIZE, SYNC_MAX_RETRIES.")
def pending_sync_schedule(context: dg.ScheduleEvaluationContext):
    waiting = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=pending_sync_job.name, statuses=WAITING), limit=1)
    if waiting:
        return dg.SkipReason(f"run {waiting[0].run_id} of pending_sync is still waiting")
    return settings_run_request(pending_sync_job.name)


@dg.schedule(job=cache_eviction_job, cron_schedule="*/15 * * * *",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Evicts by CACHE_EVICTION_POLICY above CACHE_THRESHOLD_PERCENT, "
                         "CACHE_EVICTION_BATCH_SIZE files per batch.")
def cache_eviction_schedule(context: dg.ScheduleEvaluationContext):
    return settings_run_request(cache_eviction_job.name)


@dg.schedule(job=recache_job, cron_schedule="*/10 * * * *",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def recache_schedule(context: dg.ScheduleEvaluationContext):
    return settings_run_request(recache_job.name)


@dg.schedule(job=cache_stats_job, cron_schedule="*/5 * * * *",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def cache_stats_schedule(context: dg.ScheduleEvaluationContext):
    return settings_run_request(cache_stats_job.name)


@dg.schedule(job=cache_consistency_audit_job, cron_schedule="17 * * * *",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def cache_consistency_audit_schedule(context: dg.ScheduleEvaluationContext):
    return settings_run_request(cache_consistency_audit_job.name)
