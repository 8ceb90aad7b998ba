"""Daily schedules (UTC): model demotion 02:00, context archive + expiry 03:00, generated
outputs 04:00, EFS model mirror hourly at :15. Each run gets the scheduled time as its `now`,
so a late or re-executed run decides exactly as the on-time run would have."""

import dagster as dg

from hybrid_pipelines.defs.ai_tiers.assets import (
    ArchiveConfig,
    EfsSyncConfig,
    ExpiryConfig,
    ModelDemotionConfig,
    OutputsConfig,
)
from hybrid_pipelines.defs.ai_tiers.jobs import (
    context_archive_job,
    efs_model_sync_job,
    generated_outputs_job,
    model_demotion_job,
)


def scheduled_now(context: dg.ScheduleEvaluationContext) -> str | None:
    when = context.scheduled_execution_time
    return when.isoformat() if when is not None else None


@dg.schedule(cron_schedule="0 2 * * *", job=model_demotion_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def model_demotion_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_config=dg.RunConfig(ops={
        "model_locations": ModelDemotionConfig(now=scheduled_now(context))}))


@dg.schedule(cron_schedule="0 3 * * *", job=context_archive_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def context_archive_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    now = scheduled_now(context)
    return dg.RunRequest(run_config=dg.RunConfig(ops={
        "user_contexts_archive": ArchiveConfig(now=now),
        "user_context_exports": ExpiryConfig(now=now)}))


@dg.schedule(cron_schedule="0 4 * * *", job=generated_outputs_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def generated_outputs_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_config=dg.RunConfig(ops={
        "generated_outputs": OutputsConfig(now=scheduled_now(context))}))


@dg.schedule(cron_schedule="15 * * * *", job=efs_model_sync_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def efs_model_sync_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_config=dg.RunConfig(ops={
        "efs_models": EfsSyncConfig(now=scheduled_now(context))}))
