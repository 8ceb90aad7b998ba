"""Daily schedules (UTC): model demotion 02:00, context archive + expiry 03:00, generated
outputs 04:00 (the EFS model mirror is launched by efs_sensor.py when the bucket changed).
Each run gets the scheduled time as its `now`, so a late or re-executed run decides exactly
as the on-time run would have. The demotion
run also gets the hot volume's threshold / target / capacity from HP_HOT_TIER_* when set."""

import os
from collections.abc import Mapping

import dagster as dg

from hybrid_pipelines.defs.ai_tiers.assets import (
    ArchiveConfig,
    ExpiryConfig,
    ModelDemotionConfig,
    OutputsConfig,
)
from hybrid_pipelines.defs.ai_tiers.jobs import (
    context_archive_job,
    generated_outputs_job,
    model_demotion_job,
)

# The hot volume's demotion settings for scheduled runs (run config fields of the same
# meaning; unset: the field's default, 90% / 80% of what statvfs reports).
HOT_VOLUME_ENV = {"HP_HOT_TIER_THRESHOLD_PERCENT": "hot_volume_threshold_percent",
                  "HP_HOT_TIER_TARGET_PERCENT": "hot_volume_target_percent",
                  "HP_HOT_TIER_CAPACITY_BYTES": "hot_volume_capacity_bytes"}


def hot_volume_settings(environ: Mapping[str, str] | None = None) -> dict[str, float | int]:
    env = os.environ if environ is None else environ
    out: dict[str, float | int] = {}
    for var, fld in HOT_VOLUME_ENV.items():
        raw = env.get(var, "").strip()
        if not raw:
            continue
        try:
            out[fld] = int(raw) if fld.endswith("_bytes") else float(raw)
        except ValueError as exc:
            raise ValueError(f"{var}={raw!r} is not a number; set it to e.g. "
                             f"{'0' if fld.endswith('_bytes') else '90'} or unset it") from exc
    return out


def scheduled_now(context: dg.ScheduleEvaluationContext) -> str | None:
    when = context.scheduled_execution_time
    return when.isoformat() if when is not None else None


@dg.schedule(cron_schedule="0 2 * * *", job=model_demotion_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def model_demotion_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_config=dg.RunConfig(ops={
        "model_locations": ModelDemotionConfig(now=scheduled_now(context),
                                               **hot_volume_settings())}))


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
