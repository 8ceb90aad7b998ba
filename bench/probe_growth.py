"""Probe cost vs file duration: bytes read and seconds per probe for recordings of 1 minute
to 2 hours, per container, against the whole file (what a full download costs).

For MP4 the moov (sample tables) grows with the duration, so a partial-read probe must grow
with it: the claim is that it grows like the moov, not like the file. The generated files
have a tiny bitrate (64x48 video): a real 1080p recording of the same length has the same
moov in a file a thousand times bigger, so read/size here understates the saving. Long
files are made by looping a tiny segment (`media_fixtures.make_long_video`) and cached with
bench/probe.py's media (HP_BENCH_MEDIA_DIR, default /tmp/hybrid_pipelines_bench_media).

Usage: .venv/bin/python bench/probe_growth.py [--quick]
       (full: 1, 10, 30, 60, 120 min x MP4 moov-at-end, MP4 faststart, MKV, MPEG-TS;
        quick: 1, 10, 60 min, same containers)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _claims import claim  # bench/ is on sys.path when a script runs

from hybrid_pipelines.dev import media_fixtures as mf  # noqa: E402
from hybrid_pipelines.media_catalog.probe import probe  # noqa: E402
from hybrid_pipelines.media_catalog.range_reader import LocalFileReader  # noqa: E402
from hybrid_pipelines.media_catalog.rules.mp4_boxes import BoxError, walk_boxes  # noqa: E402

MiB = 1024 * 1024


def moov_size(path: Path) -> int | None:
    if path.suffix.lower() not in (".mp4", ".mov"):
        return None
    try:
        with LocalFileReader(path) as reader:
            return next((b.size for b in walk_boxes(reader) if b.type == "moov"), None)
    except BoxError:
        return None


def measure(path: Path) -> tuple[int, float, float | None]:
    """(bytes read, seconds, duration found) of one probe over a counting local reader."""
    t0 = time.perf_counter()
    with LocalFileReader(path) as reader:
        result = probe(reader)
        read = reader.bytes_read
    if not result.ok:
        raise RuntimeError(f"probe of {path} failed: {result.error}")
    return read, time.perf_counter() - t0, result.duration


def fmt(n: float) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", MiB), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}B"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="durations up to 1 hour only")
    ap.add_argument("--media-dir", type=Path, default=Path(
        os.environ.get("HP_BENCH_MEDIA_DIR")
        or Path(tempfile.gettempdir()) / "hybrid_pipelines_bench_media"))
    args = ap.parse_args()
    if not (mf.ffmpeg_available() and mf.ffmpeg_available("ffprobe")):
        print("cannot run: ffmpeg/ffprobe not installed (apt-get install ffmpeg)",
              file=sys.stderr)
        return 2
    kinds = ("mp4_moov_end", "mp4_faststart", "mkv", "ts")
    minutes = (1, 10, 60) if args.quick else (1, 10, 30, 60, 120)
    t0 = time.perf_counter()
    # Same parameters as bench/probe.py, so the two share cached files.
    paths = mf.generate_many({(k, m): partial(mf.make_long_video, args.media_dir, k,
                                              duration_s=m * 60.0)
                              for k in kinds for m in minutes})
    print(f"media ready in {time.perf_counter() - t0:.1f}s ({args.media_dir})\n")

    print(f"{'file':<22} {'duration':>8} {'size':>9} {'moov':>9} {'read':>9} {'read/size':>10} "
          f"{'s':>6}")
    results: dict[tuple[str, int], tuple[int, int, float]] = {}
    moovs: dict[tuple[str, int], int | None] = {}
    for (kind, m), path in paths.items():
        size = path.stat().st_size
        read, secs, found = measure(path)
        assert found and abs(found - m * 60) <= 0.01 * m * 60, (path, found)
        moov = moovs[(kind, m)] = moov_size(path)
        results[(kind, m)] = (read, size, secs)
        print(f"{kind:<22} {m:>5}min {fmt(size):>9} {fmt(moov) if moov else '-':>9} "
              f"{fmt(read):>9} {read / size:10.5f} {secs:6.2f}")

    lo, hi = minutes[0], minutes[-1]
    claims = []
    print()
    print(f"growth from {lo} min to {hi} min (x): bytes read vs file size")
    for kind in kinds:
        read_lo, size_lo, _ = results[(kind, lo)]
        read_hi, size_hi, secs_hi = results[(kind, hi)]
        print(f"  {kind:<20} read x{read_hi / read_lo:7.1f}   size x{size_hi / size_lo:7.1f}   "
              f"{hi} min file: {fmt(read_hi)} of {fmt(size_hi)}")
        claims.append(claim(f"{kind}: bytes read for a {hi} min file vs the whole file",
                            read_hi, size_hi, "bytes"))
        claims.append(claim(f"{kind}: growth {lo}->{hi} min, bytes read vs file size",
                            read_hi / read_lo, size_hi / size_lo, "x"))
        if moov_hi := moovs[(kind, hi)]:
            claims.append(claim(f"{kind}: bytes read for a {hi} min file vs its moov box",
                                read_hi, moov_hi, "bytes"))
    print()
    print("BENCH_JSON " + json.dumps({"bench": "probe_growth", "claims": claims}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
