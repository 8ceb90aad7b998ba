"""What changed on the NAS since the catalog last looked, and what must be listed to know.

SMB directory timestamps (Samba on ext4/xfs) move only when a directory's own entry list
changes (create, delete, rename, mkdir), never when a file grows, and never propagate to
parents. So a rescan lists a directory only when:

* it is new, or its timestamp (seen in its parent's listing) moved;
* it has subdirectories: their timestamps are only visible in its listing;
* it holds files still being written ("pending"): their size/mtime must be looked at again;
* a full reconcile was asked for (the nightly schedule): in-place rewrites that keep the
  entry list are only caught there.

A file is probed only once it is stable: seen twice with the same size and mtime at least
`min_stable_s` apart, or, at first sight, with an mtime older than `quiet_s` (archives that
were copied long ago need no second look).

Resumable scans walk depth first in name order, so "everything up to the checkpointed path"
is a prefix of the walk. Pure functions only: no I/O, no Dagster.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

PENDING, STABLE, VALID, INVALID, DELETED = "pending", "stable", "valid", "invalid", "deleted"
LIVE_STATUSES = (PENDING, STABLE, VALID, INVALID)


@dataclass(frozen=True)
class Observed:
    """A file as a listing shows it."""

    path: str
    size: int
    mtime: float


@dataclass(frozen=True)
class Known:
    """A file as the catalog recorded it; `seen_at` is when this size/mtime was first seen."""

    path: str
    size: int
    mtime: float
    status: str
    seen_at: float


class DirState(NamedTuple):
    """A directory as the catalog recorded it (a named tuple: a rescan reads one per
    directory of the partition before its first listing)."""

    path: str
    mtime: float
    has_subdirs: bool


@dataclass(frozen=True)
class StabilityRule:
    min_stable_s: float = 30.0
    quiet_s: float = 600.0  # 0 disables the first-sight shortcut

    def quiet(self, obs: Observed, now: float) -> bool:
        return self.quiet_s > 0 and now - obs.mtime >= self.quiet_s


# What happened to a file: new, changed (was stable or probed, now differs), growing (still
# pending and still moving), confirmed (pending -> stable), unchanged.
NEW, CHANGED, GROWING, CONFIRMED, UNCHANGED = "new", "changed", "growing", "confirmed", "unchanged"


@dataclass(frozen=True)
class FileDecision:
    obs: Observed
    kind: str
    status: str
    seen_at: float

    @property
    def writes(self) -> bool:
        """Whether the catalog row must be written."""
        return self.kind != UNCHANGED


def decide_file(known: Known | None, obs: Observed, now: float,
                rule: StabilityRule) -> FileDecision:
    first_status = STABLE if rule.quiet(obs, now) else PENDING
    if known is None or known.status == DELETED:
        return FileDecision(obs, NEW, first_status, now)
    if known.size == obs.size and known.mtime == obs.mtime:
        if known.status == PENDING and now - known.seen_at >= rule.min_stable_s:
            return FileDecision(obs, CONFIRMED, STABLE, known.seen_at)
        return FileDecision(obs, UNCHANGED, known.status, known.seen_at)
    kind = GROWING if known.status == PENDING else CHANGED
    return FileDecision(obs, kind, first_status, now)


def listing_reason(observed_mtime: float | None, known: DirState | None, *, full: bool,
                   has_pending: bool) -> str | None:
    """Why a directory must be listed, or None when its catalog record still holds.
    `observed_mtime` is None for the scan's own top directory when its parent is not listed."""
    if full:
        return "full"
    if known is None:
        return "new"
    if observed_mtime is not None and observed_mtime != known.mtime:
        return "changed"
    if known.has_subdirs:
        return "inner"
    if has_pending:
        return "pending"
    return None


# ---------------------------------------------------------------- walk order and resume


def path_key(path: str) -> tuple[str, ...]:
    """Sort key of the depth-first, name-ordered walk."""
    return tuple(p for p in path.split("/") if p)


def _is_within(path: str, ancestor: str) -> bool:
    a = path_key(ancestor)
    return path_key(path)[: len(a)] == a


def subtree_done(dir_path: str, last_path: str | None) -> bool:
    """True when the walk already passed the whole subtree of `dir_path`."""
    if not last_path:
        return False
    return path_key(dir_path) < path_key(last_path) and not _is_within(last_path, dir_path)


def file_done(path: str, last_path: str | None) -> bool:
    return bool(last_path) and path_key(path) <= path_key(last_path or "")


# ---------------------------------------------------------------- one directory listing


