"""The sensors against a real Dagster instance and real receivers: a failed run is told with
its job, step, error line and link; check failures, thresholds and breakers open incidents
once, recover once, go out as a digest when 3+ change together, and the state carries over a
fresh sensor context fed the previous cursor (a daemon restart)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from hybrid_pipelines.defs.operations.alerts import (
    ALERT_HISTORY,
    DOWNLOADS,
    alerts_sensor,
    evaluate_alerts,
)
from hybrid_pipelines.defs.operations.alerts import defs as alert_defs
from hybrid_pipelines.defs.operations.run_failures import defs as run_failure_defs
from hybrid_pipelines.defs.operations.run_failures import (
    run_failure_alert_sensor,
    run_recovery_alert_sensor,
)
from hybrid_pipelines.hybrid_cache.health_gate import record
from hybrid_pipelines.hybrid_cache.rules.circuit_breaker import BreakerPolicy
from hybrid_pipelines_tests.operations.conftest import alerting_for


@dg.op(config_schema={"fail": dg.Field(bool, default_value=True)})
def copy_to_nas(context) -> None:  # no hint: `from __future__ import annotations`
    if context.op_config["fail"]:
        raise ValueError("disk full on /mnt/nas\nsecond line of the message")


@dg.job
def nightly_copy() -> None:
    copy_to_nas()


def _status_tick(instance, result, sensor, event_type, alerting) -> None:
    """Evaluate a run-status sensor for `result`'s run, as the daemon would."""
    run = instance.get_run_by_id(result.run_id)
    event = next(e for e in result.all_events if e.event_type == event_type)
    ctx = dg.build_run_status_sensor_context(
        sensor_name=sensor.name, dagster_event=event, dagster_instance=instance,
        dagster_run=run, resources={"alerting": alerting})
    sensor(ctx.for_run_failure() if event_type == dg.DagsterEventType.RUN_FAILURE else ctx)


def _copy(instance, fail: bool):
    return nightly_copy.execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={"ops": {"copy_to_nas": {"config": {"fail": fail}}}})


def test_run_failure_is_told_once_with_job_step_error_and_link(http_receiver, mailbox) -> None:
    instance = dg.DagsterInstance.ephemeral()
    alerting = alerting_for(http_receiver, mailbox, ui_url="http://dagster.example:3000/")
    failed = _copy(instance, fail=True)
    assert not failed.success
    _status_tick(instance, failed, run_failure_alert_sensor, dg.DagsterEventType.RUN_FAILURE,
                 alerting)

    [text] = [b["text"] for b in http_receiver.bodies()]
    assert "job nightly_copy" in text and "step: copy_to_nas" in text
    assert "error: ValueError: disk full on /mnt/nas" in text
    assert "second line" not in text
    assert f"run: http://dagster.example:3000/runs/{failed.run_id}" in text
    [mail] = mailbox.messages()
    assert mail["Subject"] == "[hybrid-pipelines] Run failed: nightly_copy"
    [obs] = instance.fetch_observations(ALERT_HISTORY, limit=5).records
    meta = obs.asset_observation.metadata
    assert meta["event"].value == "run_failure"
    assert meta["run"].value.endswith(failed.run_id)

    # The job fails again: the same incident, recorded, not sent again.
    again = _copy(instance, fail=True)
    _status_tick(instance, again, run_failure_alert_sensor, dg.DagsterEventType.RUN_FAILURE,
                 alerting)
    assert len(http_receiver.requests) == 1 and len(mailbox.mails) == 1
    newest = instance.fetch_observations(ALERT_HISTORY, limit=1).records[0]
    assert newest.asset_observation.metadata["event"].value == "run_failed_again"

    # It succeeds: one recovery message; a further success says nothing.
    ok = _copy(instance, fail=False)
    assert ok.success
    _status_tick(instance, ok, run_recovery_alert_sensor, dg.DagsterEventType.RUN_SUCCESS,
                 alerting)
    [back] = [b["text"] for b in http_receiver.bodies()[1:]]
    assert back.startswith("RECOVERED job nightly_copy") and "after 2 failed runs" in back
    assert f"/runs/{ok.run_id}" in back
    ok2 = _copy(instance, fail=False)
    _status_tick(instance, ok2, run_recovery_alert_sensor, dg.DagsterEventType.RUN_SUCCESS,
                 alerting)
    assert len(http_receiver.requests) == 2 and len(mailbox.mails) == 2


