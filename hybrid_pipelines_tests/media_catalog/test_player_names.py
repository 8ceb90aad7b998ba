"""The default player rule is linear: adversarial names finish, ordinary names give exactly
what the regex gave.

The time guard is a hang detector only (a 1 s alarm per name, where the old regex took 3.4 s
and more); no test asserts how fast anything is."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybrid_pipelines.media_catalog.rules import player_names
from hybrid_pipelines.media_catalog.rules.catalog_paths import (
    DEFAULT_PLAYER_PATTERNS,
    DEFAULT_PLAYER_SEPARATORS,
    CatalogRules,
    find_players,
    place,
)

OLD = re.compile(DEFAULT_PLAYER_PATTERNS[0])

ADVERSARIAL = {
    "the reported name": " " * 60 + "vs" + " " * 180 + "-",
    "spaces both sides": " " * 120 + "vs" + " " * 120 + "-",
    "after a separator": "x - " + " " * 100 + "vs." + " " * 130 + "]",
    "many vs tokens": " vs" * 80 + " -",
    "tabs and nbsp": "\t" * 60 + "VS" + "\u00a0" * 180 + ")",
    "commas": "a vs " + " ," * 120 + " " * 5 + "-",
}


@contextmanager
def hang_guard(seconds: float, what: str) -> Iterator[None]:
    def hung(*_: object) -> None:
        raise TimeoutError(f"{what} still running after {seconds} s: the rule backtracks")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("stem", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_adversarial_names_finish(stem: str) -> None:
    with hang_guard(1.0, f"find_players on {stem[:20]!r}..."):
        players = find_players(stem, CatalogRules())
        # The whole path is cheap too, the name at the NAS's 255-byte limit included.
        place(f"WSOP/S1/{stem[:250]}.mp4")
    assert isinstance(players, tuple)


def test_the_reported_name_has_no_players() -> None:
    stem = ADVERSARIAL["the reported name"]
    assert len(stem.encode()) == 243
    with hang_guard(1.0, "the reported name"):
        assert find_players(stem, CatalogRules()) == ()


def test_default_separators_are_the_documented_regex() -> None:
    assert player_names.DEFAULT_SEPARATORS_RE.pattern == DEFAULT_PLAYER_SEPARATORS


@pytest.mark.parametrize("stem", [
    "Final Table - Phil Ivey vs Tom Dwan (HD)",
    "Ivey vs. Dwan vs Negreanu",
    "결승전 - 홍길동 vs 김철수",
    "Day 3 - phil ivey VS Phil  Ivey",
    "A vs B - C vs D",  # the separator is eaten as the first match's terminator
    "Intro - A vs B - Outro - C vs D [1080p]",
    "A vs B]",
    "x - A vs  (cut)",
    "  vs B",
    "A Vs. B, C & D",
    "A vs\u2003B",
])
def test_same_spans_as_the_regex(stem: str) -> None:
    assert player_names.vs_player_spans(stem) == [m.group("players")
                                                  for m in OLD.finditer(stem)]


# Short names from the characters the rule cares about: the old regex is quick on these, so
# the two can be compared on thousands of them.
_ALPHABET = st.sampled_from(["A", "b", " ", " ", "\t", "-", "–", "—", "[", "]", "(", ")",
                             "vs", "VS", "Vs", "vS", ".", ",", "&", "x", "\n"])


@settings(max_examples=1000, deadline=None)
@given(st.lists(_ALPHABET, max_size=14).map("".join))
def test_matches_the_regex_on_random_short_names(stem: str) -> None:
    assert player_names.vs_player_spans(stem) == [m.group("players")
                                                  for m in OLD.finditer(stem)]
    old = tuple(dict.fromkeys(
        n for m in OLD.finditer(stem)
        for n in (" ".join(x.split()) for x in re.split(DEFAULT_PLAYER_SEPARATORS,
                                                          m.group("players"))) if n))
    new = find_players(stem, CatalogRules())
    # find_players also folds case/spacing duplicates: compare on that key.
    assert [p.casefold() for p in new] == list(dict.fromkeys(p.casefold() for p in old))


def test_an_operators_own_pattern_sees_a_bounded_prefix() -> None:
    rules = CatalogRules.from_mapping({"player_patterns": [r"\[(?P<players>[^\]]+)\]"]})
    tail = " " * 300 + "[Ivey, Dwan]"
    assert find_players("Ep 1 [Ivey, Dwan]", rules) == ("Ivey", "Dwan")
    assert find_players(tail, rules) == ()  # past the first 200 characters: not read
