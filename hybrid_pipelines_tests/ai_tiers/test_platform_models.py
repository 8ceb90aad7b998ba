"""Model demotion and promotion on `model_locations` created verbatim from the platform's DDL,
with the AI backend simulator (dev/platform_sim/ai_backend.py) using models the whole time:
rows it writes have naive TIMESTAMPs, new rows size_bytes 0, and it flips a cold row to hot
on first use while the files are still cold."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
import pytest

from hybrid_pipelines.ai_tiers import models
from hybrid_pipelines.ai_tiers.models import ModelLayout
from hybrid_pipelines.ai_tiers.rules.tier_policy import as_utc
from hybrid_pipelines.defs.ai_tiers.assets import model_locations
from hybrid_pipelines.defs.ai_tiers.checks import hot_models_have_files
from hybrid_pipelines.defs.ai_tiers.jobs import model_promotion_job
from hybrid_pipelines.defs.ai_tiers.sensors import (
    model_promotion_requests_sensor,
    queue_restores,
)
from hybrid_pipelines.dev.platform_sim.ai_backend import AIBackend
from hybrid_pipelines.resources import PostgresResource

from .conftest import NOW, Space, days_ago, model_row, platform_running, seed_model

FILES = {"config.json": b'{"layers": 2}', "weights.bin": os.urandom(20_000)}


def _demote(pg: PostgresResource, sp: Space, **config: Any) -> dg.ExecuteInProcessResult:
    cfg = {"now": NOW.isoformat(), "hot_prefix": sp.models, "cold_prefix": sp.models, **config}
    return dg.materialize([model_locations], resources={
        "ai_postgres": pg, "object_store": sp.store, "hot_tier": sp.hot},
        run_config={"ops": {"model_locations": {"config": cfg}}})


def _meta(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    mats = result.asset_materializations_for_node("model_locations")
    return {k: v.value for k, v in mats[-1].metadata.items()}


def _rows(pg: PostgresResource) -> dict[str, tuple[Any, ...]]:
    with pg.connect() as conn:
        return {r[0]: r[1:] for r in conn.execute(
            "SELECT model_id, tier, size_bytes, last_access FROM model_locations")}


def test_demotion_job_while_the_platform_uses_models(ai_pg: PostgresResource,
                                                     space: Space) -> None:
    # Before: `can't compare offset-naive and offset-aware datetimes` on the platform's rows.
    seed_model(ai_pg, space, "idle", FILES, days_ago(45))
    seed_model(ai_pg, space, "busy", FILES, days_ago(45))  # idle by its row, but in use now
    with platform_running(ai_pg, model_ids=["busy", "newcomer"],
                          weights={"use_model": 1}) as writer:
        writer.use_model(model_id="busy")  # at least one use before the job looks
        writer.use_model(model_id="newcomer")
        result = _demote(ai_pg, space)
    rows = _rows(ai_pg)
    assert rows["idle"][0] == "cold" and not space.hot_model_dir("idle").exists()
    assert rows["busy"][0] == "hot" and space.hot_model_dir("busy").is_dir()
    assert rows["newcomer"][:2] == ("hot", 0)  # the platform's new row, untouched
    assert as_utc(rows["busy"][2]) > NOW  # the platform's last_access kept
    assert _meta(result)["models_demoted"] == 1


@pytest.mark.fault("ai_tiers: the platform uses a model while its demotion copies it -> row "
                   "stays hot with the platform's last_access, hot files kept",
                   kind="concurrency")
def test_use_during_demotion_keeps_the_model_hot(ai_pg: PostgresResource, space: Space,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    seed_model(ai_pg, space, "m", FILES, days_ago(45))
    backend = AIBackend(ai_pg.conninfo())
    real = models._ensure_cold_copy

    def copy_then_platform_uses_it(*args: Any, **kw: Any) -> bool:
        # The real backend's upsert, on its own connection, between our copy and our flip.
        backend.use_model(model_id="m")
        return real(*args, **kw)

    monkeypatch.setattr(models, "_ensure_cold_copy", copy_then_platform_uses_it)
    layout = ModelLayout(hot_prefix=space.models, cold_prefix=space.models)
    try:
        with ai_pg.connect(autocommit=True) as conn:
            report = models.run_demotion(conn, space.client(), space.store.bucket, space.hot,
                                         NOW, 30, None, layout, log=lambda _m: None)
    finally:
        backend.close()
    tier, _size, last_access = model_row(ai_pg, "m")
    assert tier == "hot" and as_utc(last_access) > NOW
    assert "used by the platform" in report.skipped["m"]
    assert {p.name for p in space.hot_model_dir("m").iterdir()} == set(FILES)


def test_platform_flip_to_hot_is_restored_not_reported_missing(ai_pg: PostgresResource,
                                                               space: Space) -> None:
    seed_model(ai_pg, space, "m", FILES, days_ago(45))
    _demote(ai_pg, space)
    assert model_row(ai_pg, "m")[0] == "cold" and not space.hot_model_dir("m").exists()
    backend = AIBackend(ai_pg.conninfo())
    backend.use_model(model_id="m")  # first use: the row says hot, the files are cold
    backend.close()
    layout = ModelLayout(hot_prefix=space.models, cold_prefix=space.models)
    # The sensor's restore scan, on this test's prefix (the sensor itself scans `models/`).
    assert queue_restores(ai_pg, space.hot, layout) == 1
    assert queue_restores(ai_pg, space.hot, layout) == 0  # one pending request is enough
    ctx = dg.build_sensor_context(resources={"ai_postgres": ai_pg, "hot_tier": space.hot})
    first = model_promotion_requests_sensor(ctx)
    check = hot_models_have_files(ai_postgres=ai_pg, hot_tier=space.hot)
    (request,) = first.run_requests
    assert check.passed and check.metadata["hot_models_being_restored"].value == 1
    cfg = request.run_config["ops"]["promote_model"]["config"]
    with platform_running(ai_pg, model_ids=["m"], weights={"use_model": 1}):
        model_promotion_job.execute_in_process(
            run_config={"ops": {"promote_model": {"config": {
                **cfg, "hot_prefix": space.models, "cold_prefix": space.models}}}},
            resources={"ai_postgres": ai_pg, "object_store": space.store,
                       "hot_tier": space.hot})
    tier, size, _ = model_row(ai_pg, "m")
    assert (tier, size) == ("hot", sum(len(b) for b in FILES.values()))
    assert {p.name: p.read_bytes() for p in space.hot_model_dir("m").iterdir()} == FILES
    with ai_pg.connect() as conn:
        assert conn.execute("SELECT status FROM model_promotion_requests").fetchall() == \
            [("done",)]


def test_demotion_of_a_flipped_row_without_hot_files_tells_the_truth(
        ai_pg: PostgresResource, space: Space) -> None:
    seed_model(ai_pg, space, "m", FILES, days_ago(45))
    _demote(ai_pg, space)
    with ai_pg.connect() as conn:  # the platform flipped it long ago and nobody used it since
        conn.execute("UPDATE model_locations SET tier = 'hot', last_access = %s", (days_ago(40),))
    result = _demote(ai_pg, space)
    assert model_row(ai_pg, "m")[0] == "cold"
    assert _meta(result)["models_demoted"] == 1


def test_full_hot_volume_demotes_least_recently_used(ai_pg: PostgresResource,
                                                     space: Space) -> None:
    # statvfs of the JuiceFS mount reports the volume's real usage but a size nobody can
    # shrink in a test: the capacity comes from config, the usage is the real one.
    big = {"weights.bin": os.urandom(2_000_000)}
    for i, mid in enumerate(("oldest", "older", "recent")):
        seed_model(ai_pg, space, mid, big, days_ago(3 - i))
    _total, used = models.hot_volume_usage(space.hot)
    assert used > 0
    capacity = int((used - 3_000_000) / 0.8)  # needs 1.5 models freed to be at 80%
    result = _demote(ai_pg, space, hot_volume_threshold_percent=80.0,
                     hot_volume_target_percent=80.0, hot_volume_capacity_bytes=capacity)
    rows = _rows(ai_pg)
    assert [rows[m][0] for m in ("oldest", "older", "recent")] == ["cold", "cold", "hot"]
    meta = _meta(result)
    assert meta["setting_hot_volume_threshold_percent"] == 80.0
    assert meta["setting_hot_volume_capacity_bytes"] == capacity
    assert meta["setting_hot_volume_capacity_source"] == "config"
    assert meta["hot_volume_bytes_to_free"] > 3_000_000
    assert meta["hot_volume_used_percent"] > 80.0


def test_hot_volume_below_threshold_demotes_nothing(ai_pg: PostgresResource,
                                                    space: Space) -> None:
    seed_model(ai_pg, space, "m", FILES, days_ago(3))
    meta = _meta(_demote(ai_pg, space))  # defaults: 90% of what statvfs reports
    assert model_row(ai_pg, "m")[0] == "hot"
    assert meta["setting_hot_volume_capacity_source"] == "statvfs"
    assert meta["setting_hot_volume_threshold_percent"] == 90.0
    assert meta["hot_volume_bytes_to_free"] == 0
