"""Quiet when idle (issue #17) and fast priority sync (issue #14): the real sensors evaluated
against the shared PostgreSQL, SeaweedFS and Samba and a real (temporary) Dagster instance.
A run is requested only when there is work, under a run key that repeats while the work is
the same; health and cache numbers are recorded without any run, where the alerts read them."""

from __future__ import annotations

import time

import dagster as dg
import pytest
from dagster._core.utils import make_new_run_id

from hybrid_pipelines.definitions import defs
from hybrid_pipelines.defs.hybrid_cache.audit_sensor import cache_audit_sensor
from hybrid_pipelines.defs.hybrid_cache.schedules import (
    cache_eviction_schedule,
    pending_sync_schedule,
    recache_schedule,
)
from hybrid_pipelines.defs.hybrid_cache.sensors import (
    cache_health_sensor,
    cache_usage_sensor,
    pending_sync_sensor,
    priority_sync_sensor,
)
from hybrid_pipelines.defs.operations.alert_sources import cache_numbers, scan_checks
from hybrid_pipelines.defs.operations.backend_health import backend_health_sensor
from hybrid_pipelines.defs.operations.cache_metrics import cache_stats_sensor
from hybrid_pipelines.defs.run_keys import RUN_KEY_TAG
from hybrid_pipelines.dev.stack.process import LOOPBACK, free_port
from hybrid_pipelines.hybrid_cache import health_gate
from hybrid_pipelines.hybrid_cache.rules.circuit_breaker import BreakerPolicy
from hybrid_pipelines.resources import (
    EFSResource,
    FFprobeResource,
    FirestoreResource,
    JuiceFSResource,
    ObjectStoreResource,
    SQLiteCatalogResource,
)

from .conftest import Uploader, hc_definitions, row

ALARM_CHECKS = {"cache_usage_ok", "sync_queue_ok", "sync_failure_rate_ok", "cache_hit_rate_ok",
                "cache_backends_healthy"}


@pytest.fixture()
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _eval(sensor, instance, resources, cursor=None):
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as ctx:
        result = sensor(ctx)
        return result, ctx.cursor


