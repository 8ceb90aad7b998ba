"""The file server's access log, read incrementally: a partial last line waits for the next
read, bad lines are counted (not fatal), rotation finishes the old file first, truncation
restarts; the last 5 minutes give the hit rate and average latency."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from hybrid_pipelines.operations.access_log import ingest, read_new
from hybrid_pipelines.operations.rules.access_stats import parse_line, window

T0 = 1_800_000_000.0


def line(ts: float, hit: bool, latency: int = 45, source: str = "seaweedfs",
         action: str = "download") -> str:
    iso = datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
    return json.dumps({"timestamp": iso, "level": "info", "service": "file-server",
                       "action": action, "fileId": "f-1", "source": source,
                       "latencyMs": latency, "cacheHit": hit}) + "\n"


def test_partial_line_waits_and_bad_lines_are_counted(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    full = line(T0, True)
    log.write_text(full + "not json\n" + line(T0, False, action="upload") + full[:30])
    r1 = read_new(log, None)
    assert (len(r1.downloads), r1.bad, r1.other) == (1, 1, 1)
    assert r1.cursor["offset"] == len((full + "not json\n" + line(T0, False, action="upload"))
                                      .encode())
    with log.open("a") as fh:
        fh.write(full[30:])
    r2 = read_new(log, r1.cursor)
    assert len(r2.downloads) == 1 and r2.bad == 0  # the line completed, read once
    r3 = read_new(log, r2.cursor)
    assert r3.downloads == [] and r3.bytes_read == 0


def test_rotation_reads_the_rest_of_the_old_file_first(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(line(T0, True))
    r1 = read_new(log, None)
    with log.open("a") as fh:  # written after our read, before logrotate moved the file
        fh.write(line(T0 + 1, False, 900))
    os.rename(log, tmp_path / "access.log.1")
    log.write_text(line(T0 + 2, True, 10))
    r2 = read_new(log, r1.cursor)
    assert r2.rotated
    assert [d.latency_ms for d in r2.downloads] == [900.0, 10.0]
    assert r2.cursor["inode"] == log.stat().st_ino


def test_truncation_restarts_from_zero(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(line(T0, True) * 3)
    r1 = read_new(log, None)
    log.write_text(line(T0 + 5, False))  # copytruncate: same inode, shorter
    r2 = read_new(log, r1.cursor)
    assert r2.truncated and [d.cache_hit for d in r2.downloads] == [False]


def test_missing_file_keeps_the_cursor(tmp_path: Path) -> None:
    r = read_new(tmp_path / "nope.log", {"inode": 5, "offset": 10})
    assert r.missing and r.cursor == {"inode": 5, "offset": 10}


def test_window_over_the_last_five_minutes(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    old = [line(T0 - 900, False, 5000)] * 10           # 15 minutes ago: outside the window
    recent = [line(T0 - 60 - i, i % 4 != 0, 100 + i) for i in range(40)]  # 75 % hits
    log.write_text("".join(old + recent))
    state, res = ingest(log, None, T0)
    assert len(res.downloads) == 50
    stats = window(state["buckets"], T0)
    assert stats.downloads == 40 and stats.hit_rate == 0.75
    assert stats.avg_latency_ms == sum(100 + i for i in range(40)) / 40
    assert stats.metadata()["source_seaweedfs"] == 40
    # The buckets survive the cursor (JSON) and the old minutes are pruned.
    state = json.loads(json.dumps(state))
    assert all(float(k) > T0 - 400 for k in state["buckets"])
    state, res = ingest(log, state, T0 + 30)
    assert res.downloads == [] and window(state["buckets"], T0 + 30).downloads == 40


def test_parse_accepts_epoch_millis_and_rejects_nonsense() -> None:
    d = parse_line(json.dumps({"timestamp": T0 * 1000, "action": "download",
                               "latencyMs": 3, "cacheHit": False, "source": "nas"}))
    assert d is not None and d.ts == T0 and d.source == "nas"
    for bad in ({"timestamp": T0, "action": "download", "latencyMs": "fast", "cacheHit": True},
                {"timestamp": T0, "action": "download", "latencyMs": 3, "cacheHit": "yes"},
                {"timestamp": "yesterday", "action": "download", "latencyMs": 3,
                 "cacheHit": True}):
        try:
            parse_line(json.dumps(bad))
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")


def test_first_read_of_a_long_log_starts_near_the_end_at_a_line(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    lines = [line(T0 + i, True, i) for i in range(200)]
    log.write_text("".join(lines))
    size = log.stat().st_size
    r = read_new(log, None, max_bytes=size // 4)
    assert r.bad == 0 and 0 < len(r.downloads) <= 50
    assert r.downloads[-1].latency_ms == 199 and r.cursor["offset"] == size
