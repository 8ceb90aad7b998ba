"""The file server's JSON access log as numbers: download lines parsed, folded into per-minute
buckets (a bounded state that fits in a sensor cursor), and read back as the last few
minutes' hit rate and average latency.

A line looks like
  {"timestamp":"2026-11-29T21:00:00.123Z","level":"info","service":"file-server",
   "action":"download","fileId":"...","source":"seaweedfs","latencyMs":45,"cacheHit":true}
Other actions are counted as skipped; a line that is not such JSON is counted as bad."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SOURCES = ("seaweedfs", "nas", "fallback")
WINDOW_S = 300.0  # "the last 5 minutes"
BUCKET_S = 60
# bucket fields: downloads, hits, latency sum (ms), then one count per source
_N, _HITS, _LAT = 0, 1, 2


@dataclass(frozen=True)
class Download:
    ts: float            # epoch seconds
    latency_ms: float
    cache_hit: bool
    source: str


class BadLine(ValueError):
    """A line that is not a well-formed access-log record."""


def _timestamp(raw: Any) -> float:
    if isinstance(raw, bool):
        raise BadLine("timestamp is a boolean")
    if isinstance(raw, int | float):
        # Node's Date.now() is milliseconds; seconds are accepted too.
        return float(raw) / 1000 if raw > 1e11 else float(raw)
    if isinstance(raw, str):
        try:
            dt = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise BadLine(f"timestamp {raw!r} is not ISO 8601") from exc
        if dt.tzinfo is None:  # the platform logs UTC
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    raise BadLine(f"timestamp {raw!r} is neither ISO 8601 nor epoch")


def parse_line(line: str) -> Download | None:
    """A download, or None for another action. Raises BadLine for anything malformed."""
    try:
        rec = json.loads(line)
    except ValueError as exc:
        raise BadLine(f"not JSON: {exc}") from exc
    if not isinstance(rec, dict):
        raise BadLine("not a JSON object")
    if rec.get("action") != "download":
        return None
    latency, hit = rec.get("latencyMs"), rec.get("cacheHit")
    if isinstance(latency, bool) or not isinstance(latency, int | float) \
            or not math.isfinite(latency) or latency < 0:
        raise BadLine(f"latencyMs {latency!r} is not a non-negative number")
    if not isinstance(hit, bool):
        raise BadLine(f"cacheHit {hit!r} is not true/false")
    source = str(rec.get("source", ""))
    return Download(_timestamp(rec.get("timestamp")), float(latency), hit, source)


def add(buckets: dict[str, list[float]], d: Download) -> None:
    """Fold one download into its minute's bucket (keys are strings: JSON object keys)."""
    key = str(int(d.ts // BUCKET_S) * BUCKET_S)
    b = buckets.setdefault(key, [0.0] * (3 + len(SOURCES)))
    b[_N] += 1
    b[_HITS] += int(d.cache_hit)
    b[_LAT] += d.latency_ms
    if d.source in SOURCES:
        b[3 + SOURCES.index(d.source)] += 1


def prune(buckets: dict[str, list[float]], now: float, window_s: float = WINDOW_S) -> None:
    """Drop the buckets that ended before the window (and keep the cursor small)."""
    for key in [k for k in buckets if float(k) + BUCKET_S <= now - window_s]:
        del buckets[key]


@dataclass(frozen=True)
class WindowStats:
    downloads: int
    hits: int
    latency_sum_ms: float
    by_source: dict[str, int]

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.downloads if self.downloads else None

    @property
    def avg_latency_ms(self) -> float | None:
        return self.latency_sum_ms / self.downloads if self.downloads else None

    def metadata(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {"downloads": self.downloads, "cache_hits": self.hits}
        out |= {f"source_{s}": n for s, n in self.by_source.items()}
        # No downloads, no rate: -1 would plot as a fake dip.
        if self.hit_rate is not None:
            out["cache_hit_rate"] = round(self.hit_rate, 4)
        if self.avg_latency_ms is not None:
            out["avg_download_latency_ms"] = round(self.avg_latency_ms, 1)
        return out


def window(buckets: dict[str, list[float]], now: float,
           window_s: float = WINDOW_S) -> WindowStats:
    """Downloads of the minutes that overlap the last `window_s` seconds (not the future)."""
    rows = [b for k, b in buckets.items()
            if now - window_s < float(k) + BUCKET_S and float(k) <= now]
    by_source = {s: int(sum(b[3 + i] for b in rows)) for i, s in enumerate(SOURCES)}
    return WindowStats(int(sum(b[_N] for b in rows)), int(sum(b[_HITS] for b in rows)),
                       sum(b[_LAT] for b in rows), by_source)
