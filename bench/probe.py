"""Benchmark: bytes and seconds to probe media, ours vs a fixed ladder vs full-file ffprobe.

    python bench/probe.py [--quick] [--media-dir DIR]

For every generated file it measures
  (a) probe() over a counting local reader,
  (b) plain ffprobe on the whole file (bytes = file size: a remote copy has to be fetched),
  (c) a fixed ladder: 512 KiB head -> 5 MB head -> last 1 MiB -> whole file, each step fed
      to ffprobe on stdin and stopping at the first result that passes the same validation.
The full-file ffprobe answer is the reference for codec/size agreement and duration (1%).
The last line is `BENCH_JSON {...}` for the `make bench` aggregator.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hybrid_pipelines.dev import media_fixtures as mf  # noqa: E402
from hybrid_pipelines.media_catalog.probe import (  # noqa: E402
    ProbeResult,
    parse_ffprobe_json,
    probe,
    validate_ffprobe,
)
from hybrid_pipelines.media_catalog.range_reader import LocalFileReader  # noqa: E402
from hybrid_pipelines.media_catalog.rules.mp4_boxes import BoxError, walk_boxes  # noqa: E402

MiB = 1024 * 1024
FFPROBE = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams"]
LADDER: list[tuple[str, str, int]] = [
    ("head 512 KiB", "head", 512 * 1024),
    ("head 5 MB", "head", 5_000_000),
    ("last 1 MiB", "tail", MiB),
    ("whole file", "whole", 0),
]
AGREE_FIELDS = (
    "format",
    "video_codec",
    "width",
    "height",
    "audio_codec",
    "channels",
    "sample_rate",
)


@dataclass
class Measure:
    result: ProbeResult
    bytes_read: int
    seconds: float


@dataclass
class Row:
    label: str
    path: Path
    size: int
    long: bool
    moov_size: int | None
    reference: ProbeResult
    ours: Measure
    ladder: Measure
    full: Measure


def _ffprobe(target: str, stdin_data: bytes | None = None) -> tuple[int, dict[str, object], str]:
    proc = subprocess.run(
        [*FFPROBE, target],
        input=stdin_data,
        stdin=None if stdin_data is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
        check=False,
    )
    try:
        data = json.loads(proc.stdout or b"{}")
    except json.JSONDecodeError:
        data = {}
    return proc.returncode, data, proc.stderr.decode("utf-8", "replace")


def _judge(
    path: Path,
    size: int,
    rc: int,
    data: dict[str, object],
    stderr: str,
    *,
    partial: bool,
    pipe: bool,
) -> ProbeResult:
    why = "ffprobe failed" if rc != 0 else validate_ffprobe(data, stderr, partial=partial)
    if why:
        return ProbeResult(path=str(path), ok=False, bytes_read=0, error=why)
    return parse_ffprobe_json(data, path=str(path), size=size, trust_bit_rate=not pipe)


def measure_full(path: Path) -> Measure:
    size = path.stat().st_size
    start = time.perf_counter()
    rc, data, stderr = _ffprobe("file:" + str(path))
    result = _judge(path, size, rc, data, stderr, partial=False, pipe=False)
    return Measure(result, size, time.perf_counter() - start)


def measure_ours(path: Path) -> Measure:
    start = time.perf_counter()
    with LocalFileReader(path) as reader:
        result = probe(reader)
        counted = reader.bytes_read
    return Measure(result, counted, time.perf_counter() - start)


def measure_ladder(path: Path) -> Measure:
    """Bytes are the union of what the steps touched, i.e. a ladder that reuses earlier
    reads: the most favourable accounting for the baseline."""
    size = path.stat().st_size
    start = time.perf_counter()
    head = tail = 0
    result = ProbeResult(path=str(path), ok=False, bytes_read=0, error="ladder exhausted")
    with open(path, "rb") as fh:
        for _label, kind, n in LADDER:
            if kind == "whole":
                head = size
                rc, data, stderr = _ffprobe("file:" + str(path))
                result = _judge(path, size, rc, data, stderr, partial=False, pipe=False)
            else:
                n = min(n, size)
                if kind == "head":
                    fh.seek(0)
                    head = max(head, n)
                else:
                    fh.seek(size - n)
                    tail = max(tail, n)
                chunk = fh.read(n)
                whole = n >= size
                rc, data, stderr = _ffprobe("pipe:0", chunk)
                result = _judge(path, size, rc, data, stderr, partial=not whole, pipe=True)
            if result.ok:
                break
    touched = min(size, head + tail) if head + tail < size else size
    return Measure(result, touched, time.perf_counter() - start)


def moov_size(path: Path) -> int | None:
    if path.suffix.lower() not in (".mp4", ".mov", ".m4a"):
        return None
    try:
        with LocalFileReader(path) as reader:
            return next((b.size for b in walk_boxes(reader) if b.type == "moov"), None)
    except BoxError:
        return None


def agrees(result: ProbeResult, reference: ProbeResult) -> bool:
    if not (result.ok and reference.ok and result.duration and reference.duration):
        return False
    if any(getattr(result, f) != getattr(reference, f) for f in AGREE_FIELDS):
        return False
    return abs(result.duration - reference.duration) <= 0.01 * reference.duration


def generate(media_dir: Path, quick: bool) -> list[tuple[str, Path, bool]]:
    """(label, path, is_long) for every file to measure; cached in media_dir by parameters."""
    jobs: dict[str, Callable[[], Path]] = {}
    longs: set[str] = set()
    short_s = 10.0 if quick else 60.0
    for kind in mf.VIDEO_KINDS:
        if kind == "mxf" and not mf.ffmpeg_has_muxer("mxf"):
            continue
        jobs[f"{kind} {short_s:g}s"] = partial(
            mf.make_video, media_dir, kind, duration_s=short_s, width=640, height=360
        )
    for kind in ("mp4_moov_end", "mp4_faststart", "mkv") if quick else mf.VIDEO_KINDS[:6]:
        jobs[f"{kind} 4s bulky"] = partial(
            mf.make_video, media_dir, kind, duration_s=4.0, bulky=True
        )
    for kind in mf.AUDIO_KINDS:
        audio_s = short_s if quick else 600.0
        jobs[f"{kind} audio"] = partial(mf.make_audio, media_dir, kind, duration_s=audio_s)
    long_kinds = ("mp4_moov_end", "mp4_faststart", "mkv", "ts") if quick else mf.LONG_KINDS
    durations = (3600.0,) if quick else (60.0, 600.0, 3600.0, 7200.0)
    for kind in long_kinds:
        for duration in durations:
            label = f"{kind} {duration / 60:g}min"
            jobs[label] = partial(mf.make_long_video, media_dir, kind, duration_s=duration)
            if duration >= 3600:
                longs.add(label)
    paths = mf.generate_many(jobs)
    return [(label, path, label in longs) for label, path in paths.items()]


def _fmt_bytes(n: float) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", MiB), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}B"


def _mark(m: Measure, reference: ProbeResult) -> str:
    if not m.result.ok:
        return "FAIL"
    return "ok" if agrees(m.result, reference) else "DIFF"


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'file':<26} {'size':>9} | {'ours':>9} {'s':>5} {'':4} | {'ladder':>9} {'s':>5} "
        f"{'':4} | {'full s':>6} | {'1MiB+moov':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        budget = _fmt_bytes(MiB + r.moov_size) if r.moov_size else "-"
        print(
            f"{r.label:<26} {_fmt_bytes(r.size):>9} | {_fmt_bytes(r.ours.bytes_read):>9} "
            f"{r.ours.seconds:5.2f} {_mark(r.ours, r.reference):4} | "
            f"{_fmt_bytes(r.ladder.bytes_read):>9} {r.ladder.seconds:5.2f} "
            f"{_mark(r.ladder, r.reference):4} | {r.full.seconds:6.2f} | {budget:>9}"
        )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _claim(claim: str, ours: float, baseline: float, unit: str) -> dict[str, object]:
    ratio = ours / baseline if baseline else 0.0
    return {
        "claim": claim,
        "ours": round(ours, 4),
        "baseline": round(baseline, 4),
        "unit": unit,
        "ratio": round(ratio, 4),
    }


def summarise(rows: list[Row], corrupt: list[tuple[str, bool, bool]]) -> list[dict[str, object]]:
    valid = [r for r in rows if r.reference.ok]
    n = len(valid)

    def rate(
        pick: Callable[[Row], Measure], check: Callable[[ProbeResult, ProbeResult], bool]
    ) -> float:
        return 100.0 * sum(check(pick(r).result, r.reference) for r in valid) / max(n, 1)

    def ok_only(result: ProbeResult, _ref: ProbeResult) -> bool:
        return result.ok

    ours_ok, ladder_ok = rate(lambda r: r.ours, ok_only), rate(lambda r: r.ladder, ok_only)
    ours_agree, ladder_agree = rate(lambda r: r.ours, agrees), rate(lambda r: r.ladder, agrees)
    mean = {
        k: _mean([float(getattr(r, k).bytes_read) for r in valid])
        for k in ("ours", "ladder", "full")
    }
    secs = {k: _mean([getattr(r, k).seconds for r in valid]) for k in ("ours", "ladder", "full")}
    longs = [r for r in valid if r.long]
    long_ours = _mean([float(r.ours.bytes_read) for r in longs])
    long_ladder = _mean([float(r.ladder.bytes_read) for r in longs])
    mp4s = [r for r in valid if r.moov_size]
    mp4_ours = _mean([float(r.ours.bytes_read) for r in mp4s])
    mp4_budget = _mean([float(MiB + (r.moov_size or 0)) for r in mp4s])

    print()
    print(f"files: {n} valid ({len(longs)} of >= 1 h), {len(corrupt)} corrupt")
    print(f"success rate:           ours {ours_ok:.1f}%   ladder {ladder_ok:.1f}%")
    print(
        f"agree with full ffprobe (codec/size/format, duration within 1%): "
        f"ours {ours_agree:.1f}%   ladder {ladder_agree:.1f}%"
    )
    print(
        f"mean bytes read:        ours {_fmt_bytes(mean['ours'])}   "
        f"ladder {_fmt_bytes(mean['ladder'])}   full {_fmt_bytes(mean['full'])}"
    )
    print(
        f"mean seconds:           ours {secs['ours']:.3f}   ladder {secs['ladder']:.3f}   "
        f"full {secs['full']:.3f}"
    )
    print(
        f"MP4/MOV/M4A mean bytes: ours {_fmt_bytes(mp4_ours)} vs 1 MiB + moov "
        f"{_fmt_bytes(mp4_budget)} ({len(mp4s)} files)"
    )
    if longs:
        print(
            f">= 1 h files bytes:     ours {_fmt_bytes(long_ours)}   "
            f"ladder {_fmt_bytes(long_ladder)}"
        )
    print(
        f"ratios (bytes):         ours/ladder {mean['ours'] / max(mean['ladder'], 1):.4f}   "
        f"ours/full {mean['ours'] / max(mean['full'], 1):.4f}"
    )
    rejected_ours = sum(o for _, o, _ in corrupt)
    rejected_ladder = sum(lad for _, _, lad in corrupt)
    print(
        f"corrupt files rejected: ours {rejected_ours}/{len(corrupt)}   "
        f"ladder {rejected_ladder}/{len(corrupt)}"
    )

    claims = [
        _claim(
            "mean bytes read per file, ours vs fixed ladder", mean["ours"], mean["ladder"], "bytes"
        ),
        _claim(
            "mean bytes read per file, ours vs full-file ffprobe",
            mean["ours"],
            mean["full"],
            "bytes",
        ),
        _claim("MP4/MOV mean bytes read vs 1 MiB + moov size", mp4_ours, mp4_budget, "bytes"),
        _claim(
            "files agreeing with full ffprobe, ours vs fixed ladder", ours_agree, ladder_agree, "%"
        ),
        _claim("mean seconds per probe, ours vs fixed ladder", secs["ours"], secs["ladder"], "s"),
        _claim(
            "corrupt files rejected, ours vs fixed ladder",
            float(rejected_ours),
            float(rejected_ladder),
            "files",
        ),
    ]
    if longs:
        claims.insert(
            2,
            _claim(
                ">= 1 h files: mean bytes read, ours vs fixed ladder",
                long_ours,
                long_ladder,
                "bytes",
            ),
        )
    return claims


def measure_corrupt(media_dir: Path) -> list[tuple[str, bool, bool]]:
    """(kind, ours rejected it, ladder rejected it) for each corrupt kind."""
    out = []
    for kind in mf.CORRUPT_KINDS:
        path = mf.make_corrupt(media_dir, kind)
        ours = measure_ours(path).result if path.stat().st_size else None
        ladder = measure_ladder(path).result if path.stat().st_size else None
        out.append((kind, ours is None or not ours.ok, ladder is None or not ladder.ok))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter files (< 60 s)")
    parser.add_argument(
        "--media-dir",
        type=Path,
        default=Path(
            os.environ.get("HP_BENCH_MEDIA_DIR")
            or Path(tempfile.gettempdir()) / "hybrid_pipelines_bench_media"
        ),
        help="where generated media is cached between runs",
    )
    args = parser.parse_args(argv)
    if not (mf.ffmpeg_available() and mf.ffmpeg_available("ffprobe")):
        print("ffmpeg/ffprobe not installed: nothing to measure", file=sys.stderr)
        return 2
    started = time.perf_counter()
    files = generate(args.media_dir, args.quick)
    print(
        f"media ready in {time.perf_counter() - started:.1f}s ({len(files)} files, "
        f"{args.media_dir})\n"
    )
    rows: list[Row] = []
    for label, path, is_long in files:
        full = measure_full(path)
        rows.append(
            Row(
                label=label,
                path=path,
                size=path.stat().st_size,
                long=is_long,
                moov_size=moov_size(path),
                reference=full.result,
                ours=measure_ours(path),
                ladder=measure_ladder(path),
                full=full,
            )
        )
    print_table(rows)
    corrupt = measure_corrupt(args.media_dir)
    claims = summarise(rows, corrupt)
    print(f"\ntotal {time.perf_counter() - started:.1f}s")
    print("BENCH_JSON " + json.dumps({"bench": "probe", "claims": claims}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