class Entry(NamedTuple):
    """One listed name. A named tuple, not a dataclass: a first scan makes one per file, and
    a tuple is made in a third of the time."""

    path: str
    is_dir: bool
    size: int
    mtime: float

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def split_unusable(entries: Iterable[Entry], problem: Callable[[str], str | None]
                   ) -> tuple[list[Entry], list[tuple[Entry, str]]]:
    """Entries whose names can be catalogued, and the directories that cannot (with why).

    Only directories are held back: nothing below one can be listed, so walking into it
    would fail the scan on every resume. A file with such a name stays in the listing and is
    recorded invalid with the reason when its probe refuses the path."""
    kept: list[Entry] = []
    skipped: list[tuple[Entry, str]] = []
    for e in entries:
        why = problem(e.name) if e.is_dir else None
        if why is None:
            kept.append(e)
        else:
            skipped.append((e, why))
    return kept, skipped


def _path_of(e: Entry) -> str:
    return e.path


@dataclass
class ListingDiff:
    # Children in walk order: FileDecision for files, Entry for subdirectories.
    children: list[FileDecision | Entry] = field(default_factory=list)
    deleted_files: list[str] = field(default_factory=list)
    gone_dirs: list[str] = field(default_factory=list)
    ignored: int = 0

    @property
    def subdirs(self) -> list[Entry]:
        return [c for c in self.children if isinstance(c, Entry)]


def diff_listing(entries: Iterable[Entry], known_files: Mapping[str, Known],
                 known_subdirs: Iterable[str], now: float, rule: StabilityRule,
                 ignored: Callable[[Entry], bool] = lambda e: False) -> ListingDiff:
    """Compare one directory's listing with the catalog's live files and subdirectories of
    that directory."""
    out = ListingDiff()
    listed_files: set[str] = set()
    listed_dirs: set[str] = set()
    # One directory's paths share its prefix: path order is name order, without a split.
    for entry in sorted(entries, key=_path_of):
        if ignored(entry):
            out.ignored += 1
            continue
        if entry.is_dir:
            listed_dirs.add(entry.path)
            out.children.append(entry)
        else:
            listed_files.add(entry.path)
            obs = Observed(entry.path, entry.size, entry.mtime)
            out.children.append(decide_file(known_files.get(entry.path), obs, now, rule))
    out.deleted_files = sorted((p for p, k in known_files.items()
                                if p not in listed_files and k.status != DELETED),
                               key=path_key)
    out.gone_dirs = sorted((d for d in known_subdirs if d not in listed_dirs), key=path_key)
    return out


# ---------------------------------------------------------------- renames


@dataclass(frozen=True)
class Gone:
    path: str
    size: int
    mtime: float


def pair_renames(gone: Iterable[Gone], appeared: Iterable[Observed]) -> list[tuple[str, str]]:
    """(old, new) pairs for files that vanished and appeared in one scan with the same size
    and mtime (a rename or move keeps both): first by name too, then by size and mtime
    alone. Only unambiguous pairs count; empty files never pair (they all look alike)."""
    gone_l = [g for g in gone if g.size > 0]
    new_l = [o for o in appeared if o.size > 0]
    pairs: list[tuple[str, str]] = []

    def match(key_gone: Callable[[Gone], tuple], key_new: Callable[[Observed], tuple]) -> None:
        by_gone: dict[tuple, list[Gone]] = defaultdict(list)
        by_new: dict[tuple, list[Observed]] = defaultdict(list)
        for g in gone_l:
            by_gone[key_gone(g)].append(g)
        for o in new_l:
            by_new[key_new(o)].append(o)
        for key, olds in by_gone.items():
            news = by_new.get(key, [])
            if len(olds) == 1 and len(news) == 1:
                pairs.append((olds[0].path, news[0].path))
                gone_l.remove(olds[0])
                new_l.remove(news[0])

    match(lambda g: (g.path.rsplit("/", 1)[-1], g.size, g.mtime),
          lambda o: (o.path.rsplit("/", 1)[-1], o.size, o.mtime))
    match(lambda g: (g.size, g.mtime), lambda o: (o.size, o.mtime))
    return sorted(pairs)


# ---------------------------------------------------------------- progress


@dataclass
class Progress:
    """Rate and ETA of a job whose total may be known from the previous run."""

    started: float
    expected_total: int | None = None
    done: int = 0

    def rate(self, now: float) -> float:
        elapsed = now - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta_s(self, now: float) -> float | None:
        rate = self.rate(now)
        if not self.expected_total or rate <= 0 or self.done >= self.expected_total:
            return None
        return (self.expected_total - self.done) / rate

    def line(self, what: str, now: float) -> str:
        eta = self.eta_s(now)
        total = f"/{self.expected_total}" if self.expected_total else ""
        tail = f", ETA {eta:.0f}s" if eta is not None else ""
        return f"{what}: {self.done}{total} files, {self.rate(now):.0f} files/s{tail}"
