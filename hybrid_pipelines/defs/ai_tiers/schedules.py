"""Daily schedules (UTC): model demotion 02:00, context archive + expiry 03:00, generated
outputs 04:00, EFS model mirror hourly at :15. Each run gets the scheduled time as its `now`,
so a late or re-executed run decides exactly as the on-time run would have."""

import dagster as dg

from hybrid_pipelines.defs.ai_tiers.jobs import (
    context_archive_job,
    efs_model_sync_job,
    generated_outputs_job,
    model_demotion_job,
)


def clock_run_config(context: dg.ScheduleEvaluationContext, *ops: str) -> dict:
    when = context.scheduled_execution_time
    now = when.isoformat() if when is not None else None
    return {"ops": {op: {"config": {"now": now}} for op in ops}}


@dg.schedule(cron_schedule="0 2 * * *", job=model_demotion_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def model_demotion_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_config=clock_run_config(context, "model_locations"))


@dg.schedule(cron_schedule="0 3 * * *", job=context_archive_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def context_archive_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_config=clock_run_config(
        context, "user_contexts_archive", "user_context_exports"))


@dg.schedule(cron_schedule="0 4 * * *", job=generated_outputs_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def generated_outputs_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_config=clock_run_config(context, "generated_outputs"))


@dg.schedule(cron_schedule="15 * * * *", job=efs_model_sync_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def efs_model_sync_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_config=clock_run_config(context, "efs_models"))
