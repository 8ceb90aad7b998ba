"""Hybrid-cache schedules."""

import dagster as dg

from hybrid_pipelines.defs.hybrid_cache.jobs import (
    cache_consistency_audit_job,
    cache_eviction_job,
    cache_stats_job,
    pending_sync_job,
    recache_job,
)

WAITING = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
           dg.DagsterRunStatus.STARTING]


@dg.schedule(job=pending_sync_job, cron_schedule="* * * * *",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Every minute, unless a pending_sync run is still waiting to start "
                         "(a backlog of queued runs would only pile up behind the pool limit).")
def pending_sync_schedule(context: dg.ScheduleEvaluationContext):
    waiting = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=pending_sync_job.name, statuses=WAITING), limit=1)
    if waiting:
        return dg.SkipReason(f"run {waiting[0].run_id} of pending_sync is still waiting")
    return dg.RunRequest()


cache_eviction_schedule = dg.ScheduleDefinition(
    job=cache_eviction_job, cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING)
recache_schedule = dg.ScheduleDefinition(
    job=recache_job, cron_schedule="*/10 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING)
cache_stats_schedule = dg.ScheduleDefinition(
    job=cache_stats_job, cron_schedule="*/5 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING)
cache_consistency_audit_schedule = dg.ScheduleDefinition(
    job=cache_consistency_audit_job, cron_schedule="17 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING)