def _run(defs, instance, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    """Execute a sensor's request as the daemon would launch it: its config and tags."""
    result = defs.resolve_job_def("pending_sync").execute_in_process(
        run_config=request.run_config, instance=instance,
        tags={**request.tags, RUN_KEY_TAG: request.run_key})
    assert result.success
    return result


def test_idle_platform_gets_skip_reasons_and_no_run(conn, hc_postgres, s3_resource,
                                                    nas_resource, instance) -> None:
    pg = {"postgres": hc_postgres}
    for sensor in (pending_sync_sensor, priority_sync_sensor, cache_usage_sensor):
        result, _ = _eval(sensor, instance, pg)
        assert isinstance(result, dg.SkipReason), (sensor.name, result)
    result, _ = _eval(cache_health_sensor, instance,
                      {**pg, "seaweedfs": s3_resource, "nas": nas_resource})
    assert isinstance(result, dg.SkipReason) and "re-cache" in result.skip_message
    # The daily safety nets skip too.
    for schedule in (pending_sync_schedule, recache_schedule, cache_eviction_schedule):
        with dg.build_schedule_context(instance=instance, resources=pg) as ctx:
            assert isinstance(schedule(ctx), dg.SkipReason), schedule.name
    assert instance.get_runs() == []


def test_pending_rows_make_one_request_with_a_stable_key(conn, upload: Uploader, hc_postgres,
                                                         s3_resource, nas_resource,
                                                         instance) -> None:
    pg = {"postgres": hc_postgres}
    first = upload(b"one" * 100, "a.bin")
    upload(b"two" * 100, "b.bin")
    request, cursor = _eval(pending_sync_sensor, instance, pg)
    assert isinstance(request, dg.RunRequest) and request.run_key.startswith("sync:2@")
    again, cursor = _eval(pending_sync_sensor, instance, pg, cursor)
    assert isinstance(again, dg.RunRequest) and again.run_key == request.run_key  # no new run
    upload(b"three" * 100, "c.bin")  # new work: a new key
    third, cursor = _eval(pending_sync_sensor, instance, pg, cursor)
    assert third.run_key != request.run_key and third.run_key.startswith("sync:3@")
    # The settings reach the run as before.
    assert third.run_config["ops"]["nas_replicas"]["config"]["batch_size"] >= 1
    # A pending_sync run in flight takes new rows in its next batch: no second run.
    running = instance.add_run(dg.DagsterRun(job_name="pending_sync", run_id=make_new_run_id(),
                                             status=dg.DagsterRunStatus.STARTED))
    skipped, _ = _eval(pending_sync_sensor, instance, pg, cursor)
    assert isinstance(skipped, dg.SkipReason) and running.run_id in skipped.skip_message
    instance.report_run_canceled(running)
    # The run for this key finished but left the queue as it was (it failed before claiming):
    # the same queue gets a new key, not a queue blocked forever by the daemon's dedup.
    instance.add_run(dg.DagsterRun(job_name="pending_sync", run_id=make_new_run_id(),
                                   status=dg.DagsterRunStatus.FAILURE,
                                   tags={RUN_KEY_TAG: third.run_key}))
    retry, cursor = _eval(pending_sync_sensor, instance, pg, cursor)
    assert retry.run_key != third.run_key and retry.run_key.startswith("sync:3@")
    # Executing the request syncs the queue; the next tick is quiet again.
    _run(hc_definitions(hc_postgres, s3_resource, nas_resource), instance, retry)
    assert row(conn, first.id)["nas_status"] == "synced"
    quiet, _ = _eval(pending_sync_sensor, instance, pg, cursor)
    assert isinstance(quiet, dg.SkipReason) and "no file waits" in quiet.skip_message


def test_high_priority_row_is_requested_and_reaches_the_nas_first(
        conn, upload: Uploader, hc_postgres, s3_resource, nas_resource, instance) -> None:
    pg = {"postgres": hc_postgres}
    normal = upload(b"normal" * 50, "normal.bin")
    skipped, cursor = _eval(priority_sync_sensor, instance, pg)
    assert isinstance(skipped, dg.SkipReason) and "high-priority" in skipped.skip_message
    important = upload(b"important" * 50, "contract.pdf", priority=1)
    request, cursor = _eval(priority_sync_sensor, instance, pg, cursor)
    assert isinstance(request, dg.RunRequest) and request.run_key.startswith("priority:1@")
    cfg = request.run_config["ops"]["nas_replicas"]["config"]
    assert (cfg["batch_size"], cfg["max_batches"]) == (1, 1)  # exactly the high rows
    assert request.run_config["execution"] == {"config": {"in_process": {}}}  # no step process
    dg.validate_run_config(hc_definitions(hc_postgres, s3_resource, nas_resource)
                           .resolve_job_def("pending_sync"), request.run_config)
    # A run about to start claims high priority first: no second request meanwhile.
    waiting = instance.add_run(dg.DagsterRun(job_name="pending_sync", run_id=make_new_run_id(),
                                             status=dg.DagsterRunStatus.NOT_STARTED))
    held, _ = _eval(priority_sync_sensor, instance, pg, cursor)
    assert isinstance(held, dg.SkipReason) and waiting.run_id in held.skip_message
    instance.report_run_canceled(waiting)
    _run(hc_definitions(hc_postgres, s3_resource, nas_resource), instance, request)
    got = row(conn, important.id)
    assert got["nas_status"] == "synced" and got["nas_verified_at"] is not None
    # How soon, with a daemon: bench/priority_sync.py (tests assert no timings).
    assert row(conn, normal.id)["nas_status"] == "pending"  # left to pending_sync_sensor
    quiet, _ = _eval(priority_sync_sensor, instance, pg, cursor)
    assert isinstance(quiet, dg.SkipReason)


def test_usage_sensor_requests_eviction_only_above_the_threshold(
        conn, upload: Uploader, hc_postgres, instance, monkeypatch) -> None:
    for i in range(4):
        upload(bytes([i]) * 1000)
    monkeypatch.setenv("HP_CACHE_CAPACITY_BYTES", "5000")  # 4000 bytes: 80%, not above
    skipped, cursor = _eval(cache_usage_sensor, instance, {"postgres": hc_postgres})
    assert isinstance(skipped, dg.SkipReason) and "at or below" in skipped.skip_message
    monkeypatch.setenv("HP_CACHE_CAPACITY_BYTES", "4900")  # 81.6%
    request, cursor = _eval(cache_usage_sensor, instance, {"postgres": hc_postgres}, cursor)
    assert isinstance(request, dg.RunRequest) and request.run_key.startswith("usage-")
    with dg.build_schedule_context(instance=instance,
                                   resources={"postgres": hc_postgres}) as ctx:
        assert isinstance(cache_eviction_schedule(ctx), dg.RunRequest)  # the safety net too


def _events(result: dg.SensorResult):
    assert isinstance(result, dg.SensorResult) and not result.run_requests
    obs = [e for e in result.asset_events if isinstance(e, dg.AssetObservation)]
    checks = {e.check_name: e for e in result.asset_events
              if isinstance(e, dg.AssetCheckEvaluation)}
    return obs, checks


def test_cache_stats_sensor_records_the_numbers_the_alerts_read_without_a_run(
        conn, upload: Uploader, hc_postgres, s3_resource, nas_resource, instance,
        monkeypatch) -> None:
    for i in range(3):
        upload(bytes([i]) * 1000, f"f{i}.bin")
    monkeypatch.setenv("HP_CACHE_CAPACITY_BYTES", "1000")  # far above 90%: the alarm fails
    result, _ = _eval(cache_stats_sensor, instance, {"postgres": hc_postgres,
                                                    "seaweedfs": s3_resource,
                                                    "nas": nas_resource})
    obs, checks = _events(result)
    assert [o.asset_key for o in obs] == [dg.AssetKey("seaweedfs_cache")]
    meta = {k: v.value for k, v in obs[0].metadata.items()}
    assert {"cache_usage_percent", "sync_queue_size", "sync_failure_rate", "seaweed_health",
            "nas_health", "bytes_synced", "files_evicted", "cache_capacity_bytes"} <= set(meta)
    assert meta["sync_queue_size"] == 3 and meta["usage_from_bucket"] == 1
    assert set(checks) == ALARM_CHECKS
    assert not checks["cache_usage_ok"].passed and checks["cache_backends_healthy"].passed
    # What the daemon does with the events; the alerts sensor then sees the numbers.
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    numbers = cache_numbers(instance, time.time())
    assert numbers.sync_queue == 3 and numbers.usage_percent == meta["cache_usage_percent"]
    assert numbers.healthy == {"seaweedfs": True, "nas": True}
    assert instance.get_runs() == []


def test_backend_health_sensor_records_checks_that_alert_without_a_run(
        hc_postgres, s3_resource, nas_resource, instance, tmp_path) -> None:
    (tmp_path / "efs").mkdir()
    resources = {
        "nas": nas_resource, "seaweedfs": s3_resource, "postgres": hc_postgres,
        "ai_postgres": hc_postgres, "ffprobe": FFprobeResource(),
        # Nothing listens on these ports: the object store and Firestore are down.
        "object_store": ObjectStoreResource(endpoint_url=f"http://{LOOPBACK}:{free_port()}",
                                            connect_timeout_s=1, max_attempts=1),
        "firestore": FirestoreResource(emulator_host=f"{LOOPBACK}:{free_port()}", timeout_s=1),
        "hot_tier": JuiceFSResource(mount_path=str(tmp_path / "efs")),
        "efs": EFSResource(mount_path=str(tmp_path / "efs")),
        "sqlite_catalog": SQLiteCatalogResource(path=str(tmp_path / "c.db"))}
    result, _ = _eval(backend_health_sensor, instance, resources)
    obs, checks = _events(result)
    meta = {k: v.value for k, v in obs[0].metadata.items()}
    assert obs[0].asset_key == dg.AssetKey("backend_health")
    assert meta["postgres_ok"] == 1 and meta["seaweedfs_ok"] == 1 and meta["nas_ok"] == 1
    assert meta["object_store_ok"] == 0 and "object_store_latency_ms" in meta
    assert len(checks) == 10 and checks["postgres_healthy"].passed
    down = checks["object_store_healthy"]
    assert not down.passed and down.severity == dg.AssetCheckSeverity.ERROR
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    failing = {o.key for o in scan_checks(instance, None).observations if o.firing}
    assert "check.backend_health.object_store_healthy" in failing
    assert "check.backend_health.postgres_healthy" not in failing
    assert instance.get_runs() == []


def test_sync_sensors_skip_while_a_backend_breaker_is_open(
        conn, upload: Uploader, hc_postgres, instance) -> None:
    """The NAS's breaker as cache_health_sensor leaves it after three failed probes: no run
    is requested each minute only to find the NAS down again; when it closes, the queue is."""
    pg = {"postgres": hc_postgres}
    upload(b"waits" * 100, "w.bin", priority=1)
    with hc_postgres.connect(autocommit=True) as c:
        for _ in range(3):
            health_gate.record(c, health_gate.NAS, False, "connection refused",
                               BreakerPolicy())
    try:
        for sensor in (pending_sync_sensor, priority_sync_sensor):
            held, _ = _eval(sensor, instance, pg)
            assert isinstance(held, dg.SkipReason), sensor.name
            assert "nas: circuit open" in held.skip_message
            assert "connection refused" in held.skip_message
    finally:
        with hc_postgres.connect(autocommit=True) as c:
            health_gate.record(c, health_gate.NAS, True, "", BreakerPolicy())
    for sensor in (pending_sync_sensor, priority_sync_sensor):
        request, _ = _eval(sensor, instance, pg)
        assert isinstance(request, dg.RunRequest), sensor.name
    assert instance.get_runs() == []


def test_audit_sensor_requests_the_audit_only_after_a_change_or_a_day(
        conn, upload: Uploader, hc_postgres, instance, monkeypatch) -> None:
    pg = {"postgres": hc_postgres}
    first, cursor = _eval(cache_audit_sensor, instance, pg)
    assert isinstance(first, dg.RunRequest) and first.tags["reason"] == "first audit"
    dg.validate_run_config(defs.resolve_job_def("cache_consistency_audit"), first.run_config)
    quiet, cursor = _eval(cache_audit_sensor, instance, pg, cursor)
    assert isinstance(quiet, dg.SkipReason) and "unchanged" in quiet.skip_message
    upload(b"new" * 10, "n.bin")
    changed, cursor = _eval(cache_audit_sensor, instance, pg, cursor)
    assert isinstance(changed, dg.RunRequest) and "changed" in changed.tags["reason"]
    assert changed.run_key != first.run_key
    quiet, cursor = _eval(cache_audit_sensor, instance, pg, cursor)
    assert isinstance(quiet, dg.SkipReason)
    later = time.time() + 86400 + 1  # a day on: drift outside the metadata is looked for
    monkeypatch.setattr("hybrid_pipelines.defs.hybrid_cache.audit_sensor.time.time",
                        lambda: later)
    daily, _ = _eval(cache_audit_sensor, instance, pg, cursor)
    assert isinstance(daily, dg.RunRequest) and "no audit for 24 h" in daily.tags["reason"]
