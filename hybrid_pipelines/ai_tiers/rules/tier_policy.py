"""Which models, contexts and outputs change tier, decided from plain values and an injected
"now", so every rule is testable on its boundary days without a clock or a database.

One rule for ages everywhere: a thing is N days old when `now - timestamp >= N days`, so with
N = 30 a model last used 29 days ago stays, one used exactly 30 or 31 days ago leaves."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

HOT, COLD = "hot", "cold"


def parse_now(value: str | None, default: datetime | None = None) -> datetime:
    """An ISO-8601 instant from run config (naive means UTC), else `default`, else the clock."""
    if value is None or value == "":
        now = default or datetime.now(UTC)
    else:
        try:
            now = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"config `now` = {value!r} is not an ISO-8601 timestamp; use e.g. "
                             "2025-01-31T02:00:00+00:00 or leave it empty for the real clock"
                             ) from exc
    return now if now.tzinfo else now.replace(tzinfo=UTC)


def as_utc(ts: datetime) -> datetime:
    """The platform's TIMESTAMP columns (no zone) hold UTC: a naive value read from one is
    UTC; an aware one is converted. Every comparison in Python goes through this."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def naive_utc(ts: datetime) -> datetime:
    """A value for a platform TIMESTAMP column: UTC wall time, no zone (what NOW() writes
    there in a UTC session)."""
    return as_utc(ts).replace(tzinfo=None)


def cutoff(now: datetime, days: int) -> datetime:
    """Timestamps at or before this instant are `days` old."""
    if days < 0:
        raise ValueError(f"an age of {days} days makes no sense; give 0 or more")
    return as_utc(now) - timedelta(days=days)


def is_older(ts: datetime, now: datetime, days: int) -> bool:
    return as_utc(ts) <= cutoff(now, days)


@dataclass(frozen=True)
class ModelState:
    model_id: str
    tier: str
    size_bytes: int
    last_access: datetime


@dataclass(frozen=True)
class Demotion:
    model_id: str
    reason: str  # 'idle' | 'capacity'
    size_bytes: int


def select_demotions(models: Iterable[ModelState], now: datetime, idle_days: int,
                     capacity_bytes: int | None = None, free_bytes: int = 0) -> list[Demotion]:
    """Idle hot models first (oldest first), then least recently used ones until the hot
    models fit `capacity_bytes` (None or 0: no limit) and until `free_bytes` are freed
    (idle demotions count toward it). Ties break on model_id so two runs agree."""
    hot = sorted((m for m in models if m.tier == HOT),
                 key=lambda m: (as_utc(m.last_access), m.model_id))
    out = [Demotion(m.model_id, "idle", m.size_bytes) for m in hot
           if is_older(m.last_access, now, idle_days)]
    chosen = {d.model_id for d in out}
    rest = [m for m in hot if m.model_id not in chosen]
    total = sum(m.size_bytes for m in rest)
    freed = sum(d.size_bytes for d in out)
    for m in rest:
        over_budget = bool(capacity_bytes) and total > (capacity_bytes or 0)
        if not over_budget and freed >= free_bytes:
            break
        out.append(Demotion(m.model_id, "capacity", m.size_bytes))
        total -= m.size_bytes
        freed += m.size_bytes
    return out


@dataclass(frozen=True)
class VolumePlan:
    """What the hot volume's usage asks of a demotion run (reported as run metadata)."""

    capacity_bytes: int     # the volume's size (statvfs) or the configured capacity
    used_bytes: int
    used_percent: float
    threshold_percent: float
    target_percent: float
    bytes_to_free: int      # 0 when usage is at or below the threshold


