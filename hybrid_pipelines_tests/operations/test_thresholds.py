"""The designs' thresholds at their boundaries (pure): strictly above / below alarms, the
limit itself does not; unmeasured values never decide anything."""

from __future__ import annotations

import pytest

from hybrid_pipelines.operations.rules.thresholds import (
    CRITICAL,
    WARNING,
    Breaker,
    Metrics,
    Observation,
    evaluate,
)


def by_key(m: Metrics) -> dict[str, Observation]:
    return {o.key: o for o in evaluate(m)}


@pytest.mark.parametrize(("field", "key", "ok", "bad"), [
    ("usage_percent", "cache.usage", 90.0, 90.01),
    ("sync_queue", "cache.sync_queue", 1000, 1001),
    ("sync_failure_rate", "cache.sync_failure_rate", 0.05, 0.0501),
])
def test_above_limits(field: str, key: str, ok: float, bad: float) -> None:
    assert by_key(Metrics(**{field: ok}))[key].firing is False
    assert by_key(Metrics(**{field: bad}))[key].firing is True
    assert by_key(Metrics())[key].firing is None


def test_hit_rate_below_seventy_percent() -> None:
    assert by_key(Metrics(downloads=100, hit_rate=0.70))["cache.hit_rate"].firing is False
    low = by_key(Metrics(downloads=100, hit_rate=0.6999))["cache.hit_rate"]
    assert low.firing is True and "70%" in low.detail


def test_latency_above_500_ms() -> None:
    assert by_key(Metrics(downloads=20, avg_latency_ms=500.0))[
        "cache.download_latency"].firing is False
    assert by_key(Metrics(downloads=20, avg_latency_ms=500.1))[
        "cache.download_latency"].firing is True


def test_too_few_downloads_measure_nothing() -> None:
    """Two misses are not a 0 % hit rate worth waking someone for."""
    obs = by_key(Metrics(downloads=19, hit_rate=0.0, avg_latency_ms=9000.0))
    assert obs["cache.hit_rate"].firing is None
    assert obs["cache.download_latency"].firing is None


@pytest.mark.parametrize(("pct", "firing", "severity"), [
    (1.0, False, WARNING), (1.01, True, WARNING), (5.0, True, WARNING),
    (5.01, True, CRITICAL)])
def test_mismatch_warning_and_critical(pct: float, firing: bool, severity: str) -> None:
    ob = by_key(Metrics(mismatch_percent=pct))["consistency.mismatch"]
    assert (ob.firing, ob.severity) == (firing, severity)


def test_breaker_open_is_critical_after_five_minutes_hold() -> None:
    ob = by_key(Metrics(breakers={"nas": Breaker("open", 3, 1000.0, "timeout")}))[
        "breaker.nas.open"]
    assert (ob.firing, ob.severity, ob.hold_s, ob.since) == (True, CRITICAL, 300.0, 1000.0)
    assert "timeout" in ob.detail
    half = by_key(Metrics(breakers={"nas": Breaker("half_open", 3, 1000.0)}))[
        "breaker.nas.open"]
    assert half.firing is True
    closed = by_key(Metrics(breakers={"nas": Breaker("closed", 0, None)}))["breaker.nas.open"]
    assert closed.firing is False


def test_both_stores_down_and_one_unhealthy() -> None:
    both = by_key(Metrics(healthy={"seaweedfs": False, "nas": False}))
    assert both["stores.both_down"].firing is True
    assert both["stores.both_down"].severity == CRITICAL
    assert both["backend.nas.unhealthy"].firing is True
    one = by_key(Metrics(healthy={"seaweedfs": True, "nas": False}))
    assert one["stores.both_down"].firing is False
    assert one["backend.seaweedfs.unhealthy"].firing is False
    assert one["backend.nas.unhealthy"].firing is True
    assert "stores.both_down" not in by_key(Metrics(healthy={"nas": False}))
