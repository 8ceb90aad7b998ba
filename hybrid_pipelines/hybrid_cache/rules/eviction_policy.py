"""Which cached files to evict, and how many bytes to free: pure rules shared by the SQL that
picks candidates and by tests and benchmarks that check the choice."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class Policy(StrEnum):
    LRU = "lru"    # least recently accessed first
    LFU = "lfu"    # least frequently accessed first (ties: least recently)
    FIFO = "fifo"  # oldest upload first


def parse_policy(name: str) -> Policy:
    try:
        return Policy(name.strip().lower())
    except ValueError:
        valid = ", ".join(p.value for p in Policy)
        raise ValueError(f"eviction policy {name!r} is unknown; use one of: {valid}") from None


# ORDER BY clauses per policy. Fixed strings (never user input) that match the partial indexes
# in sql/hybrid_cache_schema.py exactly, so Postgres reads candidates in index order. A file never
# accessed counts as accessed at upload time.
ORDER_BY: dict[Policy, str] = {
    Policy.LRU: "COALESCE(last_accessed, created_at), id",
    Policy.LFU: "access_count, COALESCE(last_accessed, created_at), id",
    Policy.FIFO: "created_at, id",
}


@dataclass(frozen=True)
class Candidate:
    id: Any
    key: str
    size: int
    created_at: datetime
    last_accessed: datetime | None = None
    access_count: int = 0


def sort_key(policy: Policy) -> Callable[[Candidate], tuple[Any, ...]]:
    """The Python twin of ORDER_BY (ids compared as strings, as Postgres compares UUID bytes)."""
    def recency(c: Candidate) -> datetime:
        return c.last_accessed or c.created_at

    if policy is Policy.LRU:
        return lambda c: (recency(c), str(c.id))
    if policy is Policy.LFU:
        return lambda c: (c.access_count, recency(c), str(c.id))
    return lambda c: (c.created_at, str(c.id))


def validate_thresholds(capacity_bytes: int, threshold: float, target: float) -> None:
    if capacity_bytes <= 0:
        raise ValueError(f"cache capacity must be positive bytes, got {capacity_bytes} "
                         "(set capacity_bytes in the run config or HP_CACHE_CAPACITY_BYTES)")
    if not 0 < threshold <= 1:
        raise ValueError(f"eviction threshold must be in (0, 1], got {threshold}")
    if not 0 <= target < threshold:
        raise ValueError(f"eviction target {target} must be below the threshold {threshold} "
                         "(e.g. threshold 0.8, target 0.7)")


def bytes_to_free(usage_bytes: int, capacity_bytes: int, threshold: float,
                  target: float) -> int:
    """Nothing below the threshold; above it, enough to get down to the target."""
    validate_thresholds(capacity_bytes, threshold, target)
    if usage_bytes <= threshold * capacity_bytes:
        return 0
    return max(0, usage_bytes - int(target * capacity_bytes))


def take_until(candidates: Iterable[Candidate], need_bytes: int,
               max_files: int | None = None) -> list[Candidate]:
    """The shortest prefix of `candidates` (already in policy order) freeing `need_bytes`."""
    chosen: list[Candidate] = []
    freed = 0
    for cand in candidates:
        if freed >= need_bytes or (max_files is not None and len(chosen) >= max_files):
            break
        chosen.append(cand)
        freed += cand.size
    return chosen


def choose(candidates: Iterable[Candidate], policy: Policy, need_bytes: int,
           max_files: int | None = None) -> list[Candidate]:
    """Reference choice over an in-memory list (tests and the benchmark's baseline)."""
    return take_until(sorted(candidates, key=sort_key(policy)), need_bytes, max_files)


# ---- the NAS re-check just before an object is deleted ----------------------------------
# A verification is a moment, not a guarantee: an editor may delete or replace the NAS copy
# afterwards. So each candidate is looked at again right before its object goes:
# - missing, a folder, or another size: fail (no read needed);
# - modified after the verification (mtime later than nas_verified_at + skew): hash it, whatever
#   its size: the bytes may be the same (a touch, a re-save) or not;
# - small (<= hash_max_bytes): hash it anyway. This catches a same-size replacement whose old
#   mtime was put back (`cp -p`, a restore), and costs at most as many bytes read from the NAS
#   as the eviction frees;
# - otherwise size and mtime are the check: re-reading every large file before each eviction
#   would cost a full read of everything evicted. The audit's hash samples cover the rest.
RECHECK_HASH_MAX_BYTES = 4 * 1024 * 1024
RECHECK_MTIME_SKEW_S = 2.0  # NAS and database clocks may differ a little


def recheck_plan(nas: tuple[bool, int, float] | None, row_size: int, verified_at: float,
                 hash_max_bytes: int = RECHECK_HASH_MAX_BYTES,
                 mtime_skew_s: float = RECHECK_MTIME_SKEW_S) -> tuple[str, str]:
    """`nas` is (is_dir, size, mtime) of what the NAS holds at the row's path, None when
    nothing is there; `verified_at` is nas_verified_at in seconds since the epoch. Returns
    ("fail", why), ("hash", why) or ("ok", "")."""
    if nas is None:
        return "fail", "the NAS copy is missing"
    is_dir, size, mtime = nas
    if is_dir:
        return "fail", "a folder stands where the NAS copy was"
    if size != row_size:
        return "fail", f"the NAS copy has {size} bytes, the row records {row_size}"
    if mtime > verified_at + mtime_skew_s:
        return "hash", "the NAS copy was modified after it was verified"
    if row_size <= hash_max_bytes:
        return "hash", "small enough to hash at every eviction"
    return "ok", ""