def _check_asset(passed: bool):
    @dg.asset(name="media_index", check_specs=[dg.AssetCheckSpec("rows_ok", asset="media_index")])
    def media_index():
        yield dg.MaterializeResult()
        yield dg.AssetCheckResult(check_name="rows_ok", passed=passed,
                                  description="2 rows lost" if not passed else "fine")
    return media_index


def _cache_numbers(instance: dg.DagsterInstance, usage: float) -> None:
    """The numbers as seaweedfs_cache records them (metadata keys of its materialization)."""
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "seaweedfs_cache", metadata={"cache_usage_percent": usage, "sync_queue_size": 12,
                                     "sync_failure_rate": 0.0, "seaweed_health": 1,
                                     "nas_health": 1}))


def _downloads(log: Path, n: int, hit_every: int) -> None:
    now = time.time()
    with log.open("a") as fh:
        for i in range(n):
            ts = datetime.fromtimestamp(now - 30 + i * 0.1, UTC).isoformat()
            fh.write(json.dumps({"timestamp": ts, "level": "info", "service": "file-server",
                                 "action": "download", "fileId": f"f{i}", "source": "nas",
                                 "latencyMs": 80, "cacheHit": i % hit_every == 0}) + "\n")


def _tick(instance, cursor, alerting, postgres) -> dg.SensorResult:
    """One evaluation in a fresh context (as after a daemon restart), fed `cursor`."""
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor,
                                  resources={"alerting": alerting, "postgres": postgres})
    result = alerts_sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    return result


