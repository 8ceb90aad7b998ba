"""Probe cost vs recording length, 1 minute to 4 hours: bytes and seconds per file, ours vs
the fixed read ladder (512 KiB head -> 5 MB head -> last 1 MiB -> whole file), read over SMB
from a private Samba server on loopback and again through a realistic NAS link (a TCP proxy
in front of the Samba port adding 0.5 ms round trip and a 1 Gb/s limit, bench/_netlink.py).

The claim: an MP4/MOV probe costs the same few hundred KiB whatever the duration (the moov's
sample tables, ~2 MiB per hour at 25 fps, are never read), and every field the catalog
stores equals ffprobe on the whole file. MKV and MPEG-TS are measured alongside.

Long files are a tiny looped segment remuxed (`media_fixtures.make_long_video`: 64x48 at a
realistic 25 fps, so the moov is as big as a real recording's of the same length) and cached
in HP_BENCH_MEDIA_DIR (default /tmp/hybrid_pipelines_bench_media), shared with bench/probe.py.

Usage: .venv/bin/python bench/probe_growth.py [--quick]
       (full: 1, 10, 60, 120, 240 min; quick: 1, 10, 60 min; MP4 moov-at-end, MP4
        faststart and MOV at every length, MKV and MPEG-TS up to 60 min; seconds over SMB
        for the shortest, 60 min and longest files)
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _claims import claim  # bench/ is on sys.path when a script runs
from _netlink import NAS_LINK, NetLink
from _probe_ladder import differences, full_file, ladder, same_fields

from hybrid_pipelines.dev import media_fixtures as mf  # noqa: E402
from hybrid_pipelines.media_catalog.probe import probe  # noqa: E402
from hybrid_pipelines.media_catalog.range_reader import LocalFileReader, RangeReader  # noqa: E402
from hybrid_pipelines.media_catalog.rules.ffprobe_output import ProbeResult  # noqa: E402
from hybrid_pipelines.media_catalog.rules.mp4_boxes import BoxError, walk_boxes  # noqa: E402

MiB = 1024 * 1024
FLAT_GOAL = 512 * 1024
MP4_KINDS = ("mp4_moov_end", "mp4_faststart", "mov")
OTHER_KINDS = ("mkv", "ts")


def moov_size(path: Path) -> int | None:
    if path.suffix.lower() not in (".mp4", ".mov"):
        return None
    try:
        with LocalFileReader(path) as reader:
            return next((b.size for b in walk_boxes(reader) if b.type == "moov"), None)
    except BoxError:
        return None


def fmt(n: float) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", MiB), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}B"


Opener = Callable[[Path], RangeReader]


def timed(opener: Opener, path: Path, run: Callable[[RangeReader], tuple[ProbeResult, int]],
          repeat: int) -> tuple[ProbeResult, int, float]:
    """(answer, bytes, best seconds of `repeat`) including opening the file."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        reader = opener(path)
        try:
            result, read = run(reader)
        finally:
            reader.close()  # type: ignore[attr-defined]
        best = min(best, time.perf_counter() - t0)
    return result, read, best


def ours(reader: RangeReader) -> tuple[ProbeResult, int]:
    result = probe(reader)
    return result, result.bytes_read


class Smb:
    """A private Samba server holding the corpus (hard links: no copies), and openers for it
    on loopback and through the NAS link."""

    def __init__(self, stack: ExitStack, paths: list[Path]) -> None:
        from hybrid_pipelines.dev.stack.process import free_port
        from hybrid_pipelines.dev.stack.samba import SambaServer
        from hybrid_pipelines.resources import NASResource

        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-probe-")))
        server = SambaServer(root=tmp / "samba", port=free_port(),
                             password=secrets.token_hex(12))
        server.start()
        stack.callback(server.stop)
        for path in paths:
            target = server.share_dir / path.name
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)
        self.link = stack.enter_context(NetLink("127.0.0.1", server.port, **NAS_LINK))
        self.nas = {
            where: NASResource(protocol="smb", host="127.0.0.1", port=port, share=server.share,
                               username=server.username, password=server.password)
            for where, port in (("loopback", server.port), ("link", self.link.port))
        }
        for nas in self.nas.values():
            nas.fs().list_dir("")  # sessions set up outside the timings

    def opener(self, where: str) -> Opener:
        return lambda path: self.nas[where].open_reader(path.name)


