"""The Dagster wiring: the `backup` job and its monthly schedule, and one real run of the
asset against the test servers with numeric metadata per part; a run whose backup cannot be
verified fails and deletes nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from hybrid_pipelines.backups import engine
from hybrid_pipelines.definitions import defs  # with resources, as deployed
from hybrid_pipelines.defs.backups.assets import BACKUP_TAGS, backups, monthly_backup_schedule
from hybrid_pipelines.resources import JuiceFSResource, ObjectStoreResource
from hybrid_pipelines_tests.backups.conftest import fill_database, put_objects, unique
from hybrid_pipelines_tests.conftest import seaweedfs_resource_for


def test_backup_job_and_monthly_schedule() -> None:
    job = defs.resolve_job_def("backup")
    assert BACKUP_TAGS.items() <= job.tags.items()
    assert monthly_backup_schedule.cron_schedule == "0 5 1 * *"
    assert monthly_backup_schedule.execution_timezone == "UTC"
    when = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
    request = monthly_backup_schedule.evaluate_tick(
        dg.build_schedule_context(scheduled_execution_time=when))
    (run,) = request.run_requests
    assert run.run_config["ops"]["backups"]["config"]["now"] == when.isoformat()


def _resources(db, ai_db, store, seaweed_server, meta_url: str) -> dict:
    return {"postgres": db, "ai_postgres": ai_db, "object_store": store,
            "seaweedfs": seaweedfs_resource_for(seaweed_server),
            "hot_tier": JuiceFSResource(mount_path="/nonexistent", meta_url=meta_url)}


def test_backup_asset_run_reports_every_part(make_database, make_bucket, bucket_name, store,
                                             seaweed_server,
                                             juicefs_volume) -> None:
    db, ai_db = make_database(), make_database()
    fill_database(db)
    cold, outputs = make_bucket("cold"), make_bucket("outputs")
    put_objects(store, cold)
    backup_bucket = bucket_name("backups")
    meta_url, _password = juicefs_volume  # its password: the postgres resource's (same server)
    bound = ObjectStoreResource(endpoint_url=store.endpoint_url, bucket=cold,
                                outputs_bucket=outputs, aws_access_key_id=store.aws_access_key_id,
                                aws_secret_access_key=store.aws_secret_access_key)
    result = dg.materialize(
        [backups], resources=_resources(db, ai_db, bound, seaweed_server, meta_url),
        run_config=dg.RunConfig(ops={"backups": {"config": {
            "backup_bucket": backup_bucket, "now": "2026-12-01T05:00:00+00:00"}}}))
    assert result.success
    (mat,) = result.asset_materializations_for_node("backups")
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["label"] == "2026-12" and meta["verified"] is True
    names = [f"postgres.{db.database}", f"ai_postgres.{ai_db.database}", "juicefs",
             f"bucket:{cold}", f"bucket:{outputs}"]
    for name in names:
        assert meta[f"{name}/verified"] is True, name
        assert isinstance(meta[f"{name}/bytes"], int)
        assert isinstance(meta[f"{name}/duration_s"], float)
    assert meta[f"bucket:{cold}/objects"] == 5 and meta[f"bucket:{outputs}/objects"] == 0
    assert meta["parts"] == 5 and meta["parts_verified"] == 5
    client = store.get_client()
    assert engine.backup_labels(client, backup_bucket) == {"2026-12": True}


def test_backup_run_fails_when_a_bucket_is_missing(make_database, store, seaweed_server,
                                                   bucket_name
                                                   ) -> None:
    db = make_database()
    backup_bucket = bucket_name("backups")
    missing = unique("nosuch")
    with pytest.raises(dg.Failure, match=f"NOT verified.*{missing}.*does not exist"):
        dg.materialize(
            [backups], resources=_resources(db, db, store, seaweed_server, ""),
            run_config=dg.RunConfig(ops={"backups": {"config": {
                "backup_bucket": backup_bucket, "buckets": [missing], "juicefs": False,
                "now": "2026-12-01T05:00:00+00:00"}}}))
    assert engine.backup_labels(store.get_client(), backup_bucket) == {"2026-12": False}
