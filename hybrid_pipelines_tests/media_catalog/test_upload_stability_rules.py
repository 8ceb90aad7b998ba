"""The pending sensor's decisions (rules/upload_stability.py): which pending files are due
for their second look, and what a fresh listing of their directories means."""

from __future__ import annotations

from hybrid_pipelines.media_catalog.rules.scan_diff import Observed, StabilityRule
from hybrid_pipelines.media_catalog.rules.upload_stability import (
    PendingFile,
    dirs_to_list,
    judge,
    parse_seen,
    split_due,
)

RULE = StabilityRule(min_stable_s=30.0, quiet_s=600.0)
T0 = 1_000_000.0


def _f(path: str, size: int = 10, mtime: float = T0 - 5, seen_at: float = T0,
       pk: str = "Show") -> PendingFile:
    return PendingFile(pk, path, size, mtime, seen_at)


def test_nothing_is_due_before_min_stable_s_and_the_next_due_time_is_known() -> None:
    a, b = _f("Show/a.mp4", seen_at=T0), _f("Show/b.mp4", seen_at=T0 + 10)
    due, later = split_due([a, b], T0 + 29, RULE)
    assert (due, later) == ([], T0 + 30)
    due, later = split_due([a, b], T0 + 30, RULE)
    assert (due, later) == ([a], T0 + 40)


def test_one_listing_per_directory() -> None:
    files = [_f("Show/S1/a.mp4"), _f("Show/S1/b.mp4"), _f("Show/S2/c.mp4"), _f("top.mp4")]
    assert dirs_to_list(files) == ["", "Show/S1", "Show/S2"]


def test_unchanged_file_is_confirmed_and_changed_one_waits_until_it_settles() -> None:
    done, growing = _f("Show/S1/done.mp4"), _f("Show/S1/growing.mp4", size=10)
    listed = {"Show/S1": {"Show/S1/done.mp4": Observed("Show/S1/done.mp4", 10, T0 - 5),
                          "Show/S1/growing.mp4": Observed("Show/S1/growing.mp4", 99, T0 + 20)}}
    first = judge([done, growing], listed, {}, T0 + 31, RULE)
    assert dict(first.confirmed) == {"Show": ["Show/S1/done.mp4"]}
    assert first.moving == ["Show/S1/growing.mp4"] and not first.settled
    assert first.seen == {"Show/S1/growing.mp4": (99, T0 + 20)}
    # The next look sees the same size and mtime: the upload settled, a run records it.
    second = judge([growing], listed, first.seen, T0 + 36, RULE)
    assert dict(second.settled) == {"Show": ["Show/S1/growing.mp4"]}
    assert second.partitions() == ["Show"]
    # It moved again in between: keep waiting.
    moved = {"Show/S1": {"Show/S1/growing.mp4": Observed("Show/S1/growing.mp4", 150, T0 + 35)}}
    third = judge([growing], moved, first.seen, T0 + 36, RULE)
    assert not third.settled and third.moving == ["Show/S1/growing.mp4"]


def test_a_deleted_file_or_folder_settles_on_the_second_look_too() -> None:
    gone = _f("Show/S1/gone.mp4")
    first = judge([gone], {"Show/S1": None}, {}, T0 + 31, RULE)
    assert first.seen == {"Show/S1/gone.mp4": None} and not first.partitions()
    second = judge([gone], {"Show/S1": {}}, first.seen, T0 + 36, RULE)
    assert dict(second.settled) == {"Show": ["Show/S1/gone.mp4"]}


def test_run_key_part_is_stable_for_one_state_and_differs_between_states() -> None:
    f = _f("Show/a.mp4")
    listed = {"Show": {"Show/a.mp4": Observed("Show/a.mp4", 10, T0 - 5)}}
    one = judge([f], listed, {}, T0 + 31, RULE)
    two = judge([f], listed, {}, T0 + 45, RULE)
    assert one.fingerprint("Show") == two.fingerprint("Show")
    other = judge([_f("Show/b.mp4")], {"Show": {"Show/b.mp4": Observed("Show/b.mp4", 10,
                                                                         T0 - 5)}},
                  {}, T0 + 31, RULE)
    assert other.fingerprint("Show") != one.fingerprint("Show")
    # The same path written again later (the scan recorded it anew): a new run key.
    rewritten = _f("Show/a.mp4", seen_at=T0 + 100)
    later = judge([rewritten], listed, {}, T0 + 131, RULE)
    assert later.confirmed and later.fingerprint("Show") != one.fingerprint("Show")


def test_a_broken_cursor_reads_as_no_previous_look() -> None:
    assert parse_seen(None) == {} and parse_seen(["x"]) == {}
    assert parse_seen({"a": [1, 2.5], "b": None, "c": "junk", "d": ["x", 1]}) == \
        {"a": (1, 2.5), "b": None}


def test_a_new_file_in_a_listed_directory_is_reported_but_not_an_ignored_one() -> None:
    due = _f("Show/S1/a.mp4")
    listed = {"Show/S1": {p: Observed(p, 5, T0) for p in
                          ("Show/S1/a.mp4", "Show/S1/b.mp4", "Show/S1/old.mp4",
                           "Show/S1/c.mp4.part")}}
    known = {"Show/S1": {"Show/S1/a.mp4", "Show/S1/old.mp4"}}
    got = judge([due], listed, {}, T0 + 31, RULE, known, lambda p: p.endswith(".part"))
    assert dict(got.new) == {"Show": ["Show/S1/b.mp4"]}
    assert got.partitions() == ["Show"] and "file 'Show/S1/b.mp4' new" in got.reasons("Show")
    # Without the catalog's paths nothing counts as new (the caller did not ask).
    assert not judge([due], listed, {}, T0 + 31, RULE).new


def test_an_unchanged_file_is_confirmed_ahead_within_the_lead() -> None:
    """With a lead, the run is requested before the second look is due (its launch overlaps
    the wait) and the scan takes that look when due; a file that moved is not confirmed."""
    a, moved = _f("Show/S1/a.mp4", seen_at=T0), _f("Show/S1/b.mp4", seen_at=T0)
    assert split_due([a], T0 + 19, RULE, lead_s=10) == ([], T0 + 20)
    due, _ = split_due([a, moved], T0 + 20, RULE, lead_s=10)
    assert due == [a, moved]
    listed = {"Show/S1": {"Show/S1/a.mp4": Observed("Show/S1/a.mp4", 10, T0 - 5),
                          "Show/S1/b.mp4": Observed("Show/S1/b.mp4", 11, T0 + 15)}}
    v = judge(due, listed, {}, T0 + 20, RULE, lead_s=10)
    assert v.confirmed == {"Show": ["Show/S1/a.mp4"]}
    assert v.ahead == {"Show": {"Show/S1/a.mp4": (10, T0 - 5, T0)}}
    assert v.moving == ["Show/S1/b.mp4"]
    # Without the lead the same look is too early: looked at again later.
    v = judge(due, listed, {}, T0 + 20, RULE)
    assert not v.confirmed and v.still == ["Show/S1/a.mp4"]
