"""Flat MP4/MOV probe cost (a stand-in moov without sample tables) and containers the sniffer
does not know (asked of ffprobe, never refused unasked). Real ffmpeg/ffprobe on real files;
every stored field is compared for equality with ffprobe on the whole file."""

from __future__ import annotations

import dataclasses
import json
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hybrid_pipelines.dev import media_fixtures as mf
from hybrid_pipelines.media_catalog.probe import parse_ffprobe_json, plans, probe, probe_path
from hybrid_pipelines.media_catalog.range_reader import (
    BlockReader,
    BytesReader,
    LocalFileReader,
    SparseFileCache,
)
from hybrid_pipelines.media_catalog.rules.ffprobe_output import ProbeResult
from hybrid_pipelines.media_catalog.rules.mp4_boxes import parse_box_header, walk_boxes
from hybrid_pipelines.media_catalog.rules.mp4_skeleton import (
    MoovSkeleton,
    SkeletonError,
    fold_stts,
    moov_skeleton,
)

KiB = 1024
# Every field the catalog stores from a probe (ProbeResult minus where and how it was read).
STORED = [f.name for f in dataclasses.fields(ProbeResult) if f.name not in ("path", "bytes_read")]


def full_result(path: Path) -> ProbeResult:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
         str(path)], capture_output=True, check=True, timeout=60).stdout  # fmt: skip
    data: dict[str, Any] = json.loads(out)
    return parse_ffprobe_json(data, path=str(path), size=path.stat().st_size)


def assert_same_as_full(path: Path, result: ProbeResult, trace: list[str]) -> None:
    assert result.ok, (result.error, trace)
    full = full_result(path)
    diff = {f: (getattr(result, f), getattr(full, f)) for f in STORED
            if getattr(result, f) != getattr(full, f)}
    assert not diff, (diff, trace)


def moov_of(path: Path) -> Any:
    with LocalFileReader(path) as reader:
        return next(b for b in walk_boxes(reader) if b.type == "moov")


# --------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize("entries", [
    [(1000, 512)], [(10, 3), (5, 4), (1, 7)], [(1, 1), (1, 2), (1, 4)], [(7, 1001)] * 600,
])  # fmt: skip
def test_fold_stts_keeps_the_sums(entries: list[tuple[int, int]]) -> None:
    folded = fold_stts(entries)
    assert 1 <= len(folded) <= 2
    assert sum(c for c, _ in folded) == sum(c for c, _ in entries)
    assert sum(c * d for c, d in folded) == sum(c * d for c, d in entries)


def test_skeleton_has_the_moov_size_and_drops_the_tables(probe_media: dict[str, Path]) -> None:
    path = probe_media["long_mp4_moov_end"]
    data = path.read_bytes()
    moov = moov_of(path)
    skeleton = moov_skeleton(BytesReader(data), moov, max_table_bytes=1 << 20)
    assert skeleton.handlers == ["vide", "soun"] and not skeleton.fragmented
    top = parse_box_header(skeleton.data[:16], 0, moov.size)
    assert (top.type, top.size) == ("moov", moov.size)
    # It ends in a free box that runs exactly to the end of the original moov.
    pad, kind = struct.unpack(">I4s", skeleton.data[-8:])
    assert kind == b"free" and len(skeleton.data) - 8 + pad == moov.size
    assert len(skeleton.data) < 8 * KiB < moov.size
    for table in (b"stss", b"ctts", b"stco\x00\x00\x00\x00\x00\x00\x00\x01"):
        assert table not in skeleton.data


def test_skeleton_refuses_hostile_and_tableless_moovs() -> None:
    with pytest.raises(SkeletonError):  # no track at all
        moov = struct.pack(">I4s", 8 + 8, b"moov") + struct.pack(">I4s", 8, b"junk")
        moov_skeleton(BytesReader(moov), parse_box_header(moov, 0, len(moov)),
                      max_table_bytes=1024)


def test_patch_is_undone_and_block_reads_are_aligned(tmp_path: Path) -> None:
    data = bytes(range(256)) * 256  # 64 KiB
    with SparseFileCache(BytesReader(data), tmp_dir=str(tmp_path)) as cache:
        cache.ensure(0, 100)
        with cache.patched(((50, b"X" * 100),)):
            assert cache.read_cached(40, 120) == data[40:50] + b"X" * 100 + bytes(10)
        assert cache.read_cached(0, 160) == data[:100] + bytes(60)  # fetched bytes kept
        assert cache.bytes_read == 100 and cache.covered == [(0, 100)]
        blocks = BlockReader(cache, 1000, 20_000, 4096)
        assert blocks.read_at(5000, 16) == data[5000:5016]
        assert cache.covered == [(0, 100), (1000, 5096)]  # the block holding the header
        assert blocks.read_at(5020, 16) == data[5020:5036]
        assert cache.bytes_read == 100 + 4096  # one fetch for both headers


# --------------------------------------------------------------------------- real ffprobe

SKELETON_KINDS = ["mp4_moov_end", "mp4_faststart", "mov", "m4a", "bulky_mp4_moov_end",
                  "bulky_mp4_faststart", "long_mp4_moov_end", "unicode_name"]


@pytest.mark.parametrize("kind", SKELETON_KINDS)
def test_stand_in_moov_gives_every_stored_field_of_full_ffprobe(
    kind: str, probe_media: dict[str, Path]
) -> None:
    path = probe_media[kind]
    trace: list[str] = []
    result = probe_path(path, trace=trace)
    assert trace[1].startswith("sparse stand-in moov (no sample tables): ok"), trace
    assert_same_as_full(path, result, trace)