def samba_missing() -> str | None:
    from hybrid_pipelines.dev.stack.samba import samba_available

    return samba_available()


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
    minutes = (1, 10, 60) if args.quick else (1, 10, 60, 120, 240)
    t0 = time.perf_counter()
    # Same parameters as bench/probe.py, so the two share cached files. MKV and TS (context,
    # not the claim) stop at an hour: their whole-file ladder steps would dominate the run.
    jobs = {(k, m): partial(mf.make_long_video, args.media_dir, k, duration_s=m * 60.0)
            for k in MP4_KINDS + OTHER_KINDS for m in minutes
            if k in MP4_KINDS or m <= 60}
    paths = mf.generate_many(jobs, workers=2)
    print(f"media ready in {time.perf_counter() - t0:.1f}s ({args.media_dir})")
    local: Opener = LocalFileReader
    wheres: dict[str, Opener] = {"local": local}
    with ExitStack() as stack:
        if why := samba_missing():
            print(f"Samba unavailable ({why}): local reads only, no seconds over SMB")
        else:
            smb = Smb(stack, list(paths.values()))
            wheres |= {"loopback": smb.opener("loopback"), "link": smb.opener("link")}
            print(f"Samba on loopback, and through a NetLink proxy of {NAS_LINK}")
        # Over SMB the ladder's whole-file steps cost seconds per file: time the shortest and
        # the longest recordings there (and MKV/TS at their longest); bytes are measured for
        # every file locally.
        over_smb = {minutes[0], 60, minutes[-1]} if args.quick else {minutes[0], minutes[-1]}
        rows = measure_all(paths, wheres, over_smb, repeat=1)
    claims = report(rows, minutes, "link" in wheres, over_smb)
    print("\nBENCH_JSON " + json.dumps({"bench": "probe_growth", "claims": claims}))
    return 0


Row = dict[str, object]


def measure_all(paths: dict[tuple[str, int], Path], wheres: dict[str, Opener],
                over_smb: set[int], repeat: int) -> list[Row]:
    print(f"\n{'file':<14} {'min':>4} {'size':>9} {'moov':>9} | {'ours':>9} {'ladder':>9} | "
          + " | ".join(f"{w + ' s ours/ladder':>24}" for w in wheres if w != "local")
          + " | fields ours/ladder")
    rows: list[Row] = []
    for (kind, m), path in paths.items():
        reference = full_file(path)
        row: Row = {"kind": kind, "min": m, "size": path.stat().st_size,
                    "moov": moov_size(path)}
        for where, opener in wheres.items():
            longest_of_kind = kind in OTHER_KINDS and m == 60
            if where != "local" and m not in over_smb and not longest_of_kind:
                row[where] = (0, float("nan"), 0, float("nan"))
                continue
            mine, mine_read, mine_s = timed(opener, path, ours, repeat)
            theirs, theirs_read, theirs_s = timed(opener, path, ladder, 1)
            row[where] = (mine_read, mine_s, theirs_read, theirs_s)
            if where == "local":
                row["ours_equal"] = same_fields(mine, reference)
                row["ladder_equal"] = same_fields(theirs, reference)
                if not row["ours_equal"]:
                    print(f"  !! {path.name}: ours differs from full ffprobe: "
                          f"{differences(mine, reference)} ({mine.error})")
        loc = row["local"]
        times = " | ".join(f"{row[w][1]:10.3f} / {row[w][3]:10.3f}"  # type: ignore[index]
                           for w in wheres if w != "local")
        moov = row["moov"]
        print(f"{kind:<14} {m:>4} {fmt(row['size']):>9} "  # type: ignore[arg-type]
              f"{fmt(moov) if moov else '-':>9} | {fmt(loc[0]):>9} "  # type: ignore[index,arg-type]
              f"{fmt(loc[2]):>9} | {times} | "  # type: ignore[index]
              f"{'=' if row['ours_equal'] else 'DIFF'} / {'=' if row['ladder_equal'] else 'DIFF'}")
        rows.append(row)
    return rows


