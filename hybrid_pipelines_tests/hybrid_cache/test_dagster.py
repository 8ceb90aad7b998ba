"""The Dagster side: the domain's real jobs, checks, schedules and sensors, run in process
against the shared servers."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest
from dagster._core.utils import make_new_run_id

from hybrid_pipelines.definitions import domain_definitions
from hybrid_pipelines.defs.hybrid_cache.schedules import pending_sync_schedule
from hybrid_pipelines.defs.hybrid_cache.sensors import cache_health_sensor, cache_usage_sensor
from hybrid_pipelines.hybrid_cache.metadata_store import record_access
from hybrid_pipelines.hybrid_cache.uploads import upload_to_nas

from .conftest import Uploader, hc_definitions, materializations, row, run_job

EVERY_RUN = {"cache_usage_percent", "sync_queue_size", "sync_failure_rate", "seaweed_health",
             "nas_health", "bytes_synced", "files_evicted"}


@pytest.fixture()
def defs(hc_postgres, s3_resource, nas_resource) -> dg.Definitions:
    return hc_definitions(hc_postgres, s3_resource, nas_resource)


def _checks(result: Any) -> dict[str, Any]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_runs_report_numbers_and_alarm_checks_warn(conn, upload: Uploader, defs, prefix) -> None:
    files = [upload(bytes([i]) * 4000, f"m{i}.jpg") for i in range(3)]
    for hit in (True, True, False):  # 2 of 3 reads served by the cache: 66.7% < 70%
        record_access(conn, files[0].id, hit)
    scope = {"key_prefix": f"{prefix}/"}

    stats = run_job(defs, "cache_stats", {"seaweedfs_cache": {**scope, "capacity_bytes": 12_500}})
    meta = materializations(stats)["seaweedfs_cache"]
    assert EVERY_RUN | {"cache_hit_rate"} <= meta.keys()
    assert meta["cache_usage_bytes"] == 12_000 and meta["usage_from_bucket"] == 1
    assert meta["cache_usage_percent"] == pytest.approx(96.0)
    assert meta["cache_hit_rate"] == pytest.approx(2 / 3, abs=1e-3)
    assert meta["sync_queue_size"] == 3 and meta["seaweed_health"] == meta["nas_health"] == 1
    checks = _checks(stats)
    assert "cache_consistency" not in checks  # the heavy audit has its own job
    failing = {name for name, c in checks.items() if not c.passed}
    assert failing == {"cache_usage_ok", "cache_hit_rate_ok"}
    assert {c.severity for c in checks.values()} == {dg.AssetCheckSeverity.WARN}

    synced = materializations(run_job(defs, "pending_sync",
                                      {"nas_replicas": {"retry_delay_s": 0}}))["nas_replicas"]
    assert EVERY_RUN <= synced.keys()
    assert synced["files_synced"] == 3 and synced["bytes_synced"] == 12_000
    assert synced["sync_queue_size"] == 0 and synced["sync_failure_rate"] == 0

    evicted = materializations(run_job(defs, "cache_eviction", {"cache_evictions": {
        **scope, "capacity_bytes": 12_500, "policy": "fifo"}}))["cache_evictions"]
    assert EVERY_RUN <= evicted.keys()
    # 96% -> target 70% of 12500 = 8750 bytes: one 4000-byte file is enough.
    assert evicted["files_evicted"] == 1 and evicted["bytes_evicted"] == 4000
    assert evicted["cache_usage_percent"] == pytest.approx(64.0)
    assert row(conn, files[0].id)["cache_status"] is None  # FIFO: the first upload


def test_eviction_config_errors_name_the_fix(defs, conn, prefix) -> None:
    result = defs.resolve_job_def("cache_eviction").execute_in_process(
        run_config={"ops": {"cache_evictions": {"config": {"threshold": 0.7, "target": 0.8}}}},
        raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("cache_evictions")
    assert failure is not None and "must be below the threshold" in str(failure.error)


def test_audit_job_reports_drift_and_reconcile_job_fixes_it(conn, upload: Uploader, defs, s3,
                                                             s3_resource, prefix) -> None:
    files = [upload(bytes([i]) * 100, f"a{i}.txt") for i in range(4)]
    run_job(defs, "pending_sync", {"nas_replicas": {"retry_delay_s": 0}})
    s3.delete_object(Bucket=s3_resource.bucket, Key=files[0].key)
    audit_cfg = {"key_prefix": f"{prefix}/", "nas_prefix": prefix, "hash_sample": 5}
    audit_run = {"seaweedfs_cache_cache_consistency": audit_cfg}  # the check's op name

    audit = _checks(run_job(defs, "cache_consistency_audit", audit_run))
    check = audit["cache_consistency"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    meta = {k: v.value for k, v in check.metadata.items()}
    assert meta["cache_missing"] == 1 and meta["drift_percent"] == 25.0
    assert meta["data_at_risk"] == 0

    run_job(defs, "cache_reconcile", {"reconcile_cache": audit_cfg})
    assert row(conn, files[0].id)["cache_status"] is None
    audit = _checks(run_job(defs, "cache_consistency_audit", audit_run))
    assert audit["cache_consistency"].passed


def test_jobs_carry_the_pool_tags_the_instance_limits(defs) -> None:
    pools = {name: defs.resolve_job_def(name).tags.get("hybrid_pipelines/pool")
             for name in ("pending_sync", "recache", "cache_eviction", "cache_reconcile")}
    assert pools == {"pending_sync": "nas_sync", "recache": "nas_sync",
                     "cache_eviction": "eviction", "cache_reconcile": "eviction"}
    # The sync runs from a sensor every SYNC_INTERVAL_MS; the schedule is a daily safety net.
    hc = domain_definitions("hybrid_cache")
    schedules = {s.name: s.cron_schedule for s in hc.schedules}
    assert schedules["pending_sync_schedule"] == "5 5 * * *"
    sensors = {s.name: s.minimum_interval_seconds for s in hc.sensors}
    # priority: just under the daemon's 5 s wake, so a tick on every wake (sensor_cadence.py)
    assert sensors["pending_sync_sensor"] == 60 and sensors["priority_sync_sensor"] == 4


def test_pending_sync_schedule_skips_while_a_run_still_waits(upload: Uploader,
                                                             hc_postgres) -> None:
    upload(b"queued")
    pg = {"postgres": hc_postgres}
    with dg.instance_for_test() as instance:
        with dg.build_schedule_context(instance=instance, resources=pg) as ctx:
            first = pending_sync_schedule(ctx)
        assert isinstance(first, dg.RunRequest)
        # A run created but not started yet (queued runs need a code-server origin).
        instance.add_run(dg.DagsterRun(job_name="pending_sync", run_id=make_new_run_id(),
                                       status=dg.DagsterRunStatus.NOT_STARTED))
        with dg.build_schedule_context(instance=instance, resources=pg) as ctx:
            second = pending_sync_schedule(ctx)
        assert isinstance(second, dg.SkipReason) and "still waiting" in second.skip_message


def test_usage_sensor_requests_eviction_when_usage_crosses_the_threshold(
        conn, upload: Uploader, hc_postgres, monkeypatch) -> None:
    for i in range(4):
        upload(bytes([i]) * 1000)
    monkeypatch.setenv("HP_CACHE_CAPACITY_BYTES", "10000")  # 4000 bytes: 40%
    ctx = dg.build_sensor_context(resources={"postgres": hc_postgres})
    assert isinstance(cache_usage_sensor(ctx), dg.SkipReason)
    monkeypatch.setenv("HP_CACHE_CAPACITY_BYTES", "4500")  # 89%: crossed
    ctx = dg.build_sensor_context(resources={"postgres": hc_postgres}, cursor=ctx.cursor)
    request = cache_usage_sensor(ctx)
    assert isinstance(request, dg.RunRequest)
    ctx = dg.build_sensor_context(resources={"postgres": hc_postgres}, cursor=ctx.cursor)
    assert isinstance(cache_usage_sensor(ctx), dg.SkipReason)  # still above, just requested


def test_health_sensor_requests_recache_when_nas_only_files_wait(
        conn, hc_postgres, s3_resource, nas_resource, nas_fs, prefix) -> None:
    resources = {"postgres": hc_postgres, "seaweedfs": s3_resource, "nas": nas_resource}
    # Context managers, as the daemon uses them: the resources own clients torn down after.
    with dg.build_sensor_context(resources=resources) as ctx:
        assert isinstance(cache_health_sensor(ctx), dg.SkipReason)  # nothing waits
    upload_to_nas(conn, nas_fs, "offline.mp4", b"written while SeaweedFS was down",
                  nas_prefix=prefix)
    with dg.build_sensor_context(resources=resources, cursor=ctx.cursor) as ctx:
        request = cache_health_sensor(ctx)
    assert isinstance(request, dg.RunRequest) and "1 files" in request.tags["reason"]
    assert conn.execute("SELECT state FROM backend_circuit ORDER BY backend").fetchall() == [
        ("closed",), ("closed",)]