def volume_plan(capacity_bytes: int, used_bytes: int, threshold_percent: float,
                target_percent: float) -> VolumePlan:
    """Disk full -> demote least recently used: above `threshold_percent` of the capacity,
    free enough to come down to `target_percent`."""
    if not 0 < threshold_percent <= 100 or not 0 <= target_percent <= threshold_percent:
        raise ValueError(f"hot volume threshold {threshold_percent}% / target {target_percent}%"
                         ": need 0 < threshold <= 100 and 0 <= target <= threshold")
    if capacity_bytes <= 0:
        raise ValueError(f"hot volume capacity {capacity_bytes} bytes: need more than 0")
    pct = 100.0 * used_bytes / capacity_bytes
    free = 0
    if pct > threshold_percent:
        free = max(0, used_bytes - int(capacity_bytes * target_percent / 100.0))
    return VolumePlan(capacity_bytes, used_bytes, round(pct, 3), threshold_percent,
                      target_percent, free)


def still_eligible(demotion: Demotion, current: ModelState | None, now: datetime,
                   idle_days: int) -> bool:
    """Re-check under the model's lock: a promotion or a use since selection wins."""
    if current is None or current.tier != HOT:
        return False
    if demotion.reason == "idle":
        return is_older(current.last_access, now, idle_days)
    return True


@dataclass(frozen=True)
class OutputState:
    output_id: str
    tier: str
    created_at: datetime
    access_count: int


def output_action(o: OutputState, now: datetime, hot_days: int, keep_access_count: int
                  ) -> str | None:
    """'demote' (old and rarely read), 'promote' (cold but popular) or None."""
    popular = o.access_count >= keep_access_count
    if o.tier == HOT and not popular and is_older(o.created_at, now, hot_days):
        return "demote"
    if o.tier == COLD and popular:
        return "promote"
    return None


# ---- generated output paths: user_id/YYYY/MM/DD/uuid.ext --------------------------------------

_OUTPUT_PATH = re.compile(
    r"^(?P<user>[^/]+)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/"
    r"(?P<uuid>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.(?P<ext>[A-Za-z0-9]{1,10})$")


def output_path(user_id: str, created_at: datetime, output_id: str, ext: str) -> str:
    if not user_id or "/" in user_id or user_id in (".", ".."):
        raise ValueError(f"user_id {user_id!r} cannot be a path segment")
    day = as_utc(created_at)
    path = f"{user_id}/{day:%Y/%m/%d}/{output_id}.{ext.lstrip('.')}"
    parse_output_path(path)
    return path


def parse_output_path(path: str) -> tuple[str, date, str, str]:
    """(user_id, day, uuid, ext); ValueError naming the expected layout otherwise."""
    m = _OUTPUT_PATH.match(path)
    if not m or m["user"] in (".", ".."):
        raise ValueError(f"output path {path!r} does not follow user_id/YYYY/MM/DD/uuid.ext")
    try:
        day = date(int(m["y"]), int(m["m"]), int(m["d"]))
    except ValueError as exc:
        raise ValueError(f"output path {path!r} has an impossible date") from exc
    return m["user"], day, m["uuid"], m["ext"]


# ---- context expiry -----------------------------------------------------------------------------

def export_key(prefix: str, day: date, run_id: str) -> str:
    """One object per day of archive and expiry run: a later run for the same day writes
    beside the earlier object, never over it (the earlier one may be the only copy)."""
    if not re.fullmatch(r"[0-9A-Za-z_-]{1,64}", run_id):
        raise ValueError(f"run id {run_id!r} cannot be part of an object key; use letters, "
                         "digits, '-' or '_'")
    return (f"{prefix.strip('/')}/{day:%Y/%m/%d}/user-contexts-{day.isoformat()}-{run_id}"
            ".jsonl.gz")


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def tier_totals(rows: Sequence[tuple[str, int]]) -> dict[str, int]:
    """(tier, size) rows -> {'hot_count', 'hot_bytes', 'cold_count', 'cold_bytes'}."""
    out = {"hot_count": 0, "hot_bytes": 0, "cold_count": 0, "cold_bytes": 0}
    for tier, size in rows:
        out[f"{tier}_count"] += 1
        out[f"{tier}_bytes"] += int(size)
    return out