def report(rows: list[Row], minutes: tuple[int, ...], smb: bool,
           over_smb: set[int]) -> list[dict[str, object]]:
    longest = minutes[-1]
    mp4 = [r for r in rows if r["kind"] in MP4_KINDS]
    mp4_long = [r for r in mp4 if r["min"] == longest]

    def mean(rs: list[Row], where: str, i: int) -> float:
        values = [float(r[where][i]) for r in rs]  # type: ignore[index]
        return statistics.fmean(v for v in values if v == v)  # NaN: not timed over SMB

    worst = max(float(r["local"][0]) for r in mp4)  # type: ignore[index]
    shortest = [r for r in mp4 if r["min"] == minutes[0]]
    equal = 100.0 * sum(bool(r["ours_equal"]) for r in rows) / len(rows)
    ladder_equal = 100.0 * sum(bool(r["ladder_equal"]) for r in rows) / len(rows)
    print(f"\nMP4/MOV bytes per file, worst over {minutes[0]}..{longest} min: {fmt(worst)} "
          f"(goal <= {fmt(FLAT_GOAL)}); {longest} min: ours {fmt(mean(mp4_long, 'local', 0))}"
          f" vs ladder {fmt(mean(mp4_long, 'local', 2))}")
    print(f"files whose every stored field equals full-file ffprobe: ours {equal:.0f}%, "
          f"ladder {ladder_equal:.0f}% ({len(rows)} files)")
    claims = [
        claim(f"MP4/MOV bytes read per file, worst of {minutes[0]} min..{longest} min, vs the "
              f"512 KiB goal", worst, FLAT_GOAL, "bytes"),
        claim(f"MP4/MOV bytes read per {longest} min file, ours vs fixed ladder",
              mean(mp4_long, "local", 0), mean(mp4_long, "local", 2), "bytes"),
        claim(f"MP4/MOV bytes growth {minutes[0]}->{longest} min, ours vs ladder",
              mean(mp4_long, "local", 0) / mean(shortest, "local", 0),
              mean(mp4_long, "local", 2) / mean(shortest, "local", 2), "x"),
        claim("files with every stored field equal to full-file ffprobe, ours vs ladder",
              equal, ladder_equal, "%"),
    ]
    for kind in OTHER_KINDS:
        top = max(int(r["min"]) for r in rows if r["kind"] == kind)  # type: ignore[call-overload]
        rs = [r for r in rows if r["kind"] == kind and r["min"] == top]
        claims.append(claim(f"{kind}: bytes read per {top} min file, ours vs fixed ladder",
                            mean(rs, "local", 0), mean(rs, "local", 2), "bytes"))
    if smb:
        for where in ("loopback", "link"):
            label = "SMB loopback" if where == "loopback" else "SMB via NAS link 0.5 ms/1 Gb/s"
            claims.append(claim(f"MP4/MOV seconds per {longest} min file over {label}, ours vs "
                                f"fixed ladder", mean(mp4_long, where, 1),
                                mean(mp4_long, where, 3), "s"))
            timed_rows = [r for r in rows if r[where][1] == r[where][1]]  # type: ignore[index]
            claims.append(claim(f"seconds per file over {label}, {len(timed_rows)} files of 1 "
                                f"to {longest} min, ours vs fixed ladder",
                                mean(timed_rows, where, 1), mean(timed_rows, where, 3), "s"))
    return claims


if __name__ == "__main__":
    sys.exit(main())