def test_long_moov_costs_a_few_blocks_not_the_moov(probe_media: dict[str, Path]) -> None:
    path = probe_media["long_mp4_moov_end"]  # 20 min: a moov of ~760 KB
    moov = moov_of(path)
    result = probe_path(path)
    assert result.ok and moov.size > 500 * KiB
    assert result.bytes_read <= 64 * KiB + 16 * 8 * KiB, result.bytes_read


@pytest.mark.parametrize("kind", ["mov_long", "mp4_faststart_long"])
def test_hour_long_mov_and_faststart_stay_flat(
    kind: str, tmp_path_factory: pytest.TempPathFactory, ffprobe_bin: str
) -> None:
    out = tmp_path_factory.mktemp("long")
    path = mf.make_long_video(out, kind.removesuffix("_long"), duration_s=3600.0, width=32,
                              height=32)
    trace: list[str] = []
    result = probe_path(path, trace=trace)
    assert_same_as_full(path, result, trace)
    assert moov_of(path).size > 2_000_000
    assert result.bytes_read <= 512 * KiB, result.bytes_read


@pytest.mark.fault("stand-in moov rejected by ffprobe -> full moov read, same answer",
                   kind="patched exception")
def test_a_rejected_stand_in_falls_back_to_the_real_moov(
    probe_media: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No real file makes ffprobe reject a well-formed stand-in, so one is broken on purpose:
    the patch must be undone and the real moov read."""
    real = plans.moov_skeleton

    def broken(*args: Any, **kw: Any) -> MoovSkeleton:
        good = real(*args, **kw)
        return dataclasses.replace(good, data=good.data[:8] + b"\xff" * (len(good.data) - 8))

    monkeypatch.setattr(plans, "moov_skeleton", broken)
    path = probe_media["mp4_moov_end"]
    trace: list[str] = []
    result = probe_path(path, trace=trace)
    assert trace[1].startswith("sparse stand-in moov (no sample tables): partial read"), trace
    assert_same_as_full(path, result, trace)
    assert result.bytes_read >= moov_of(path).size


def test_fragmented_mp4_keeps_its_own_plan(probe_media: dict[str, Path]) -> None:
    trace: list[str] = []
    result = probe_path(probe_media["mp4_fragmented"], trace=trace)
    assert result.ok, trace
    assert not any("stand-in moov (no sample tables): ok" in line for line in trace)


# --------------------------------------------------------------------------- unknown containers


@pytest.fixture(scope="module")
def extra_media(tmp_path_factory: pytest.TempPathFactory, ffprobe_bin: str) -> dict[str, Path]:
    if not mf.ffmpeg_available():
        pytest.skip("ffmpeg is not installed (apt-get install ffmpeg)")
    out = tmp_path_factory.mktemp("extra-media")
    return mf.generate_many({
        "dv": lambda: mf.make_extra(out, "dv", duration_s=1.0),
        "dv_big": lambda: mf.make_extra(out, "dv", duration_s=5.0),  # 18 MB: over 16 MiB
        "gxf": lambda: mf.make_extra(out, "gxf", duration_s=2.0),
        "flv": lambda: mf.make_extra(out, "flv", duration_s=20.0),
    })


@pytest.mark.parametrize("kind", ["dv", "gxf"])
def test_unsniffed_camera_and_broadcast_formats_were_refused(
    kind: str, extra_media: dict[str, Path]
) -> None:
    """The reproduction: refusing unknown magic without asking ffprobe (the old default,
    still available as probe_unknown=False) calls valid DV and GXF "not a media file"."""
    result = probe_path(extra_media[kind], probe_unknown=False)
    assert result.error == "not a media file (no recognised container)"
    assert full_result(extra_media[kind]).ok


@pytest.mark.parametrize("kind", ["dv", "dv_big", "gxf"])
def test_unsniffed_formats_are_asked_of_ffprobe(kind: str, extra_media: dict[str, Path]) -> None:
    path = extra_media[kind]
    trace: list[str] = []
    result = probe_path(path, trace=trace)
    assert trace[0].startswith("container: unknown"), trace
    assert_same_as_full(path, result, trace)
    if kind == "dv_big":  # past 16 MiB: a 4 MiB head and 1 MiB tail, not the whole file
        assert result.bytes_read <= 5 * 1024 * KiB < path.stat().st_size


def test_flv_reads_head_and_tail(extra_media: dict[str, Path]) -> None:
    path = extra_media["flv"]
    trace: list[str] = []
    result = probe_path(path, trace=trace)
    assert_same_as_full(path, result, trace)
    assert trace[1].startswith("sparse head+64 KiB tail: ok"), trace
    assert result.bytes_read <= 128 * KiB < path.stat().st_size


def test_bytes_no_demuxer_opens_are_not_media_after_one_ask(tmp_path: Path) -> None:
    noise = bytes((i * 7919) % 251 for i in range(3 * 1024 * KiB))
    trace: list[str] = []
    result = probe(BytesReader(noise, "noise.bin"), trace=trace)
    assert not result.ok and result.error
    assert result.error.startswith("not a media file (no recognised container; ffprobe: ")
    assert "noise.bin" in result.error  # names the file, not our temp copy
    assert result.bytes_read == 128 * KiB  # head and tail once; no whole-file read
