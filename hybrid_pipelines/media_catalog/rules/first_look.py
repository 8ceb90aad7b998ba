"""First looks taken by the pending sensor, and the run that takes the second look.

With change notifications the pending sensor lists a directory within a tick of an upload
touching it; that listing is the file's first look (it used to be the scan of a run the NAS
sensor requested up to 60 s later). The sensor keeps its first looks in its cursor. When
one is due (`min_stable_s` after it, less `lead_s` so the run is launched in time), the
sensor requests one run and passes the first look to it (run config); the run's scan waits
until the look is `min_stable_s` old, lists the directory itself and accepts the file as
stable only when size and mtime are still those of the first look. The stability rule is
unchanged: two looks, at least `min_stable_s` apart, the same size and mtime. A file that
changed in between is recorded pending as always and goes through the second look anew.

Pure functions only: no I/O, no Dagster."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from hybrid_pipelines.media_catalog.rules.scan_diff import (
    CONFIRMED,
    DELETED,
    PENDING,
    STABLE,
    UNCHANGED,
    FileDecision,
    Known,
    Observed,
    StabilityRule,
)

FORGET_VOUCHED_S = 600.0  # how long the cursor remembers what it handed to a run


@dataclass(frozen=True)
class Look:
    """A file's size and mtime, and when this state was first seen."""

    size: int
    mtime: float
    at: float

    def same(self, obs: Observed) -> bool:
        return int(self.size) == int(obs.size) and float(self.mtime) == float(obs.mtime)

    def as_list(self) -> list[float]:
        return [self.size, self.mtime, self.at]


def dir_of(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def observe(listed: Mapping[str, Mapping[str, Observed] | None],
            catalog: Mapping[str, Mapping[str, Known]], first: Mapping[str, Look],
            vouched: Mapping[str, Look], now: float,
            ignored: Callable[[str], bool] = lambda p: False) -> dict[str, Look]:
    """The first looks after listing `listed` (directory -> files, None: gone).
    A file is tracked when the catalog does not hold it in this state and it is not pending
    there (pending rows have their own clock: upload_stability); a tracked file that moved
    starts over; one that is gone is dropped. Directories not listed keep their entries."""
    out = {p: v for p, v in first.items() if dir_of(p) not in listed}
    for d, entries in listed.items():
        if entries is None:
            continue
        rows = catalog.get(d, {})
        for path, obs in entries.items():
            if ignored(path):
                continue
            prev = first.get(path)
            if prev is not None:
                out[path] = prev if prev.same(obs) else Look(obs.size, obs.mtime, now)
                continue
            known = rows.get(path)
            if known is not None and known.status != DELETED and (
                    known.status == PENDING
                    or (int(known.size) == int(obs.size) and known.mtime == obs.mtime)):
                continue
            v = vouched.get(path)
            if v is not None and v.same(obs):
                continue  # handed to a run already; its scan records it
            out[path] = Look(obs.size, obs.mtime, now)
    return out


def due_at(look: Look, rule: StabilityRule, now: float, lead_s: float) -> float:
    """When to request the run: `lead_s` before the second look is due, at once for a file
    the rule takes as stable at first sight (its mtime older than `quiet_s`)."""
    if rule.quiet(Observed("", look.size, look.mtime), now):
        return look.at
    return look.at + rule.min_stable_s - lead_s


def split_due_looks(first: Mapping[str, Look], now: float, rule: StabilityRule,
                    lead_s: float) -> tuple[dict[str, Look], float | None]:
    """First looks whose run is due now, and when the next of the others falls due."""
    due: dict[str, Look] = {}
    later: float | None = None
    for path, look in first.items():
        at = due_at(look, rule, now, lead_s)
        if at <= now:
            due[path] = look
        else:
            later = at if later is None else min(later, at)
    return due, later


def fingerprint(looks: Mapping[str, Look]) -> str:
    """Idempotent run key part: the same files in the same state ask for one run only."""
    text = "\n".join(f"{p}|{v.size}|{v.mtime!r}|{v.at!r}" for p, v in sorted(looks.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def forget_old(vouched: Mapping[str, Look], now: float) -> dict[str, Look]:
    return {p: v for p, v in vouched.items() if now - v.at < FORGET_VOUCHED_S}


def wait_before_scan(looks: Iterable[Look], now: float, rule: StabilityRule,
                     max_wait_s: float) -> float:
    """Seconds the run waits so that its look comes `min_stable_s` after the first looks
    it was handed (never more than `max_wait_s`: a run is not a timer)."""
    ends = [v.at + rule.min_stable_s for v in looks]
    return max(0.0, min(max_wait_s, max(ends) - now)) if ends else 0.0


def apply_vouch(decision: FileDecision, look: Look | None, now: float,
                rule: StabilityRule) -> FileDecision:
    """The scan's decision for a file the sensor handed over: stable when this look (the
    scan's, at `now`) shows the first look's size and mtime at least `min_stable_s` later;
    pending from the first look's time when sooner (that look saw this very state: its
    second look falls due then, not `min_stable_s` after this scan). Anything else keeps
    the scan's own decision (pending, growing...)."""
    if look is None or decision.status != PENDING or not look.same(decision.obs):
        return decision
    if now - look.at < rule.min_stable_s:
        if decision.kind == UNCHANGED or look.at >= decision.seen_at:
            return decision
        return FileDecision(decision.obs, decision.kind, PENDING, look.at)
    kind = CONFIRMED if decision.kind == UNCHANGED else decision.kind
    return FileDecision(decision.obs, kind, STABLE, min(look.at, decision.seen_at))


def parse_looks(raw: object) -> dict[str, Look]:
    """Looks from a cursor or run config ({path: [size, mtime, at]}); anything malformed is
    dropped (an old or hand-edited cursor then just starts over)."""
    if not isinstance(raw, dict):
        return {}
    out: dict[str, Look] = {}
    for path, v in raw.items():
        if isinstance(v, list | tuple) and len(v) == 3:
            try:
                out[str(path)] = Look(int(v[0]), float(v[1]), float(v[2]))
            except (TypeError, ValueError):
                continue
    return out


def dump_looks(looks: Mapping[str, Look]) -> dict[str, list[float]]:
    return {p: v.as_list() for p, v in sorted(looks.items())}
