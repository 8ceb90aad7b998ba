"""First use of a model that only the cold bucket holds: a promotion request for a model
without a model_locations row restores it from cold and creates the row (hot, size measured,
last_access now), without clobbering the row the platform's AI backend inserts on its own
first use; a model in neither place fails its request with the reason."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
import pytest

from hybrid_pipelines.ai_tiers import model_promotion
from hybrid_pipelines.ai_tiers.models import ModelLayout
from hybrid_pipelines.ai_tiers.rules.tier_policy import as_utc
from hybrid_pipelines.defs.ai_tiers.jobs import model_promotion_job
from hybrid_pipelines.defs.ai_tiers.sensors import model_promotion_requests_sensor
from hybrid_pipelines.dev.platform_sim.ai_backend import AIBackend
from hybrid_pipelines.resources import PostgresResource

from .conftest import NOW, Space, model_row, platform_running

FILES = {"config.json": b'{"layers": 2}', "unet/weights.bin": os.urandom(30_000)}
SIZE = sum(len(b) for b in FILES.values())


def _publish(sp: Space, model_id: str) -> None:
    """The model as it sits in the cold-models bucket before anyone used it."""
    for rel, body in FILES.items():
        sp.put_cold(f"{sp.models}/{model_id}/{rel}", body)


def _hot_files(sp: Space, model_id: str) -> dict[str, bytes]:
    base = sp.hot_model_dir(model_id)
    return {str(p.relative_to(base)): p.read_bytes() for p in base.rglob("*") if p.is_file()}


def _request(pg: PostgresResource, model_id: str) -> int:
    """What `hybrid-pipelines ai-tiers promote MODEL` inserts."""
    with pg.connect() as conn:
        return int(conn.execute("INSERT INTO model_promotion_requests (model_id) VALUES (%s) "
                                "RETURNING id", (model_id,)).fetchone()[0])


def _run_request(pg: PostgresResource, sp: Space, rid: int) -> dg.ExecuteInProcessResult:
    """The sensor's run for request `rid`, executed on this test's prefixes (the sensor may
    also queue restores of the simulator's own hot rows: not ours to run)."""
    sensor = model_promotion_requests_sensor(dg.build_sensor_context(
        resources={"ai_postgres": pg, "hot_tier": sp.hot}))
    (request,) = [r for r in sensor.run_requests
                  if r.run_key == f"model_promotion_requests-{rid}"]
    cfg = request.run_config["ops"]["promote_model"]["config"]
    return model_promotion_job.execute_in_process(
        run_config={"ops": {"promote_model": {"config": {
            **cfg, "now": NOW.isoformat(), "hot_prefix": sp.models,
            "cold_prefix": sp.models}}}},
        resources={"ai_postgres": pg, "object_store": sp.store, "hot_tier": sp.hot},
        raise_on_error=False)


def _request_status(pg: PostgresResource, rid: int) -> tuple[str, str]:
    with pg.connect() as conn:
        return conn.execute("SELECT status, detail FROM model_promotion_requests WHERE id = %s",
                            (rid,)).fetchone()


def test_request_for_a_model_only_in_the_cold_bucket_restores_it(
        ai_pg: PostgresResource, space: Space) -> None:
    _publish(space, "fresh")
    rid = _request(ai_pg, "fresh")
    # Before: failed with "model 'fresh' is not in model_locations; register it ...".
    with platform_running(ai_pg, model_ids=["other-a", "other-b"], weights={"use_model": 1}):
        result = _run_request(ai_pg, space, rid)
    assert result.success
    tier, size, last_access = model_row(ai_pg, "fresh")
    assert (tier, size, as_utc(last_access)) == ("hot", SIZE, NOW)
    assert _hot_files(space, "fresh") == FILES
    assert _request_status(ai_pg, rid)[0] == "done"


def test_first_use_by_the_platform_during_the_restore(ai_pg: PostgresResource,
                                                      space: Space) -> None:
    # The platform's AI backend keeps using the model while the job restores it.
    _publish(space, "fresh")
    rid = _request(ai_pg, "fresh")
    with platform_running(ai_pg, model_ids=["fresh"], weights={"use_model": 1}):
        result = _run_request(ai_pg, space, rid)
    assert result.success and _request_status(ai_pg, rid)[0] == "done"
    tier, size, last_access = model_row(ai_pg, "fresh")
    assert (tier, size) == ("hot", SIZE) and as_utc(last_access) > NOW  # the platform's use
    assert _hot_files(space, "fresh") == FILES


@pytest.mark.fault("ai_tiers: the platform inserts the model's row (size 0) between the "
                   "promotion's lookup and its insert -> no unique violation, one row: hot, "
                   "measured size, the platform's later last_access and created_at",
                   kind="concurrency")
def test_row_inserted_by_the_platform_mid_restore_is_not_clobbered(
        ai_pg: PostgresResource, space: Space, monkeypatch: pytest.MonkeyPatch) -> None:
    _publish(space, "fresh")
    backend = AIBackend(ai_pg.conninfo())
    real = model_promotion._copy_in

    def platform_first_use_meanwhile(*args: Any, **kw: Any) -> model_promotion.Promotion:
        # The real backend's upsert on its own connection, after our lookup found no row.
        backend.use_model(model_id="fresh")
        return real(*args, **kw)

    monkeypatch.setattr(model_promotion, "_copy_in", platform_first_use_meanwhile)
    layout = ModelLayout(hot_prefix=space.models, cold_prefix=space.models)
    try:
        with ai_pg.connect(autocommit=True) as conn:
            result = model_promotion.promote_model(conn, space.client(), space.store.bucket,
                                                   space.hot, "fresh", NOW, layout)
            platform_created = conn.execute("SELECT created_at FROM model_locations").fetchall()
    finally:
        backend.close()
    assert result.files_downloaded == len(FILES) and len(platform_created) == 1
    tier, size, last_access = model_row(ai_pg, "fresh")
    assert (tier, size) == ("hot", SIZE) and as_utc(last_access) > NOW
    assert as_utc(platform_created[0][0]) > NOW  # the platform's row, updated, not replaced


def test_model_in_neither_place_fails_its_request_with_the_reason(
        ai_pg: PostgresResource, space: Space) -> None:
    rid = _request(ai_pg, "nowhere")
    result = _run_request(ai_pg, space, rid)
    assert not result.success
    status, detail = _request_status(ai_pg, rid)
    assert status == "failed"
    assert "not in model_locations" in detail and "neither place" in detail
    assert f"s3://{space.store.bucket}/{space.models}/nowhere/" in detail
    assert model_row(ai_pg, "nowhere") is None
    assert not space.hot_model_dir("nowhere").exists()
