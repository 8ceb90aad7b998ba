"""Alarms that reach a person: the `alerts` sensor.

Each evaluation (every 60 s) gathers what is alarming from Dagster's own records and the
platform's:
- asset check evaluations failing at ERROR (the instance's event log, read after a cursor);
- the hybrid-cache thresholds: usage, sync queue, failure rate from `seaweedfs_cache`'s last
  recorded numbers; hit rate and average download latency from the file server's access log
  (HP_FILE_SERVER_ACCESS_LOG, read incrementally, last 5 minutes); backend health;
- the consistency design's critical cases: a breaker open 5 minutes and both stores down
  (table backend_circuit, read only), mismatch > 1 % / > 5 % (the audit check's metadata).
It keeps one incident per condition (rules/incidents.py), tells a person once when it opens,
when its severity changes and when it recovers, sends a digest when 3+ change at once, and
retries undelivered messages (dispatch.py). Everything lives in the sensor's JSON cursor, so a
daemon restart neither repeats nor forgets an alert.

The UI shows it: every incident change is an observation of `alert_history`, and the access
log's figures are observations of `file_server_downloads` (both plotted per metadata key).
Run failures are alerted by run_failures.py."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import dagster as dg
import psycopg

from hybrid_pipelines.defs.operations.alert_sources import cache_numbers, scan_checks
from hybrid_pipelines.operations.access_log import ingest
from hybrid_pipelines.operations.circuits import health_from_breakers, read_breakers
from hybrid_pipelines.operations.dispatch import dispatch
from hybrid_pipelines.operations.rules.access_stats import window
from hybrid_pipelines.operations.rules.incidents import step
from hybrid_pipelines.operations.rules.messages import group
from hybrid_pipelines.operations.rules.thresholds import Metrics, evaluate
from hybrid_pipelines.resources.alerting import AlertingResource, alerting_from_env
from hybrid_pipelines.resources.build import RESOURCE_KEYS
from hybrid_pipelines.resources.postgres import PostgresResource

ALERT_HISTORY = dg.AssetKey("alert_history")
DOWNLOADS = dg.AssetKey("file_server_downloads")
CURSOR_VERSION = 1

alert_history = dg.AssetSpec(
    ALERT_HISTORY, group_name="operations",
    description="Every alert incident opened, changed or recovered, and each run-failure "
                "alert: one observation each (metadata: incident, severity, detail, where it "
                "was delivered). Recorded by the alerts_sensor and run_failure_alert_sensor.")
file_server_downloads = dg.AssetSpec(
    DOWNLOADS, group_name="operations",
    description="The file server's downloads over the last 5 minutes, from its JSON access "
                "log (HP_FILE_SERVER_ACCESS_LOG): cache hit rate, average latency, count by "
                "source. Observed by the alerts sensor each minute; feeds the hit-rate and "
                "latency alarms.")


def load_cursor(raw: str | None) -> dict[str, Any]:
    """The sensor's state; an unreadable cursor restarts from scratch instead of failing
    every tick (the incidents re-open, which tells a person once more, not never)."""
    try:
        state = json.loads(raw) if raw else {}
    except ValueError:
        state = {}
    return state if isinstance(state, dict) and state.get("v") == CURSOR_VERSION \
        else {"v": CURSOR_VERSION}


def _breakers(postgres: PostgresResource | None, now: float, log) -> dict:
    if postgres is None:
        return {}
    try:
        with postgres.connect(autocommit=True) as conn:
            return read_breakers(conn, now)
    except psycopg.Error as exc:
        # The breakers are one input among several: the other alarms still go out. A database
        # down is reported by backend_health's ERROR check.
        log.warning(f"backend_circuit not readable on {postgres.address}: {exc}")
        return {}


def _history_event(note: dict[str, Any], open_count: int, delivered: list[str],
                   errors: list[str]) -> dg.AssetObservation:
    return dg.AssetObservation(asset_key=ALERT_HISTORY, metadata={
        "event": note["kind"], "incident": note["key"], "severity": note["severity"],
        "title": note["title"], "detail": dg.MetadataValue.text(note["detail"]),
        "since": dg.MetadataValue.timestamp(note["since"]), "open_incidents": open_count,
        "delivered_to": dg.MetadataValue.text("; ".join(delivered) or "nobody"),
        "delivery_errors": dg.MetadataValue.text("; ".join(errors) or "-"),
    })


def evaluate_alerts(instance: dg.DagsterInstance, cursor: str | None,
                    alerting: AlertingResource, postgres: PostgresResource | None,
                    now: float, log) -> dg.SensorResult:
    state = load_cursor(cursor)
    events: list[dg.AssetObservation] = []

    checks = scan_checks(instance, state.get("checks_after"))
    state["checks_after"] = checks.after
    numbers = cache_numbers(instance, now)
    breakers = _breakers(postgres, now, log)
    metrics = Metrics(usage_percent=numbers.usage_percent, sync_queue=numbers.sync_queue,
                      sync_failure_rate=numbers.sync_failure_rate,
                      healthy=health_from_breakers(breakers) or numbers.healthy,
                      breakers=breakers, mismatch_percent=checks.mismatch_percent)
    if alerting.access_log_path:
        state["access_log"], read = ingest(alerting.access_log_path, state.get("access_log"),
                                           now)
        stats = window(state["access_log"]["buckets"], now)
        metrics = replace(metrics, downloads=stats.downloads, hit_rate=stats.hit_rate,
                          avg_latency_ms=stats.avg_latency_ms)
        if read.bad:
            log.warning(f"{alerting.access_log_path}: {read.bad} malformed lines skipped "
                        f"(first: {read.first_error})")
        events.append(dg.AssetObservation(asset_key=DOWNLOADS, metadata={
            **stats.metadata(), "lines_bad": read.bad, "lines_other": read.other,
            "bytes_read": read.bytes_read, "rotated": int(read.rotated),
            "truncated": int(read.truncated), "log_missing": int(read.missing)}))
        if read.missing:
            log.warning(f"access log {alerting.access_log_path} does not exist (yet); check "
                        f"HP_FILE_SERVER_ACCESS_LOG")

    incidents, notes = step(state.get("incidents"), checks.observations + evaluate(metrics),
                            now)
    state["incidents"] = incidents
    channels = alerting.channels()
    report = dispatch(alerting.send, channels, group(notes, alerting.digest_at),
                      state.get("outbox"), now)
    state["outbox"] = report.outbox
    for err in report.errors:
        log.error(f"alert not delivered, retried next evaluation: {err}")
    if notes and not channels:
        log.warning("alerts fired but no channel is configured (HP_ALERT_WEBHOOK_URLS, "
                    "HP_ALERT_SMTP_HOST): nobody is told; see alert_history")
    for n in notes:
        log.warning(f"alert {n.kind}: [{n.severity}] {n.title}: {n.detail}")
        events.append(_history_event(n.to_json(), len(incidents["open"]), report.delivered,
                                     report.errors))
    return dg.SensorResult(cursor=json.dumps(state, separators=(",", ":")),
                           asset_events=events)


@dg.sensor(name="alerts_sensor", minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Tells a person (webhook, e-mail) when an asset check fails at ERROR, "
                       "a hybrid-cache threshold is crossed or a consistency case turns "
                       "critical: once per incident, again on recovery; a digest when 3+ "
                       "change at once. State in the cursor.")
def alerts_sensor(context: dg.SensorEvaluationContext, alerting: AlertingResource,
                  postgres: PostgresResource) -> dg.SensorResult:
    return evaluate_alerts(context.instance, context.cursor, alerting, postgres, time.time(),
                           context.log)


# build_resources() provides `alerting` once resources/build.py builds it; until then this
# module binds one from HP_ALERT_* itself, so the definitions load either way.
_own = {} if "alerting" in RESOURCE_KEYS else {"alerting": alerting_from_env()}
defs = dg.Definitions(assets=[alert_history, file_server_downloads], sensors=[alerts_sensor],
                      resources=_own)
