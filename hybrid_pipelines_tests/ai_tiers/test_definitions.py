"""The domain's Dagster wiring: lineage, schedules (cadence and clock config), run tags."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from hybrid_pipelines.definitions import defs  # with resources, as deployed
from hybrid_pipelines.defs.ai_tiers import schedules

POOL = {"hybrid_pipelines/pool": "ai_tiers"}


def test_assets_and_lineage() -> None:
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"model_locations", "user_contexts", "user_contexts_archive", "user_context_exports",
            "generated_outputs", "efs_models"} <= keys
    archive = graph.get(dg.AssetKey("user_contexts_archive"))
    assert archive.parent_keys == {dg.AssetKey("user_contexts")}
    exports = graph.get(dg.AssetKey("user_context_exports"))
    assert exports.parent_keys == {dg.AssetKey("user_contexts_archive")}
    copies = graph.get(dg.AssetKey("generated_output_cold_copies"))
    assert copies.parent_keys == {dg.AssetKey("generated_outputs")}


@pytest.mark.parametrize(("schedule", "cron", "ops"), [
    (schedules.model_demotion_schedule, "0 2 * * *", ["model_locations"]),
    (schedules.context_archive_schedule, "0 3 * * *",
     ["user_contexts_archive", "user_context_exports"]),
    (schedules.generated_outputs_schedule, "0 4 * * *", ["generated_outputs"]),
])
def test_daily_schedules_pass_their_time_as_now(schedule: dg.ScheduleDefinition, cron: str,
                                                ops: list[str]) -> None:
    assert schedule.cron_schedule == cron and schedule.execution_timezone == "UTC"
    when = datetime(2025, 3, 31, int(cron.split()[1]), 0, tzinfo=UTC)
    request = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=when))
    (run,) = request.run_requests
    assert sorted(run.run_config["ops"]) == sorted(ops)
    for op in ops:
        assert run.run_config["ops"][op]["config"]["now"] == when.isoformat()


def test_every_job_runs_in_the_ai_tiers_pool() -> None:
    names = ["model_demotion_job", "context_archive_job", "generated_outputs_job",
             "efs_model_sync_job", "model_promotion_job", "context_reactivation_job",
             "output_deletion_job", "output_cold_copy_job"]
    for name in names:
        job = defs.resolve_job_def(name)
        assert POOL.items() <= job.tags.items(), name


def test_demotion_schedule_passes_hot_volume_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HP_HOT_TIER_THRESHOLD_PERCENT", "85")
    monkeypatch.setenv("HP_HOT_TIER_CAPACITY_BYTES", "1000000")
    when = datetime(2025, 3, 31, 2, 0, tzinfo=UTC)
    request = schedules.model_demotion_schedule.evaluate_tick(
        dg.build_schedule_context(scheduled_execution_time=when))
    (run,) = request.run_requests
    cfg = run.run_config["ops"]["model_locations"]["config"]
    assert (cfg["hot_volume_threshold_percent"], cfg["hot_volume_capacity_bytes"]) == \
        (85.0, 1000000)
    assert cfg["hot_volume_target_percent"] == 80.0
    with pytest.raises(ValueError, match="HP_HOT_TIER_TARGET_PERCENT='lots' is not a number"):
        schedules.hot_volume_settings({"HP_HOT_TIER_TARGET_PERCENT": "lots"})
