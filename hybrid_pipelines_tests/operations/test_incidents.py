"""One message per incident (pure): dedupe while it holds, recovery when it clears, a held
condition opens only after its hold time, a digest when 3+ change at once, and the state
survives a JSON round trip (the sensor cursor)."""

from __future__ import annotations

import json

from hybrid_pipelines.operations.rules.incidents import (
    CHANGED,
    OPENED,
    RECOVERED,
    empty_state,
    step,
)
from hybrid_pipelines.operations.rules.messages import group
from hybrid_pipelines.operations.rules.thresholds import CRITICAL, WARNING, Observation

T0 = 1_800_000_000.0


def fire(key: str, sev: str = WARNING, **kw) -> Observation:
    return Observation(key, True, sev, f"title {key}", f"detail {key}", **kw)


def clear(key: str) -> Observation:
    return Observation(key, False, WARNING, "", f"{key} fine")


def roundtrip(state: dict) -> dict:
    return json.loads(json.dumps(state))


def test_dedupe_then_recovery() -> None:
    s, notes = step(empty_state(), [fire("cache.usage")], T0)
    assert [(n.kind, n.key) for n in notes] == [(OPENED, "cache.usage")]
    for i in range(1, 5):  # still firing: silence, tick after tick, cursor after cursor
        s, notes = step(roundtrip(s), [fire("cache.usage")], T0 + 60 * i)
        assert notes == []
    s, notes = step(roundtrip(s), [clear("cache.usage")], T0 + 600)
    [rec] = notes
    assert (rec.kind, rec.since, rec.at) == (RECOVERED, T0, T0 + 600)
    assert s["open"] == {}
    s, notes = step(s, [clear("cache.usage")], T0 + 660)
    assert notes == []


def test_unmeasured_changes_nothing() -> None:
    s, _ = step(empty_state(), [fire("cache.hit_rate")], T0)
    s2, notes = step(s, [Observation("cache.hit_rate", None)], T0 + 60)
    assert notes == [] and s2 == s


def test_severity_change_is_told_once() -> None:
    s, _ = step(empty_state(), [fire("consistency.mismatch", WARNING)], T0)
    s, notes = step(s, [fire("consistency.mismatch", CRITICAL)], T0 + 60)
    assert [(n.kind, n.severity) for n in notes] == [(CHANGED, CRITICAL)]
    s, notes = step(s, [fire("consistency.mismatch", CRITICAL)], T0 + 120)
    assert notes == []


def test_hold_time_from_the_sources_start() -> None:
    """A breaker open for 5 minutes: its opened_at counts, and re-opening (a failed trial
    resets opened_at) does not restart the clock."""
    key = "breaker.nas.open"
    s, notes = step(empty_state(), [fire(key, CRITICAL, hold_s=300, since=T0)], T0 + 200)
    assert notes == [] and s["pending"][key] == T0
    s, notes = step(roundtrip(s), [fire(key, CRITICAL, hold_s=300, since=T0 + 250)], T0 + 299)
    assert notes == []
    s, notes = step(roundtrip(s), [fire(key, CRITICAL, hold_s=300, since=T0 + 250)], T0 + 300)
    assert [(n.kind, n.since) for n in notes] == [(OPENED, T0)]
    # A condition that clears while pending never speaks.
    s, notes = step(empty_state(), [fire("b", hold_s=60)], T0)
    s, notes = step(s, [clear("b")], T0 + 30)
    assert notes == [] and s["pending"] == {}


def test_digest_when_three_fire_at_once() -> None:
    _, notes = step(empty_state(), [fire("a"), fire("b", CRITICAL)], T0)
    assert [m.kind for m in group(notes)] == ["incident", "incident"]
    s, notes = step(empty_state(), [fire("a"), fire("b", CRITICAL), fire("c")], T0)
    [digest] = group(notes)
    assert digest.kind == "digest" and digest.severity == CRITICAL
    assert "3 alert changes: 3 firing, 0 recovered" in digest.subject
    assert digest.text.splitlines()[1].startswith("- ALERT [CRITICAL] title b")
    assert len(digest.items) == 3
    _, notes = step(s, [clear("a"), clear("b"), clear("c")], T0 + 60)
    [back] = group(notes)
    assert back.severity == "info" and "0 firing, 3 recovered" in back.subject


def test_broken_cursor_state_starts_clean() -> None:
    s, notes = step("garbage", [fire("a")], T0)
    assert [n.kind for n in notes] == [OPENED] and "a" in s["open"]