def test_incidents_dedupe_digest_and_recover(http_receiver, mailbox, ops_postgres, ops_conn,
                                             tmp_path: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    log = tmp_path / "access.log"
    _downloads(log, 30, 2)  # 50 % hits: below 70 %
    dg.materialize([_check_asset(False)], instance=instance)
    _cache_numbers(instance, 95.0)
    alerting = alerting_for(http_receiver, mailbox, access_log_path=str(log))

    first = _tick(instance, None, alerting, ops_postgres)
    [digest] = http_receiver.bodies()
    assert "3 alert changes: 3 firing" in digest["text"]
    for words in ("Check rows_ok on media_index failing (ERROR): 2 rows lost",
                  "Cache nearly full: cache usage 95.0%", "Cache hit rate low: hit rate 50.0%"):
        assert words in digest["text"]
    assert len(mailbox.mails) == 1
    kinds = [(e.asset_key, e.metadata.get("event")) for e in first.asset_events]
    assert (DOWNLOADS, None) in kinds
    assert sum(k == ALERT_HISTORY for k, _ in kinds) == 3
    seen = next(e for e in first.asset_events if e.asset_key == DOWNLOADS).metadata
    assert seen["downloads"].value == 30 and seen["cache_hit_rate"].value == 0.5

    # Still firing, new tick, fresh context, previous cursor: nobody is told again.
    second = _tick(instance, first.cursor, alerting, ops_postgres)
    assert len(http_receiver.requests) == 1 and len(mailbox.mails) == 1
    assert not [e for e in second.asset_events if e.asset_key == ALERT_HISTORY]

    # The check passes and usage falls: two recoveries, one message each (below the digest).
    dg.materialize([_check_asset(True)], instance=instance)
    _cache_numbers(instance, 40.0)
    third = _tick(instance, second.cursor, alerting, ops_postgres)
    texts = [b["text"] for b in http_receiver.bodies()[1:]]
    assert len(texts) == 2 and all(t.startswith("RECOVERED") for t in texts)
    assert any("Cache nearly full" in t for t in texts)
    assert len(mailbox.mails) == 3
    assert json.loads(third.cursor)["incidents"]["open"].keys() == {"cache.hit_rate"}


def test_breakers_open_five_minutes_and_both_stores_down(http_receiver, ops_postgres,
                                                          ops_conn) -> None:
    """The breakers as the cache jobs write them (health_gate.record): both opened 400 s ago."""
    now = time.time()
    policy = BreakerPolicy()
    for backend in ("seaweedfs", "nas"):
        for _ in range(policy.failure_threshold):
            record(ops_conn, backend, False, f"{backend} timed out", policy,
                   clock=lambda: now - 400)
    instance = dg.DagsterInstance.ephemeral()
    alerting = alerting_for(http_receiver)
    log = dg.get_dagster_logger()

    r1 = evaluate_alerts(instance, None, alerting, ops_postgres, now, log)
    texts = [b["text"] for b in http_receiver.bodies()]
    assert len(texts) == 2  # the two breakers; "unhealthy" and "both down" still held
    assert all("[CRITICAL]" in t and "circuit breaker open" in t for t in texts)
    r2 = evaluate_alerts(instance, r1.cursor, alerting, ops_postgres, now + 61, log)
    [digest] = [b["text"] for b in http_receiver.bodies()[2:]]
    assert "Both stores down" in digest and "3 alert changes" in digest

    for backend in ("seaweedfs", "nas"):
        record(ops_conn, backend, True, "", policy)
    evaluate_alerts(instance, r2.cursor, alerting, ops_postgres, now + 120, log)
    [back] = [b["text"] for b in http_receiver.bodies()[3:]]
    assert "0 firing, 5 recovered" in back


@pytest.mark.fault("webhook server stopped -> the alert waits in the outbox and is delivered "
                   "once, when it is back", kind="server stopped")
def test_stopped_webhook_gets_the_alert_when_back(http_receiver, mailbox, ops_postgres,
                                                  ops_conn) -> None:
    instance = dg.DagsterInstance.ephemeral()
    _cache_numbers(instance, 99.0)
    alerting = alerting_for(http_receiver, mailbox)
    http_receiver.stop()
    first = _tick(instance, None, alerting, ops_postgres)
    [waiting] = json.loads(first.cursor)["outbox"]
    assert waiting["channel"].startswith("webhook1") and len(mailbox.mails) == 1
    second = _tick(instance, first.cursor, alerting, ops_postgres)  # still down: kept
    assert json.loads(second.cursor)["outbox"][0]["tries"] == 2
    http_receiver.start()
    third = _tick(instance, second.cursor, alerting, ops_postgres)
    assert json.loads(third.cursor)["outbox"] == []
    assert [b["text"].split(":")[0] for b in http_receiver.bodies()] == [
        "ALERT [WARNING] Cache nearly full"]
    assert len(mailbox.mails) == 1  # the e-mail went once, at the first tick


@pytest.mark.fault("sensor cursor edited to garbage -> alerting restarts clean, the open "
                   "condition is told once more (not never)", kind="state edited")
def test_garbage_cursor_restarts_clean(http_receiver, ops_postgres, ops_conn) -> None:
    instance = dg.DagsterInstance.ephemeral()
    _cache_numbers(instance, 99.0)
    alerting = alerting_for(http_receiver)
    result = _tick(instance, "{not json", alerting, ops_postgres)
    assert json.loads(result.cursor)["incidents"]["open"].keys() == {"cache.usage"}
    assert len(http_receiver.requests) == 1


def test_the_alerting_definitions_load(http_receiver, ops_postgres) -> None:
    defs = dg.Definitions(
        assets=alert_defs.assets, sensors=[*alert_defs.sensors, *run_failure_defs.sensors],
        resources={"alerting": alerting_for(http_receiver), "postgres": ops_postgres})
    dg.Definitions.validate_loadable(defs)
    assert {s.name for s in defs.sensors} == {"alerts_sensor", "run_failure_alert_sensor",
                                              "run_recovery_alert_sensor"}
    # As the defs folder has them (alerting bound from HP_ALERT_* until build.py builds it).
    folder = dg.Definitions.merge(alert_defs, run_failure_defs,
                                  dg.Definitions(resources={"postgres": ops_postgres}))
    dg.Definitions.validate_loadable(folder)


@pytest.mark.fault("PostgreSQL down (breakers unreadable) -> the other alarms still go out",
                   kind="server stopped")
def test_database_down_still_alerts_on_the_rest(http_receiver, ops_postgres) -> None:
    from hybrid_pipelines.dev.stack.process import free_port

    gone = ops_postgres.model_copy(update={"port": free_port()})  # nothing listens there
    instance = dg.DagsterInstance.ephemeral()
    _cache_numbers(instance, 99.0)
    result = _tick(instance, None, alerting_for(http_receiver), gone)
    assert [b["text"].split(":")[0] for b in http_receiver.bodies()] == [
        "ALERT [WARNING] Cache nearly full"]
    assert "breaker" not in result.cursor
