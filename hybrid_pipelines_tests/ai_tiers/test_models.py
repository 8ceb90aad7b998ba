"""Model demotion and promotion on the real hot tier (JuiceFS mount), SeaweedFS and
PostgreSQL, with the clock set through run config."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
from boto3.exceptions import S3UploadFailedError

from hybrid_pipelines.ai_tiers import model_promotion, models, tier_copy
from hybrid_pipelines.ai_tiers.model_promotion import promote_model
from hybrid_pipelines.ai_tiers.models import ModelLayout
from hybrid_pipelines.ai_tiers.rules.tier_policy import as_utc
from hybrid_pipelines.defs.ai_tiers.assets import model_locations
from hybrid_pipelines.defs.ai_tiers.jobs import PromotionConfig, model_promotion_job
from hybrid_pipelines.defs.ai_tiers.sensors import model_promotion_requests_sensor
from hybrid_pipelines.resources import JuiceFSResource, PostgresResource

from .conftest import NOW, Space, days_ago, model_row, seed_model

FILES = {"config.json": b'{"layers": 2}', "weights/part-0.safetensors": os.urandom(40_000)}


def _resources(pg: PostgresResource, sp: Space, hot: JuiceFSResource | None = None
               ) -> dict[str, Any]:
    return {"ai_postgres": pg, "object_store": sp.store, "hot_tier": hot or sp.hot}


def _demote(pg: PostgresResource, sp: Space, *, hot: JuiceFSResource | None = None,
            raise_on_error: bool = True, **config: Any) -> dg.ExecuteInProcessResult:
    cfg = {"now": NOW.isoformat(), "hot_prefix": sp.models, "cold_prefix": sp.models, **config}
    return dg.materialize([model_locations], resources=_resources(pg, sp, hot),
                          run_config={"ops": {"model_locations": {"config": cfg}}},
                          raise_on_error=raise_on_error)


def _demote_direct(pg: PostgresResource, sp: Space, **kw: Any) -> models.DemotionReport:
    """The same demotion without Dagster around it (follow-up runs, to keep tests fast)."""
    layout = ModelLayout(hot_prefix=sp.models, cold_prefix=sp.models, **kw)
    with pg.connect(autocommit=True) as conn:
        return models.run_demotion(conn, sp.client(), sp.store.bucket, sp.hot, NOW, 30, None,
                                   layout, log=lambda _msg: None)


def _meta(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    mats = result.asset_materializations_for_node("model_locations")
    return {k: v.value for k, v in mats[-1].metadata.items()}


def _cold_files(sp: Space, model_id: str) -> dict[str, bytes]:
    prefix = f"{sp.models}/{model_id}/"
    return {k[len(prefix):]: v for k, v in sp.keys(f"models/{model_id}/").items()}


def _hot_files(sp: Space, model_id: str) -> dict[str, bytes]:
    return {rel: p.read_bytes()
            for rel, p, *_ in models.hot_files(sp.hot.root(), f"{sp.models}/{model_id}")}


def test_demotion_boundary_days(ai_pg: PostgresResource, space: Space) -> None:
    size = 0
    for days in (29, 30, 31):
        size = seed_model(ai_pg, space, f"m{days}", FILES, days_ago(days))
    meta = _meta(_demote(ai_pg, space))
    assert model_row(ai_pg, "m29")[0] == "hot"
    assert _hot_files(space, "m29") == FILES
    for mid in ("m30", "m31"):
        assert model_row(ai_pg, mid)[0] == "cold"
        assert not space.hot_model_dir(mid).exists()
        assert _cold_files(space, mid) == FILES  # the verified cold copy
    assert meta["models_demoted"] == 2
    assert meta["bytes_freed"] == 2 * size
    assert (meta["hot_models"], meta["hot_tier_bytes"]) == (1, size)
    assert (meta["cold_models"], meta["cold_tier_bytes"]) == (2, 3 * size)
    assert meta["hot_volume_used_bytes"] > 0
    layout = ModelLayout(hot_prefix=space.models)
    with ai_pg.connect() as conn:  # what the hot_models_have_files check reports
        assert models.hot_rows_missing_files(conn, space.hot, layout) == []
        (space.hot_model_dir("m29") / "config.json").unlink()
        (space.hot_model_dir("m29") / "weights/part-0.safetensors").unlink()
        assert models.hot_rows_missing_files(conn, space.hot, layout) == ["m29"]


def test_over_capacity_demotes_least_recently_used(ai_pg: PostgresResource,
                                                   space: Space) -> None:
    size = 0
    for mid, days in (("fresh", 1), ("older", 3), ("oldest", 5)):
        size = seed_model(ai_pg, space, mid, FILES, days_ago(days))
    _demote(ai_pg, space, hot_capacity_bytes=2 * size)
    assert [model_row(ai_pg, m)[0] for m in ("fresh", "older", "oldest")] == \
        ["hot", "hot", "cold"]


def test_missing_cold_copy_blocks_demotion(ai_pg: PostgresResource, space: Space) -> None:
    seed_model(ai_pg, space, "m", FILES, days_ago(45))
    result = _demote(ai_pg, space, upload_missing=False, raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("model_locations")
    text = str(failure.user_failure_data.description)
    assert "model m" in text and "is missing" in text and "Demotion is blocked" in text
    assert model_row(ai_pg, "m")[0] == "hot"
    assert _hot_files(space, "m") == FILES
    # Once the cold copy exists (written by the platform, verified by us), it goes through.
    for rel, body in FILES.items():
        space.put_cold(f"{space.models}/m/{rel}", body,
                       {"sha256": tier_copy.digest_chunks([body]).sha256})
    assert _demote_direct(ai_pg, space, upload_missing=False).bytes_uploaded == 0
    assert model_row(ai_pg, "m")[0] == "cold"


def test_hot_mount_gone_stops_before_anything(ai_pg: PostgresResource, space: Space,
                                              tmp_path: Path) -> None:
    seed_model(ai_pg, space, "m", FILES, days_ago(45))
    not_a_mount = tmp_path / "mnt"
    (not_a_mount / space.models / "m").mkdir(parents=True)  # what a dropped mount looks like
    gone = JuiceFSResource(mount_path=str(not_a_mount), require_mount=True)
    with pytest.raises(Exception, match="JuiceFS hot tier at .*is not mounted"):
        _demote(ai_pg, space, hot=gone)
    assert model_row(ai_pg, "m")[0] == "hot"
    assert _hot_files(space, "m") == FILES
    assert _cold_files(space, "m") == {}


# ---- a failure at each step never deletes the only copy ----------------------------------------

def _corrupting_upload(real):
    # Fault injection: a store that acknowledges an upload but keeps other bytes. A real
    # SeaweedFS cannot be made to do that on demand; verification against it is real.
    def upload(client, bucket, key, path, digest, **kw):
        client.put_object(Bucket=bucket, Key=key, Body=b"X" * digest.size,
                          Metadata={"sha256": digest.sha256})
    return upload


@pytest.mark.fault("ai_tiers: model upload fails half-way -> hot copy kept, next run completes",
                   kind="patched exception")
def test_failure_at_copy_keeps_hot_copy(ai_pg: PostgresResource, space: Space,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    seed_model(ai_pg, space, "m", FILES, days_ago(45))

    def broken_upload(client, bucket, key, path, digest, **kw):
        # Fault injection: the upload dies half-way (a partial object, then the error boto3
        # raises). SeaweedFS cannot be told to fail one PUT on demand; it even creates a
        # missing bucket on PUT.
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes()[: digest.size // 2])
        raise S3UploadFailedError(f"Failed to upload {path} to {bucket}/{key}: injected")

    monkeypatch.setattr(tier_copy, "upload_file", broken_upload)
    with pytest.raises(Exception, match="injected"):
        _demote(ai_pg, space)
    assert model_row(ai_pg, "m")[0] == "hot"
    assert _hot_files(space, "m") == FILES
    monkeypatch.undo()
    _demote_direct(ai_pg, space)  # the next run replaces the partial object and completes
    assert model_row(ai_pg, "m")[0] == "cold" and _cold_files(space, "m") == FILES


@pytest.mark.fault("ai_tiers: cold copy does not verify -> hot copy kept, next run completes",
                   kind="patched exception")
def test_failure_at_verify_keeps_hot_copy(ai_pg: PostgresResource, space: Space,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    seed_model(ai_pg, space, "m", FILES, days_ago(45))
    monkeypatch.setattr(tier_copy, "upload_file", _corrupting_upload(tier_copy.upload_file))
    result = _demote(ai_pg, space, raise_on_error=False)
    text = result.failure_data_for_node("model_locations").user_failure_data.description
    assert "could not verify" in text and "hot copy is kept" in text
    assert model_row(ai_pg, "m")[0] == "hot"
    assert _hot_files(space, "m") == FILES
    monkeypatch.undo()
    _demote_direct(ai_pg, space)  # the next run replaces the bad object and completes
    assert model_row(ai_pg, "m")[0] == "cold" and _cold_files(space, "m") == FILES


@pytest.mark.fault("ai_tiers: row update refused after verified copy -> hot copy kept",
                   kind="state edited")
def test_failure_at_db_update_keeps_hot_copy(ai_pg: PostgresResource, space: Space) -> None:
    seed_model(ai_pg, space, "m", FILES, days_ago(45))
    # A real failure from the real server: a trigger that rejects the row update.
    with ai_pg.connect() as conn:
        conn.execute("""
            CREATE OR REPLACE FUNCTION ai_test_refuse() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION 'injected: update refused'; END $$ LANGUAGE plpgsql;
            CREATE TRIGGER ai_test_refuse BEFORE UPDATE ON model_locations
            FOR EACH ROW WHEN (NEW.model_id = 'm') EXECUTE FUNCTION ai_test_refuse();""")
    try:
        with pytest.raises(Exception, match="injected: update refused"):
            _demote(ai_pg, space)
    finally:
        with ai_pg.connect() as conn:
            conn.execute("DROP TRIGGER ai_test_refuse ON model_locations")
    assert model_row(ai_pg, "m")[0] == "hot"
    assert _hot_files(space, "m") == FILES
    assert _cold_files(space, "m") == FILES  # copied and verified; nothing deleted
    assert _demote_direct(ai_pg, space).bytes_uploaded == 0  # the next run reuses it


@pytest.mark.fault("ai_tiers: hot delete fails after row flip -> leftovers swept after re-verify",
                   kind="patched exception")
def test_failure_at_delete_leaves_leftovers_swept_next_run(
        ai_pg: PostgresResource, space: Space, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_model(ai_pg, space, "m", FILES, days_ago(45))

    def fail_delete(files, *_where):
        # Fault injection: the mount refuses the unlink (EIO). A healthy JuiceFS mount
        # cannot be told to fail one unlink on demand.
        files[0][1].unlink()
        raise OSError(5, "Input/output error", str(files[1][1]))

    monkeypatch.setattr(models, "_remove_hot_files", fail_delete)
    with pytest.raises(Exception, match="Input/output error"):
        _demote(ai_pg, space)
    # The row flipped only after the verified copy; the cold copy holds everything.
    assert model_row(ai_pg, "m")[0] == "cold"
    assert _cold_files(space, "m") == FILES
    assert len(_hot_files(space, "m")) == 1
    monkeypatch.undo()
    assert _demote_direct(ai_pg, space).leftovers_removed == 1
    assert not space.hot_model_dir("m").exists()


@pytest.mark.fault("ai_tiers: model file rewritten mid-demotion -> not deleted",
                   kind="patched exception")
def test_file_rewritten_during_demotion_is_not_deleted(
        ai_pg: PostgresResource, space: Space, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_model(ai_pg, space, "m", FILES, days_ago(45))
    real_verify = tier_copy.verify_object
    target = space.hot_model_dir("m") / "config.json"

    def verify_then_writer(client, bucket, key, expected):
        # Fault injection of timing: a writer rewrites a file right after its copy verified
        # (a real race we cannot schedule on demand).
        how = real_verify(client, bucket, key, expected)
        if key.endswith("config.json") and target.read_bytes() == FILES["config.json"]:
            target.write_bytes(b'{"layers": 3, "rewritten": true}')
        return how

    monkeypatch.setattr(tier_copy, "verify_object", verify_then_writer)
    _demote_direct(ai_pg, space)
    monkeypatch.undo()
    assert model_row(ai_pg, "m")[0] == "cold"
    assert _hot_files(space, "m") == {"config.json": b'{"layers": 3, "rewritten": true}'}
    report = _demote_direct(ai_pg, space)  # the sweep keeps what has no matching cold copy
    assert "leftover" in report.errors["m"] and "kept" in report.errors["m"]
    assert target.exists()


# ---- promotion -------------------------------------------------------------------------------

def _demoted_model(pg: PostgresResource, sp: Space, mid: str = "m") -> int:
    size = seed_model(pg, sp, mid, FILES, days_ago(45))
    _demote_direct(pg, sp)
    assert model_row(pg, mid)[0] == "cold"
    return size


def test_promotion_job_brings_a_model_back(ai_pg: PostgresResource, space: Space) -> None:
    size = _demoted_model(ai_pg, space)
    later = "2025-04-02T10:00:00+00:00"
    result = model_promotion_job.execute_in_process(
        run_config={"ops": {"promote_model": {"config": {
            "model_id": "m", "now": later, "hot_prefix": space.models,
            "cold_prefix": space.models}}}},
        resources=_resources(ai_pg, space))
    tier, row_size, last_access = model_row(ai_pg, "m")
    assert (tier, row_size, as_utc(last_access).isoformat()) == ("hot", size, later)
    assert _hot_files(space, "m") == FILES
    mat = result.asset_materializations_for_node("promote_model")[0]
    assert mat.metadata["bytes_downloaded"].value == size
    assert mat.metadata["hot_models"].value == 1
    assert result.dagster_run.tags["hybrid_pipelines/pool"] == "ai_tiers"


@pytest.mark.fault("ai_tiers: 3 concurrent promotions of one model -> one download",
                   kind="concurrency")
def test_concurrent_promotions_download_once(ai_pg: PostgresResource, space: Space) -> None:
    size = _demoted_model(ai_pg, space)
    layout = ModelLayout(hot_prefix=space.models, cold_prefix=space.models)
    results: list[model_promotion.Promotion] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def promote() -> None:
        try:
            with ai_pg.connect(autocommit=True) as conn:
                barrier.wait()
                results.append(promote_model(conn, space.client(), space.store.bucket,
                                             space.hot, "m", NOW, layout))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=promote) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sum(r.bytes_downloaded for r in results) == size
    assert sorted(r.already_hot for r in results) == [False, True, True]
    assert _hot_files(space, "m") == FILES


def test_promotion_of_a_model_without_cold_objects_fails_clearly(
        ai_pg: PostgresResource, space: Space) -> None:
    seed_model(ai_pg, space, "ghost", FILES, days_ago(1), tier="cold")
    layout = ModelLayout(hot_prefix=space.models, cold_prefix=space.models)
    with ai_pg.connect(autocommit=True) as conn:
        with pytest.raises(models.ModelTierError,
                           match="ghost: the row says cold but the hot tier has no files and s3://"):
            promote_model(conn, space.client(), space.store.bucket, space.hot, "ghost", NOW,
                          layout)
        with pytest.raises(models.ModelTierError, match="not in model_locations"):
            promote_model(conn, space.client(), space.store.bucket, space.hot, "nope", NOW,
                          layout)
        with pytest.raises(models.ModelTierError, match="one path segment"):
            promote_model(conn, space.client(), space.store.bucket, space.hot, "../x", NOW,
                          layout)
    assert model_row(ai_pg, "ghost")[0] == "cold"


def test_promotion_sensor_launches_one_run_per_request(ai_pg: PostgresResource,
                                                      space: Space) -> None:
    with ai_pg.connect() as conn:
        for mid in ("a", "b"):
            conn.execute("INSERT INTO model_promotion_requests (model_id) VALUES (%s)", (mid,))
        conn.execute("INSERT INTO model_promotion_requests (model_id, status) "
                     "VALUES ('done-already', 'done')")
    ctx = dg.build_sensor_context(resources={"ai_postgres": ai_pg, "hot_tier": space.hot},
                                  cursor=None)
    result = model_promotion_requests_sensor(ctx)
    assert [r.run_key for r in result.run_requests] == ["model_promotion_requests-1",
                                                        "model_promotion_requests-2"]
    assert PromotionConfig(**result.run_requests[1].run_config["ops"]["promote_model"]["config"]
                           ) == PromotionConfig(model_id="b", request_id=2)
    assert result.cursor == "2"
    with ai_pg.connect() as conn:
        conn.execute("UPDATE model_promotion_requests SET status = 'done'")
    empty = model_promotion_requests_sensor(dg.build_sensor_context(
        resources={"ai_postgres": ai_pg, "hot_tier": space.hot}, cursor="2"))
    assert not empty.run_requests and "no pending" in empty.skip_reason.skip_message


def test_failed_promotion_marks_its_request(ai_pg: PostgresResource, space: Space) -> None:
    with ai_pg.connect() as conn:
        rid = conn.execute("INSERT INTO model_promotion_requests (model_id) VALUES ('nope') "
                           "RETURNING id").fetchone()[0]
    result = model_promotion_job.execute_in_process(
        run_config={"ops": {"promote_model": {"config": {"model_id": "nope",
                                                          "request_id": rid}}}},
        resources=_resources(ai_pg, space), raise_on_error=False)
    assert not result.success
    with ai_pg.connect() as conn:
        status, detail = conn.execute("SELECT status, detail FROM model_promotion_requests "
                                      "WHERE id = %s", (rid,)).fetchone()
    assert status == "failed" and "not in model_locations" in detail


def test_schema_is_idempotent(ai_pg: PostgresResource) -> None:
    ai_pg.apply_schema("ai_tiers")
    with ai_pg.connect() as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO model_locations (model_id, tier, size_bytes) "
                     "VALUES ('x', 'warm', 0)")
