"""First looks, the run's second look and change notifications (rules/first_look.py,
rules/notify_events.py): pure functions, milliseconds."""

from __future__ import annotations

import pytest

from hybrid_pipelines.media_catalog.rules.first_look import (
    FORGET_VOUCHED_S,
    Look,
    apply_vouch,
    dump_looks,
    fingerprint,
    forget_old,
    observe,
    parse_looks,
    split_due_looks,
    wait_before_scan,
)
from hybrid_pipelines.media_catalog.rules.notify_events import (
    covers,
    parent_dirs,
    to_catalog_dirs,
    top_folder,
)
from hybrid_pipelines.media_catalog.rules.scan_diff import (
    CONFIRMED,
    GROWING,
    NEW,
    PENDING,
    STABLE,
    Known,
    Observed,
    StabilityRule,
    decide_file,
)
from hybrid_pipelines.media_catalog.settings import CatalogSettings, SettingsError

RULE = StabilityRule(min_stable_s=30.0, quiet_s=600.0)
T = 1_000_000.0
D = "r/Show/S1"


def obs(name: str, size: int = 10, mtime: float = T - 5) -> Observed:
    return Observed(f"{D}/{name}", size, mtime)


def listed(*files: Observed) -> dict:
    return {D: {f.path: f for f in files}}


def test_a_new_file_gets_its_first_look_and_keeps_it_while_unchanged() -> None:
    first = observe(listed(obs("a.mp4")), {}, {}, {}, T)
    assert first == {f"{D}/a.mp4": Look(10, T - 5, T)}
    again = observe(listed(obs("a.mp4")), {}, first, {}, T + 10)
    assert again[f"{D}/a.mp4"].at == T  # unchanged: the clock runs from the first look
    moved = observe(listed(obs("a.mp4", size=20)), {}, again, {}, T + 20)
    assert moved[f"{D}/a.mp4"] == Look(20, T - 5, T + 20)  # it grew: starts over
    gone = observe({D: {}}, {}, moved, {}, T + 30)
    assert gone == {}


def test_files_the_catalog_holds_as_they_are_or_as_pending_are_not_tracked() -> None:
    a, b, c = obs("a.mp4"), obs("b.mp4"), obs("c.mp4")
    rows = {D: {a.path: Known(a.path, 10, T - 5, "valid", T - 99),
                b.path: Known(b.path, 10, T - 5, PENDING, T - 3),
                c.path: Known(c.path, 9, T - 50, "valid", T - 99)}}  # rewritten since
    first = observe(listed(a, b, c), rows, {}, {}, T)
    assert set(first) == {c.path}


def test_ignored_vouched_and_unlisted_directories() -> None:
    a, part = obs("a.mp4"), obs("a.mp4.part")
    vouched = {a.path: Look(10, T - 5, T - 40)}
    first = observe(listed(a, part), {}, {}, vouched, T, ignored=lambda p: p.endswith(".part"))
    assert first == {}  # handed to a run already, and a partial download
    other = {"r/Show/S2/x.mp4": Look(1, 2.0, T - 3)}
    assert observe(listed(), {}, other, {}, T) == other  # its directory was not listed


def test_a_run_is_due_lead_seconds_before_the_second_look() -> None:
    first = {"a": Look(10, T - 5, T - 15), "b": Look(10, T - 5, T - 25)}
    due, nxt = split_due_looks(first, T, RULE, lead_s=10)
    assert list(due) == ["b"] and nxt == T - 15 + 30 - 10
    quiet = {"old": Look(10, T - 3600, T)}  # copied with its old mtime: stable at sight
    assert list(split_due_looks(quiet, T, RULE, lead_s=0)[0]) == ["old"]


def test_the_run_waits_until_the_second_look_is_due_never_longer_than_allowed() -> None:
    looks = [Look(1, 1.0, T - 25), Look(1, 1.0, T - 28)]
    assert wait_before_scan(looks, T, RULE, max_wait_s=20) == 5
    assert wait_before_scan([Look(1, 1.0, T)], T, RULE, max_wait_s=20) == 20
    assert wait_before_scan([Look(1, 1.0, T - 60)], T, RULE, max_wait_s=20) == 0
    assert wait_before_scan([], T, RULE, max_wait_s=20) == 0


