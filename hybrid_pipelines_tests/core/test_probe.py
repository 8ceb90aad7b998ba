"""probe(): unit tests of the pure parts, then real ffprobe on real generated media."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hybrid_pipelines.dev import media_fixtures as mf
from hybrid_pipelines.media_catalog.probe import (
    Expected,
    FfprobeNotFoundError,
    ProbeResult,
    mkv_track_counts,
    parse_ffprobe_json,
    parse_rate,
    probe,
    probe_path,
    sniff_container,
    stderr_problems,
    ts_pids_with_pts,
    validate_ffprobe,
)
from hybrid_pipelines.media_catalog.range_reader import (
    BytesReader,
    LocalFileReader,
    ShortReadError,
    SparseFileCache,
)
from hybrid_pipelines.media_catalog.rules.mp4_boxes import walk_boxes

# --------------------------------------------------------------------------- pure units

RESULT_KEYS = [
    "path", "ok", "bytes_read", "format", "duration", "bit_rate", "video_codec", "width",
    "height", "fps", "audio_codec", "channels", "sample_rate", "error",
]  # fmt: skip


def _mp3_frame() -> bytes:
    # MPEG-1 layer III, 128 kbps, 44.1 kHz, no padding: 417-byte frames.
    return b"\xff\xfb\x90\x00" + b"\x00" * 413


def _ts(pid: int, *, pes_with_pts: bool, count: int = 4) -> bytes:
    packets = []
    for _ in range(count):
        header = bytes([0x47, 0x40 | (pid >> 8), pid & 0xFF, 0x10])
        payload = b"\x00\x00\x01\xe0\x00\x00\x80\x80\x05" + b"\x21\x00\x01\x00\x01"
        if not pes_with_pts:  # no payload-unit-start flag: a continuation, never a PTS
            header = bytes([0x47, pid >> 8, pid & 0xFF, 0x10])
        packets.append((header + payload).ljust(188, b"\xff"))
    return b"".join(packets)


@pytest.mark.parametrize(
    ("head", "container"),
    [
        (b"\x00\x00\x00\x20ftypisom" + b"\x00" * 24, "isobmff"),
        (b"\x00\x00\x00\x08wide\x00\x00\x10\x00mdat", "isobmff"),
        (b"\x1a\x45\xdf\xa3\x01\x00\x00\x00", "matroska"),
        (b"RIFF\x00\x10\x00\x00AVI LIST", "avi"),
        (b"RIFF\x00\x10\x00\x00WAVEfmt ", "wav"),
        (b"fLaC\x00\x00\x00\x22", "flac"),
        (b"OggS\x00\x02" + b"\x00" * 20, "ogg"),
        (b"ID3\x04\x00\x00\x00\x00\x01\x00" + b"\x00" * 200, "mp3"),
        (_mp3_frame() * 3, "mp3"),
        (bytes.fromhex("060e2b34020501010d01020101020400") + b"\x00" * 64, "mxf"),
        (_ts(0x100, pes_with_pts=True, count=6), "mpegts"),
        (b"\x00" * 4, None),
    ],
)
def test_sniff_container(head: bytes, container: str | None) -> None:
    sniff = sniff_container(head)
    assert (sniff.container if sniff else None) == container


def test_sniff_m2ts_and_id3_extent() -> None:
    m2ts = b"".join(b"\x00\x00\x00\x00" + p for p in [_ts(0x100, pes_with_pts=True)[:188]] * 6)
    sniff = sniff_container(m2ts)
    assert sniff is not None and (sniff.packet_size, sniff.sync_offset) == (192, 4)
    id3 = sniff_container(b"ID3\x04\x00\x00\x00\x00\x02\x00" + b"\x00" * 300)
    assert id3 is not None and id3.min_head == 10 + 256


@pytest.mark.parametrize(
    "head",
    [b"", b"hello world, this is text\n" * 100, bytes(range(256)) * 16],
)
def test_sniff_rejects_non_media(head: bytes) -> None:
    assert sniff_container(head) is None


@pytest.mark.parametrize(
    ("rate", "expected"),
    [("25/1", 25.0), ("30000/1001", 29.97), ("0/0", None), ("24/0", None), (None, None),
     ("abc", None)],
)  # fmt: skip
def test_parse_rate(rate: object, expected: float | None) -> None:
    assert parse_rate(rate) == expected


def _sample_json(**format_extra: Any) -> dict[str, Any]:
    return {
        "streams": [
            {"index": 0, "codec_type": "video", "codec_name": "mjpeg", "width": 600,
             "height": 600, "disposition": {"attached_pic": 1}},
            {"index": 1, "codec_type": "video", "codec_name": "h264", "width": 1920,
             "height": 1080, "avg_frame_rate": "0/0", "r_frame_rate": "30000/1001"},
            {"index": 2, "codec_type": "audio", "codec_name": "aac", "channels": 2,
             "sample_rate": "48000"},
        ],
        "format": {"format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": "10.000000",
                   **format_extra},
    }  # fmt: skip


def test_parse_ffprobe_json_picks_real_streams_and_computes_bit_rate() -> None:
    result = parse_ffprobe_json(_sample_json(), path="a.mp4", size=1_250_000, bytes_read=7)
    assert result == ProbeResult(
        path="a.mp4", ok=True, bytes_read=7, format="mov,mp4,m4a,3gp,3g2,mj2", duration=10.0,
        bit_rate=1_000_000, video_codec="h264", width=1920, height=1080, fps=29.97,
        audio_codec="aac", channels=2, sample_rate=48000, error=None,
    )  # fmt: skip
    assert list(result.to_json_dict()) == RESULT_KEYS
    json.dumps(result.to_json_dict())


def test_parse_ffprobe_json_bit_rate_sources() -> None:
    data = _sample_json(bit_rate="123456")
    assert parse_ffprobe_json(data, path="a", size=1_250_000).bit_rate == 123456
    # Pipe input: ffprobe never saw the file size, so its figure is not used.
    assert parse_ffprobe_json(data, path="a", size=1_250_000, trust_bit_rate=False).bit_rate == (
        1_000_000
    )


def test_parse_ffprobe_json_falls_back_to_stream_duration() -> None:
    data = _sample_json()
    del data["format"]["duration"]
    data["streams"][2]["duration"] = "9.5"
    assert parse_ffprobe_json(data, path="a", size=0).duration == 9.5


def test_validate_accepts_good_output() -> None:
    assert validate_ffprobe(_sample_json(), "", partial=True) is None


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d["streams"][1].update(codec_name="none"), "video stream 1 has no codec"),
        (lambda d: d["streams"][1].pop("width"), "video stream 1 has no frame size"),
        (lambda d: d["streams"][1].update(r_frame_rate="0/0"), "has no frame rate"),
        (lambda d: d["streams"][2].update(sample_rate="0"), "audio stream 2 has no sample"),
        (lambda d: d["format"].pop("duration"), "no duration"),
        (lambda d: d["format"].pop("format_name"), "no container format"),
        (lambda d: d.update(streams=[]), "no audio or video streams"),
    ],
)
def test_validate_rejects_incomplete_output(mutate: Any, reason: str) -> None:
    data = _sample_json()
    mutate(data)
    assert reason in (validate_ffprobe(data, "", partial=True) or "")


def test_validate_checks_expected_track_counts() -> None:
    why = validate_ffprobe(_sample_json(), "", partial=True, expected=Expected(video=1, audio=2))
    assert why == "header lists 2 audio track(s), ffprobe found 1"


DEMUXER = "mov,mp4,m4a,3gp,3g2,mj2"


def test_stderr_rules_partial_vs_whole() -> None:
    decoder_noise = "[h264 @ 0x55d1] Invalid NAL unit size (0 > 262)."
    broken = f"[{DEMUXER} @ 0x55d0] stream 1, missing mandatory atoms, broken header"
    mkv_cut = "[matroska,webm @ 0x1] File ended prematurely at pos. 734 (0x2de)"
    assert stderr_problems(decoder_noise, demuxer=DEMUXER, partial=True) == []
    assert stderr_problems(broken, demuxer=DEMUXER, partial=True) == [
        f"[{DEMUXER}] stream 1, missing mandatory atoms, broken header"
    ]
    assert stderr_problems(broken, demuxer=DEMUXER, partial=False) != []
    # Running off the end of a head we cut is expected; on a whole file it means truncation.
    assert stderr_problems(mkv_cut, demuxer="matroska,webm", partial=True) == []
    assert stderr_problems(mkv_cut, demuxer="matroska,webm", partial=False) != []
    assert stderr_problems("pipe:0: Invalid data found", demuxer=None, partial=True) != []


def test_validate_flags_silent_failure_with_exit_code_zero() -> None:
    stderr = f"[{DEMUXER} @ 0x1] stream 2, missing mandatory atoms, broken header\n"
    assert "broken header" in (validate_ffprobe(_sample_json(), stderr, partial=True) or "")


def _ebml(element_id: int, payload: bytes) -> bytes:
    id_bytes = element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")
    return id_bytes + bytes([0x80 | len(payload)]) + payload


def test_mkv_track_counts() -> None:
    def entry(kind: int) -> bytes:
        return _ebml(0xAE, _ebml(0xD7, b"\x01") + _ebml(0x83, bytes([kind])))

    assert mkv_track_counts(entry(1) + entry(2) + entry(2) + entry(17)) == Expected(1, 2)


def test_ts_pids_with_pts() -> None:
    data = b"\x12\x34" + _ts(0x100, pes_with_pts=True) + _ts(0x101, pes_with_pts=False)
    assert ts_pids_with_pts(data[2:]) == {0x100}


def test_sparse_cache_fetches_only_gaps(tmp_path: Path) -> None:
    src = BytesReader(bytes(range(256)) * 100, "x.bin")
    with SparseFileCache(src, suffix=".bin", tmp_dir=str(tmp_path)) as cache:
        assert cache.read_at(100, 50) == src._data[100:150]
        cache.ensure(0, 200)
        assert cache.bytes_read == 200
        assert cache.covered == [(0, 200)]
        cache.ensure(25_000, 10_000)  # clipped at EOF
        assert cache.covered == [(0, 200), (25_000, 25_600)]
        assert os.path.getsize(cache.path) == 25_600
        assert cache.read_cached(200, 4) == b"\x00" * 4
    assert not os.path.exists(cache.path)


def test_sparse_cache_reports_a_shrunk_source(tmp_path: Path) -> None:
    shrunk = BytesReader(b"\x00" * 10)
    shrunk.size = 1000  # as if the file lost its tail after the size was taken
    with SparseFileCache(shrunk, tmp_dir=str(tmp_path)) as cache:
        with pytest.raises(ShortReadError):
            cache.ensure(0, 100)


def test_local_reader_counts_bytes(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abcdef")
    with LocalFileReader(path) as reader:
        assert reader.size == 6
        assert reader.read_at(4, 10) == b"ef"
        assert reader.read_at(0, 2) == b"ab"
        assert reader.bytes_read == 4


# --------------------------------------------------------------------------- no ffprobe run


def test_zero_byte() -> None:
    result = probe(BytesReader(b"", "empty.mp4"))
    assert (result.ok, result.error, result.bytes_read) == (False, "zero-byte file", 0)


def test_random_bytes_are_not_media() -> None:
    result = probe(BytesReader(bytes(range(256)) * 1000, "noise.mp4"))
    assert not result.ok
    # Unknown magic is asked of ffprobe once (head and tail); no demuxer opens it.
    assert result.error and result.error.startswith(
        "not a media file (no recognised container; ffprobe: ")
    assert result.bytes_read == 128 * 1024


def test_hostile_moov_size_is_refused_without_reading_it() -> None:
    ftyp = struct.pack(">I4s", 16, b"ftyp") + b"isom\x00\x00\x00\x00"
    mdat = struct.pack(">I4s", 5000, b"mdat") + b"\x00" * 4992
    data = ftyp + mdat + struct.pack(">I4sQ", 1, b"moov", 2**40) + b"\x00" * 100
    result = probe(BytesReader(data, "hostile.mp4"))
    assert not result.ok
    assert result.error is not None and result.error.startswith("moov too large")
    assert result.bytes_read <= len(data)


# --------------------------------------------------------------------------- real ffprobe

GOOD_KINDS = [
    *mf.VIDEO_KINDS, *mf.AUDIO_KINDS, "bulky_mp4_moov_end", "bulky_mp4_faststart",
    "bulky_mkv", "bulky_ts", "long_mp4_moov_end", "unicode_name", "mkv_named_mp4",
]  # fmt: skip


def full_ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
         str(path)],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    data: dict[str, Any] = json.loads(out)
    return data


@pytest.mark.parametrize("kind", GOOD_KINDS)
def test_probe_matches_full_ffprobe(kind: str, probe_media: dict[str, Path]) -> None:
    if kind not in probe_media:
        pytest.skip(f"this ffmpeg cannot write {kind}")
    path = probe_media[kind]
    trace: list[str] = []
    result = probe_path(path, trace=trace)
    assert result.ok, (result.error, trace)
    assert result.error is None
    assert result.path == str(path)
    size = path.stat().st_size
    full = parse_ffprobe_json(full_ffprobe(path), path=str(path), size=size)
    for field in ("format", "video_codec", "width", "height", "audio_codec", "channels",
                  "sample_rate"):  # fmt: skip
        assert getattr(result, field) == getattr(full, field), (field, trace)
    assert full.duration and result.duration
    assert abs(result.duration - full.duration) <= 0.01 * full.duration, trace
    assert full.bit_rate and result.bit_rate
    assert abs(result.bit_rate - full.bit_rate) <= 0.01 * full.bit_rate
    if full.fps:
        assert result.fps and abs(result.fps - full.fps) <= 0.02 * full.fps
    assert 0 < result.bytes_read <= size


@pytest.mark.parametrize(
    "kind", ["bulky_mp4_moov_end", "bulky_mp4_faststart", "bulky_mkv", "long_mp4_moov_end"]
)
def test_partial_reads_are_much_smaller_than_the_file(
    kind: str, probe_media: dict[str, Path]
) -> None:
    path = probe_media[kind]
    size = path.stat().st_size
    assert size > 3_000_000
    result = probe_path(path)
    assert result.ok, result.error
    assert result.bytes_read < size / 10, (result.bytes_read, size)


@pytest.mark.parametrize("kind", mf.AUDIO_KINDS)
def test_audio_reads_less_than_the_file(kind: str, probe_media: dict[str, Path]) -> None:
    path = probe_media[kind]
    result = probe_path(path)
    assert result.ok, result.error
    assert result.bytes_read < path.stat().st_size


def test_moov_at_end_reads_head_headers_and_moov_only(probe_media: dict[str, Path]) -> None:
    path = probe_media["long_mp4_moov_end"]
    with LocalFileReader(path) as reader:
        moov = next(b for b in walk_boxes(reader) if b.type == "moov")
    result = probe_path(path)
    assert result.ok
    assert moov.size > 200_000
    # The moov's box headers and small boxes in 8 KiB blocks, never its sample tables.
    assert result.bytes_read <= 64 * 1024 + 16 + 16 * 8 * 1024 < moov.size


def test_mpegts_reads_head_and_tail_only(probe_media: dict[str, Path]) -> None:
    path = probe_media["bulky_ts"]
    trace: list[str] = []
    result = probe_path(path, trace=trace)
    assert result.ok and result.duration
    assert result.bytes_read < path.stat().st_size / 4
    assert trace[0].startswith("container: mpegts")
    assert trace[1].startswith("sparse head+tail: ok")


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("zero_byte", "zero-byte file"),
        ("random_bytes", "not a media file (no recognised container; ffprobe: "),
        ("text_as_mp4", "not a media file (no recognised container; ffprobe: "),
        ("truncated_mp4", "truncated: box 'mdat'"),
        ("truncated_faststart_mp4", "truncated: box 'mdat'"),
        ("huge_moov_mp4", "moov too large: box 'moov'"),
    ],
)
def test_corrupt_files_fail_with_a_reason(
    kind: str, reason: str, probe_media: dict[str, Path]
) -> None:
    result = probe_path(probe_media[kind])
    assert not result.ok
    assert result.error is not None and result.error.startswith(reason), result.error
    assert result.duration is None and result.video_codec is None


def test_truncated_matroska_is_detected(probe_media: dict[str, Path], tmp_path: Path) -> None:
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(probe_media["bulky_mkv"].read_bytes()[:1_000_000])
    result = probe_path(cut)
    assert not result.ok
    assert result.error is not None and result.error.startswith("truncated: Matroska segment")


def test_unknown_container_can_be_tried_and_is_bounded(
    probe_media: dict[str, Path], tmp_path: Path
) -> None:
    small = probe_media["random_bytes"]
    tried = probe_path(small)
    assert not tried.ok and tried.error and tried.error.startswith("not a media file")
    assert tried.bytes_read == 128 * 1024 < small.stat().st_size  # head + tail, asked once
    assert str(small) in tried.error  # names the file, not our temp copy
    big = tmp_path / "noise.bin"
    big.write_bytes(os.urandom(12 * 1024 * 1024))
    capped = probe_path(big, max_full_read_bytes=1024)
    assert not capped.ok and capped.error and capped.error.startswith("not a media file")
    assert capped.bytes_read < big.stat().st_size / 2
    refused = probe_path(small, probe_unknown=False)  # opt out: no ffprobe run at all
    assert refused.error == "not a media file (no recognised container)"
    assert refused.bytes_read == 64 * 1024


def test_timeout_is_reported_not_raised(probe_media: dict[str, Path]) -> None:
    result = probe_path(probe_media["mkv"], timeout_s=0.001)
    assert not result.ok
    assert result.error == "ffprobe timed out after 0.001s"


def test_missing_ffprobe_raises(probe_media: dict[str, Path]) -> None:
    with pytest.raises(FfprobeNotFoundError):
        probe_path(probe_media["mkv"], ffprobe_path="/nonexistent/ffprobe")


def test_reader_protocol_is_enough(probe_media: dict[str, Path]) -> None:
    data = probe_media["mp4_moov_end"].read_bytes()
    reader = BytesReader(data, "in-memory.mp4")
    result = probe(reader)
    assert result.ok and result.path == "in-memory.mp4"
    assert reader.bytes_read == result.bytes_read
