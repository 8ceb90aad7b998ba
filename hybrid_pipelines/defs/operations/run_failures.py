"""A failed run tells a person: Dagster's run-failure sensor sends the job, the failed step(s),
the error's first line and a link to the run in the UI; a run-status sensor on SUCCESS sends
the recovery. One incident per job (and partition): while its runs keep failing, each further
failure is recorded in alert_history but not sent again (a per-minute job must not send 60
messages an hour); the first success after failures sends "recovered after N failed runs".
The state is the run history itself, and Dagster's run-status cursor handles each run once,
across daemon restarts."""

from __future__ import annotations

import dagster as dg

from hybrid_pipelines.defs.operations.alerts import ALERT_HISTORY
from hybrid_pipelines.operations.dispatch import dispatch
from hybrid_pipelines.operations.rules.messages import (
    first_line,
    run_failure_message,
    run_recovery_message,
)
from hybrid_pipelines.resources.alerting import AlertingResource

# Dagster wraps a step's exception in these; the person wants the exception itself.
_WRAPPERS = ("DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError")


def _root_message(error) -> str:
    while error is not None and error.cls_name in _WRAPPERS and error.cause is not None:
        error = error.cause
    if error is None:
        return ""
    msg = error.message or ""
    return msg if msg.startswith(error.cls_name or "\0") else f"{error.cls_name}: {msg}"


def failure_summary(context: dg.RunFailureSensorContext) -> tuple[list[str], str]:
    """The failed steps and the first error's message (a run-level message when no step
    failed: e.g. the run could not start)."""
    steps, errors = [], []
    for ev in context.get_step_failure_events():
        if ev.step_key:
            steps.append(ev.step_key)
        err = getattr(ev.event_specific_data, "error", None)
        if err is not None:
            errors.append(_root_message(err))
    run_error = context.failure_event.message or ""
    return steps, next((e for e in errors if e), run_error)


PARTITION_TAG = "dagster/partition"
STREAK_LOOKBACK = 50


def failed_before(instance: dg.DagsterInstance, run: dg.DagsterRun) -> int:
    """How many runs of the same job (and partition) failed in a row just before `run`."""
    record = instance.get_run_record_by_id(run.run_id)
    if record is None:
        return 0
    tags = {PARTITION_TAG: run.tags[PARTITION_TAG]} if PARTITION_TAG in run.tags else None
    older = instance.get_run_records(
        filters=dg.RunsFilter(job_name=run.job_name, tags=tags,
                              statuses=[dg.DagsterRunStatus.SUCCESS,
                                        dg.DagsterRunStatus.FAILURE],
                              created_before=record.create_timestamp),
        limit=STREAK_LOOKBACK)
    streak = 0
    for rec in older:  # newest first
        if rec.dagster_run.run_id == run.run_id:
            continue
        if rec.dagster_run.status != dg.DagsterRunStatus.FAILURE:
            break
        streak += 1
    return streak


def _history(instance: dg.DagsterInstance, event: str, run: dg.DagsterRun, detail: str,
             link: str, delivered: list[str], errors: list[str]) -> None:
    instance.report_runless_asset_event(dg.AssetObservation(
        asset_key=ALERT_HISTORY, metadata={
            "event": event, "incident": f"job.{run.job_name}",
            "severity": "info" if event == "run_recovered" else "critical",
            "title": f"{run.job_name}: {event.replace('_', ' ')}",
            "detail": dg.MetadataValue.text(detail), "run": dg.MetadataValue.url(link),
            "delivered_to": dg.MetadataValue.text("; ".join(delivered) or "nobody"),
            "delivery_errors": dg.MetadataValue.text("; ".join(errors) or "-")}))


@dg.run_failure_sensor(name="run_failure_alert_sensor", minimum_interval_seconds=30,
                       default_status=dg.DefaultSensorStatus.RUNNING,
                       description="Tells a person (webhook, e-mail) when a job fails: job, "
                                   "failed step, the error's first line, a link to the run "
                                   "(HP_DAGSTER_UI_URL); once until the job succeeds again.")
def run_failure_alert_sensor(context: dg.RunFailureSensorContext,
                             alerting: AlertingResource) -> None:
    run = context.dagster_run
    steps, error = failure_summary(context)
    message = run_failure_message(run.job_name, run.run_id, steps, error, alerting.ui_url)
    detail = f"step {', '.join(steps) or '-'}: {first_line(error)}"
    streak = failed_before(context.instance, run)
    if streak:
        # The incident is already open (told at its first failure): record, do not repeat.
        _history(context.instance, "run_failed_again", run,
                 f"{detail} ({streak + 1} failed runs in a row)", message.link, [], [])
        context.log.info(f"{run.job_name}: failure {streak + 1} in a row, already alerted")
        return
    _deliver(context, alerting, message, "run_failure", run, detail)


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, name="run_recovery_alert_sensor",
                      minimum_interval_seconds=30,
                      default_status=dg.DefaultSensorStatus.RUNNING,
                      description="Tells a person when a job whose last runs failed succeeds "
                                  "again (the run-failure alert's recovery message).")
def run_recovery_alert_sensor(context: dg.RunStatusSensorContext,
                              alerting: AlertingResource) -> None:
    run = context.dagster_run
    streak = failed_before(context.instance, run)
    if not streak:
        return
    message = run_recovery_message(run.job_name, run.run_id, streak, alerting.ui_url)
    _deliver(context, alerting, message, "run_recovered", run,
             f"succeeded after {streak} failed runs")


def _deliver(context, alerting: AlertingResource, message, event: str, run: dg.DagsterRun,
             detail: str) -> None:
    channels = alerting.channels()
    report = dispatch(alerting.send, channels, [message], [], 0.0)
    _history(context.instance, event, run, detail, message.link, report.delivered,
             report.errors)
    if not channels:
        context.log.warning(f"{event} not sent: no alert channel is configured "
                            "(HP_ALERT_WEBHOOK_URLS, HP_ALERT_SMTP_HOST)")
    elif not report.delivered:
        # The tick fails, visibly, in the UI; the run is recorded in alert_history either way.
        raise RuntimeError(f"{event} alert for run {run.run_id} reached no channel: "
                           f"{'; '.join(report.errors)}")


defs = dg.Definitions(sensors=[run_failure_alert_sensor, run_recovery_alert_sensor])