def test_the_scan_accepts_a_vouched_file_only_unchanged_and_old_enough() -> None:
    o = obs("a.mp4")
    look = Look(10, T - 5, T - 31)
    new = decide_file(None, o, T, RULE)
    assert new.status == PENDING
    got = apply_vouch(new, look, T, RULE)
    assert (got.kind, got.status, got.seen_at) == (NEW, STABLE, T - 31)
    # Changed since the sensor looked: the scan's own decision stands.
    assert apply_vouch(new, Look(9, T - 5, T - 31), T, RULE) is new
    assert apply_vouch(new, Look(10, T - 4, T - 31), T, RULE) is new
    # Not min_stable_s since the first look: two looks too close together. Still pending,
    # but from the first look, which saw this very state: due at T - 29 + 30, not T + 30.
    early = apply_vouch(new, Look(10, T - 5, T - 29), T, RULE)
    assert (early.kind, early.status, early.seen_at) == (NEW, PENDING, T - 29)
    # ... never later than the scan's own clock, nor for a file the scan did not write.
    assert apply_vouch(new, Look(10, T - 5, T + 1), T, RULE) is new
    same = decide_file(Known(o.path, 10, T - 5, PENDING, T - 10), o, T, RULE)
    assert apply_vouch(same, Look(10, T - 5, T - 20), T, RULE) is same
    # Pending in the catalog since a later scan: confirmed by the earlier first look.
    k = Known(o.path, 10, T - 5, PENDING, T - 10)
    got = apply_vouch(decide_file(k, o, T, RULE), look, T, RULE)
    assert (got.kind, got.status, got.seen_at) == (CONFIRMED, STABLE, T - 31)
    grown = Known(o.path, 5, T - 6, PENDING, T - 40)
    got = apply_vouch(decide_file(grown, o, T, RULE), look, T, RULE)
    assert (got.kind, got.status) == (GROWING, STABLE)
    valid = Known(o.path, 10, T - 5, "valid", T - 99)
    d = decide_file(valid, o, T, RULE)
    assert apply_vouch(d, look, T, RULE) is d  # nothing to do for a file already probed
    assert apply_vouch(new, None, T, RULE) is new


def test_looks_round_trip_and_bad_cursors_start_over() -> None:
    looks = {"a": Look(10, 1.5, T), "b": Look(0, 2.25, T + 1)}
    assert parse_looks(dump_looks(looks)) == looks
    assert parse_looks("junk") == {} and parse_looks({"a": [1, 2]}) == {}
    assert parse_looks({"a": ["x", 1, 2], "b": [1, 2, 3]}) == {"b": Look(1, 2.0, 3.0)}
    assert fingerprint(looks) == fingerprint(dict(reversed(list(looks.items()))))
    assert fingerprint(looks) != fingerprint({"a": Look(10, 1.5, T)})
    old = {"a": Look(1, 1.0, T - FORGET_VOUCHED_S - 1), "b": Look(1, 1.0, T - 1)}
    assert list(forget_old(old, T)) == ["b"]


def test_notified_names_become_catalog_directories() -> None:
    names = {"Show/S1/E1.mp4", "Show/S2", "loose.mp4", "/"}
    assert parent_dirs(names) == {"Show/S1", "Show", ""}
    assert to_catalog_dirs({"Show/S1", ""}, "root") == {"root/Show/S1", "root"}
    assert to_catalog_dirs({"Show/S1"}, "") == {"Show/S1"}
    assert top_folder("root/Show/S1", "root") == "Show"
    assert top_folder("root/Show", "root") == "Show"
    assert top_folder("root", "root") is None and top_folder("other/x", "root") is None
    assert top_folder("Show/S1", "") == "Show" and top_folder("", "") is None
    assert covers({"root/Show/S1"}, "root/Show/S1") and covers({"root/Show/S1"}, "root/Show")
    assert not covers({"root/Show/S1"}, "root/Show/S2")
    assert not covers({"root/Showcase/S1"}, "root/Show")


def test_change_notify_switch_reads_on_off_and_names_a_bad_value() -> None:
    assert CatalogSettings.from_env({}).change_notify is True
    assert CatalogSettings.from_env({"HP_CATALOG_CHANGE_NOTIFY": "0"}).change_notify is False
    assert CatalogSettings.from_env({"HP_CATALOG_CHANGE_NOTIFY": " on "}).change_notify is True
    with pytest.raises(SettingsError, match="HP_CATALOG_CHANGE_NOTIFY='maybe'"):
        CatalogSettings.from_env({"HP_CATALOG_CHANGE_NOTIFY": "maybe"})
