"""The tiering rules on their boundaries, with an injected clock (no database, no sleep)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from hybrid_pipelines.ai_tiers.rules.tier_policy import (
    ModelState,
    OutputState,
    export_key,
    is_older,
    output_action,
    output_path,
    parse_now,
    select_demotions,
    volume_plan,
)

from .conftest import NOW, days_ago

GB = 2**30


def _model(mid: str, days: float, size: int = GB, tier: str = "hot") -> ModelState:
    return ModelState(mid, tier, size, days_ago(days))


@pytest.mark.parametrize(("days", "demoted"), [(29, False), (29.999, False), (30, True),
                                               (31, True)])
def test_idle_boundary(days: float, demoted: bool) -> None:
    out = select_demotions([_model("m", days)], NOW, idle_days=30)
    assert [d.model_id for d in out] == (["m"] if demoted else [])
    assert all(d.reason == "idle" for d in out)


def test_cold_models_are_never_selected() -> None:
    assert select_demotions([_model("c", 90, tier="cold")], NOW, 30, capacity_bytes=1) == []


def test_over_capacity_demotes_least_recently_used_until_it_fits() -> None:
    models = [_model("new", 1), _model("mid", 5), _model("old", 10), _model("idle", 40)]
    out = select_demotions(models, NOW, idle_days=30, capacity_bytes=2 * GB)
    # idle goes for being idle; 3 GB remain for a 2 GB budget: the oldest of them goes too.
    assert [(d.model_id, d.reason) for d in out] == [("idle", "idle"), ("old", "capacity")]
    assert select_demotions(models, NOW, 30, capacity_bytes=1 * GB)[-1].model_id == "mid"
    assert [d.model_id for d in select_demotions(models, NOW, 30, capacity_bytes=0)] == ["idle"]


def test_capacity_ties_break_on_model_id() -> None:
    models = [_model("b", 3), _model("a", 3)]
    assert [d.model_id for d in select_demotions(models, NOW, 30, GB)] == ["a"]


@pytest.mark.parametrize(("days", "count", "tier", "action"), [
    (6, 0, "hot", None), (7, 0, "hot", "demote"), (8, 4, "hot", "demote"),
    (8, 5, "hot", None), (30, 9, "hot", None),
    (30, 5, "cold", "promote"), (30, 4, "cold", None), (1, 7, "cold", "promote")])
def test_output_actions(days: int, count: int, tier: str, action: str | None) -> None:
    o = OutputState("x", tier, days_ago(days), count)
    assert output_action(o, NOW, hot_days=7, keep_access_count=5) == action


def test_parse_now() -> None:
    assert parse_now("2025-03-31T02:00:00+00:00") == NOW
    assert parse_now("2025-03-31T02:00:00") == NOW  # naive means UTC
    assert parse_now("2025-03-31T04:00:00+02:00") == NOW
    assert parse_now(None, default=NOW) == NOW
    assert abs(parse_now(None) - datetime.now(UTC)) < timedelta(seconds=5)
    with pytest.raises(ValueError, match="not an ISO-8601 timestamp"):
        parse_now("yesterday")


def test_output_paths() -> None:
    oid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert output_path("u1", NOW, oid, ".png") == f"u1/2025/03/31/{oid}.png"
    for bad_user in ("", "a/b", ".."):
        with pytest.raises(ValueError):
            output_path(bad_user, NOW, oid, "png")
    with pytest.raises(ValueError, match="uuid.ext"):
        output_path("u1", NOW, "not-a-uuid", "png")


def test_export_key_is_one_object_per_day_and_run() -> None:
    assert export_key("ns/contexts/", date(2024, 2, 29), "r1") == \
        "ns/contexts/2024/02/29/user-contexts-2024-02-29-r1.jsonl.gz"
    assert export_key("c", date(2024, 2, 29), "r2") != export_key("c", date(2024, 2, 29), "r1")
    with pytest.raises(ValueError, match="cannot be part of an object key"):
        export_key("c", date(2024, 2, 29), "../x")


def test_naive_platform_timestamps_are_utc() -> None:
    # The platform's TIMESTAMP columns come back naive (UTC wall time); before: TypeError
    # "can't compare offset-naive and offset-aware datetimes".
    naive = (NOW - timedelta(days=30)).replace(tzinfo=None)
    assert is_older(naive, NOW, 30) and not is_older(naive + timedelta(seconds=1), NOW, 30)
    models = [ModelState("a", "hot", 5, naive), ModelState("b", "hot", 5, NOW)]
    assert [d.model_id for d in select_demotions(models, NOW, 30)] == ["a"]
    oid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    late = datetime(2025, 3, 31, 23, 30)  # naive: 23:30 UTC, still the 31st
    assert output_path("u1", late, oid, "png") == f"u1/2025/03/31/{oid}.png"


def test_volume_plan_frees_down_to_the_target() -> None:
    assert volume_plan(1000, 900, 90, 80).bytes_to_free == 0  # at the threshold: nothing
    plan = volume_plan(1000, 950, 90, 80)
    assert (plan.used_percent, plan.bytes_to_free) == (95.0, 150)
    for bad in ((1000, 1, 0, 0), (1000, 1, 90, 95), (0, 1, 90, 80), (1000, 1, 101, 80)):
        with pytest.raises(ValueError):
            volume_plan(*bad)


def test_free_bytes_demotes_least_recently_used_first() -> None:
    models = [ModelState(m, "hot", 100, days_ago(d)) for m, d in
              (("new", 1), ("mid", 2), ("old", 3))] + [ModelState("c", "cold", 100, days_ago(9))]
    assert [(d.model_id, d.reason) for d in select_demotions(models, NOW, 30, free_bytes=150)] \
        == [("old", "capacity"), ("mid", "capacity")]
    assert select_demotions(models, NOW, 30, free_bytes=0) == []
