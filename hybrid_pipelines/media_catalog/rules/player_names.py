"""The default "A vs B" player rule, in linear time.

The default rule is written as a regex (catalog_paths.DEFAULT_PLAYER_PATTERNS) because that is
the form operators override it in, and because the rules' fingerprint is built from it. Run by
Python's backtracking engine, though, its nested lazy quantifiers over overlapping classes
(`[^-–—\\[\\]()]+?\\s+` can both eat the same spaces) make a name of mostly spaces cost
O(n^4): 3.4 s for the 243 characters `" " * 60 + "vs" + " " * 180 + "-"`. A file name is
attacker-chosen (anyone can create one on the share), so the default runs here instead: the
same matches as `re.finditer` over that regex, found in one pass.

How the regex matches, which this code follows step by step: a match starts at the start of the
name or right after a " - " separator (any whitespace, any of - – —). The players run to the
next - – — [ ] ( ) and must end there in a terminator: the end of the name, a [ or (, or a
whitespace-dash-whitespace separator. Inside, some whitespace, "vs"/"VS"/"Vs" with an optional
dot, whitespace and at least one more character must follow at least one character; trailing
whitespace is left out. The search resumes after the terminator.

Pure functions only: no I/O, no Dagster.
"""

from __future__ import annotations

import re

DASHES = "-–—"
_STOP = frozenset("-–—[]()")
_VS = frozenset({"vs", "VS", "Vs"})
DEFAULT_SEPARATORS_RE = re.compile(r"\s+(?:vs|VS|Vs)\.?\s+|\s*,\s*|\s+&\s+")
_WS_RUN = re.compile(r"\s+")


def _separator_at(stem: str, p: int) -> bool:
    return (p + 2 < len(stem) and stem[p].isspace() and stem[p + 1] in DASHES
            and stem[p + 2].isspace())


def _ws_end(stem: str, i: int, limit: int) -> int:
    while i < limit and stem[i].isspace():
        i += 1
    return i


def _match_at(stem: str, s: int) -> tuple[str, int] | None:
    """(players, end of the match) for a match whose players start at `s`, else None."""
    n = len(stem)
    e = s
    while e < n and stem[e] not in _STOP:
        e += 1
    if e == n:
        limit, end = n, n
    elif stem[e] in "[(":
        limit, end = e, e + 1
    elif stem[e] in DASHES and e - 1 >= s and stem[e - 1].isspace() \
            and e + 1 < n and stem[e + 1].isspace():
        limit, end = e - 1, e + 2
    else:
        return None  # the players would run into a ] ) or an unspaced dash: no terminator
    last = limit
    while last > s and stem[last - 1].isspace():
        last -= 1
    i = s
    while i < limit:
        if not stem[i].isspace():
            i += 1
            continue
        run_end = _ws_end(stem, i, limit)
        # The part before the whitespace needs one character: a run at `s` counts from s+1.
        if max(i, s + 1) < run_end:
            b = run_end
            c = b + 2
            if stem[b:c] in _VS and c <= limit:
                if c < limit and stem[c] == ".":
                    c += 1
                if c < limit and stem[c].isspace():
                    after = _ws_end(stem, c, limit)
                    if after < limit:
                        return stem[s:last], end
                    if after - c >= 2:  # only whitespace left: one space is "the player"
                        return stem[s:limit], end
        i = run_end
    return None


def vs_player_spans(stem: str) -> list[str]:
    """The `players` group of every match `re.finditer(DEFAULT_PLAYER_PATTERNS[0], stem)`
    would give, in order, in time linear in len(stem)."""
    out: list[str] = []
    pos, n = 0, len(stem)
    while pos <= n:
        found: tuple[str, int] | None = None
        for p in range(pos, n + 1):
            starts = ([0] if p == 0 else []) + ([p + 3] if _separator_at(stem, p) else [])
            for s in starts:
                found = _match_at(stem, s)
                if found is not None:
                    break
            if found is not None:
                break
        if found is None:
            break
        out.append(found[0])
        pos = found[1]
    return out


def split_default(players: str) -> list[str]:
    """The default separators (vs, comma, &) applied to one players span. Each whitespace run
    becomes one space first, which changes no name (each is normalised the same way
    afterwards) but keeps `\\s*,\\s*` from rescanning a long run at every position."""
    return DEFAULT_SEPARATORS_RE.split(_WS_RUN.sub(" ", players))
