"""The second look at files still being written, on a short cadence (the pending sensor).

A new file is recorded `pending` by the scan that first sees it; it becomes `stable` only
when a later look finds the same size and mtime at least `min_stable_s` after that first
look (scan_diff.decide_file). The NAS sensor gives that second look only on its own cadence
(60 s), so a finished upload used to wait for a whole further interval. This module decides,
from the catalog's pending rows alone, which files are due for their second look (no NAS
I/O before then), and from a fresh listing of their directories, whether a run has work:

* confirmed: same size and mtime as recorded, and old enough -> the run probes it;
* new: a file the catalog does not know yet in a directory listed anyway (uploads come in
  batches into one folder): its first look costs no extra NAS I/O, so it need not wait for
  the NAS sensor's next tick;
* moved: grown, rewritten or gone since the scan recorded it. The catalog's record is stale
  and the next scan restarts its stability clock, so a run is worth it only once the file
  settled: the same observation on two consecutive looks of this sensor (its cursor);
  before that, every run would just record one more intermediate size.

Pure functions only: no I/O, no Dagster."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from hybrid_pipelines.media_catalog.rules.scan_diff import (
    CONFIRMED,
    PENDING,
    Known,
    Observed,
    StabilityRule,
    decide_file,
)

# Observation of a moved file in the sensor's cursor: [size, mtime], or None when it is gone.
Seen = tuple[int, float] | None


@dataclass(frozen=True)
class PendingFile:
    """A catalog row in status pending; `seen_at` is when the scan first saw this size/mtime."""

    partition_key: str
    path: str
    size: int
    mtime: float
    seen_at: float

    @property
    def dir(self) -> str:
        return self.path.rsplit("/", 1)[0] if "/" in self.path else ""


def due_at(f: PendingFile, rule: StabilityRule) -> float:
    return f.seen_at + rule.min_stable_s


def split_due(files: Iterable[PendingFile], now: float, rule: StabilityRule,
              lead_s: float = 0.0) -> tuple[list[PendingFile], float | None]:
    """Files whose second look is due now (or within `lead_s`: the run is requested that
    much early and waits, see judge), and when the next of the others falls due."""
    due: list[PendingFile] = []
    later: float | None = None
    for f in files:
        at = due_at(f, rule) - lead_s
        if at <= now:
            due.append(f)
        else:
            later = at if later is None else min(later, at)
    return due, later


def dirs_to_list(due: Iterable[PendingFile]) -> list[str]:
    """One listing per directory, whatever the number of its pending files."""
    return sorted({f.dir for f in due})


@dataclass
class Verdicts:
    """What the due files showed, per partition, and the cursor for the next look."""

    confirmed: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    settled: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    new: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    moving: list[str] = field(default_factory=list)  # moved since last look: wait
    still: list[str] = field(default_factory=list)  # unchanged but not yet stable (clock)
    # Confirmed ahead of their second look (judge's lead_s): partition -> path -> (size,
    # mtime, seen_at); the run's scan waits until the look is due, then takes it itself.
    ahead: dict[str, dict[str, tuple[int, float, float]]] = field(
        default_factory=lambda: defaultdict(dict))
    seen: dict[str, Seen] = field(default_factory=dict)  # cursor: moved files' observations
    # What each run request is for, state included: a file written again later under the
    # same path (even with the same size) is a new state and must get a new run key.
    states: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def partitions(self) -> list[str]:
        return sorted(set(self.confirmed) | set(self.settled) | set(self.new))

    def reasons(self, partition_key: str) -> list[str]:
        return ([f"file {p!r} stable (second look)" for p in self.confirmed.get(partition_key,
                                                                                 [])]
                + [f"file {p!r} settled after changing" for p in self.settled.get(partition_key,
                                                                                    [])]
                + [f"file {p!r} new" for p in self.new.get(partition_key, [])])

    def fingerprint(self, partition_key: str) -> str:
        """Idempotent run key part: the same files in the same state ask for one run only."""
        return hashlib.sha256("\n".join(sorted(self.states.get(partition_key, []))).encode()
                              ).hexdigest()[:16]


def judge(due: Iterable[PendingFile], listed: Mapping[str, Mapping[str, Observed] | None],
          last_seen: Mapping[str, Seen], now: float, rule: StabilityRule,
          known: Mapping[str, set[str]] | None = None,
          ignored: Callable[[str], bool] = lambda p: False, lead_s: float = 0.0) -> Verdicts:
    """`listed`: directory -> its files as just listed (None: the directory is gone).
    `last_seen`: the moved files' observations from the previous look (the cursor).
    `lead_s`: a file unchanged since the scan recorded it, its second look due within
    `lead_s`, is confirmed ahead (`ahead`): its run is launched while the clock runs out,
    and its scan takes the second look when due (the rule itself is the scan's to apply).
    `known`: directory -> the paths the catalog holds there (any status), to spot new files;
    `ignored`: paths the catalog never records (partial downloads, system files)."""
    out = Verdicts()
    due = list(due)
    if known is not None:
        part_of = {f.dir: f.partition_key for f in due}
        for d, entries in sorted(listed.items()):
            for path, obs in sorted((entries or {}).items()):
                if d in part_of and path not in known.get(d, set()) and not ignored(path):
                    out.new[part_of[d]].append(path)
                    out.states[part_of[d]].append(f"{path}|{obs.size}|{obs.mtime!r}|new")
    for f in due:
        entries = listed.get(f.dir)
        obs = None if entries is None else entries.get(f.path)
        if obs is not None:
            known = Known(f.path, f.size, f.mtime, PENDING, f.seen_at)
            decision = decide_file(known, obs, now, rule)
            if decision.kind == CONFIRMED:
                out.confirmed[f.partition_key].append(f.path)
                out.states[f.partition_key].append(f"{f.path}|{f.size}|{f.mtime!r}|"
                                                   f"{f.seen_at!r}|stable")
                continue
            if obs.size == f.size and obs.mtime == f.mtime:
                if now >= due_at(f, rule) - lead_s:
                    out.confirmed[f.partition_key].append(f.path)
                    out.ahead[f.partition_key][f.path] = (f.size, f.mtime, f.seen_at)
                    out.states[f.partition_key].append(f"{f.path}|{f.size}|{f.mtime!r}|"
                                                       f"{f.seen_at!r}|stable")
                    continue
                out.still.append(f.path)  # not due after all (clock skew): look again later
                continue
        now_seen: Seen = None if obs is None else (obs.size, obs.mtime)
        if f.path in last_seen and _same(last_seen[f.path], now_seen):
            out.settled[f.partition_key].append(f.path)
            out.states[f.partition_key].append(f"{f.path}|{f.seen_at!r}|{now_seen!r}|settled")
        else:
            out.moving.append(f.path)
        out.seen[f.path] = now_seen
    return out


def _same(a: Seen, b: Seen) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return int(a[0]) == int(b[0]) and float(a[1]) == float(b[1])


def parse_seen(raw: object) -> dict[str, Seen]:
    """The cursor's observations, tolerating an old or hand-edited cursor (-> empty)."""
    if not isinstance(raw, dict):
        return {}
    out: dict[str, Seen] = {}
    for path, v in raw.items():
        if v is None:
            out[str(path)] = None
        elif isinstance(v, list | tuple) and len(v) == 2:
            try:
                out[str(path)] = (int(v[0]), float(v[1]))
            except (TypeError, ValueError):
                continue
    return out
