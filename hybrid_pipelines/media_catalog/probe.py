"""Media probing that reads only what the container needs.

ffprobe on a whole remote file costs the whole file (or, through a naive seekable shim, far
more than ffprobe consumes). Instead we sniff the container from the first bytes and hand
ffprobe the smallest input that carries the metadata:

* MKV/WebM, faststart MP4/MOV: the head, up to the first media payload, on stdin.
* MP4/MOV with the moov after the mdat: a sparse temp file holding the head and the exact
  moov at their true offsets (the box walk costs one small read per top-level box).
* MPEG-TS: a sparse file with the head and a tail that holds a timestamp for every stream.
* Everything else: a sparse head, then head+tail, then bigger, then the whole file.

Every answer is validated (streams complete, duration > 0, stderr clean) before it is
trusted; a failed check escalates to a bigger read. Reader I/O errors propagate, so callers
can retry them instead of recording a healthy file as broken.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from hybrid_pipelines.media_catalog.range_reader import (
    CountingReader,
    LocalFileReader,
    RangeReader,
    ShortReadError,
    SparseFileCache,
)
from hybrid_pipelines.media_catalog.rules.mp4_boxes import (
    DEFAULT_MAX_MOOV_BYTES,
    Box,
    BoxError,
    BoxTooLargeError,
    TruncatedBoxError,
    iter_boxes,
    parse_moov,
)

KiB = 1024
MiB = 1024 * KiB

DEFAULT_HEAD_BYTES = 64 * KiB
# TS has no header: stream parameters come from the first packets, so the head must carry
# a few frames of every stream even at broadcast bit rates.
TS_HEAD_BYTES = 256 * KiB
TS_MIN_TAIL_BYTES = 64 * KiB
TS_MAX_TAIL_BYTES = 8 * MiB
# Past this much non-moov data before the mdat, a pipe would carry it all; the sparse file
# can leave it as zeros instead.
PIPE_MAX_EXTRA_BYTES = 1 * MiB
MKV_MAX_HEADER_BYTES = 64 * MiB
ID3_MAX_HEAD_BYTES = 16 * MiB
# A plain MP4 has a handful of top-level boxes; more before the moov means a hostile file.
MAX_LAYOUT_BOXES = 10_000
# 100k fragments is a day of 1 s fragments; each costs two small reads.
MAX_FRAGMENT_BOXES = 200_000
MKV_MAX_HEADER_ELEMENTS = 10_000
# Small top-level MP4 boxes are fetched whole for a sparse file; media payload and padding
# stay zeros, and the moov is fetched on its own, under its own cap.
METADATA_BOX_MAX_BYTES = 1 * MiB
_PAYLOAD_BOXES = frozenset({"mdat", "free", "skip", "wide", "moov"})
ESCALATION_HEAD_BYTES = 4 * MiB
ESCALATION_TAIL_BYTES = 1 * MiB
GENERIC_TAIL_BYTES = 256 * KiB
# Containers whose duration ffmpeg takes from the last timestamps in the file (Ogg granule
# positions, MPEG-PS/ES PTS, FLV's last tag) rather than from a header.
_DURATION_AT_END = frozenset({"ogg", "mpegps", "mpegvideo", "flv", "unknown"})


# --------------------------------------------------------------------------- result


@dataclass
class ProbeResult:
    path: str
    ok: bool
    bytes_read: int
    format: str | None = None
    duration: float | None = None
    bit_rate: int | None = None
    video_codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    audio_codec: str | None = None
    channels: int | None = None
    sample_rate: int | None = None
    error: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class FfprobeNotFoundError(RuntimeError):
    """The ffprobe binary is missing: a broken environment, not a broken media file, so it is
    raised rather than recorded against every file."""


class _ProbeFailure(Exception):
    """A definitive verdict on the file; no bigger read can change it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Expected:
    """Minimum stream counts the container's own header promises."""

    video: int = 0
    audio: int = 0


# --------------------------------------------------------------------------- sniffing


@dataclass(frozen=True)
class Sniff:
    container: str  # isobmff, matroska, mpegts, avi, wav, mxf, mp3, flac, ogg, ...
    packet_size: int = 0  # mpegts: 188 or 192 (M2TS)
    sync_offset: int = 0  # mpegts: where 0x47 sits in each packet
    min_head: int = 0  # bytes the header is known to need (e.g. an ID3 tag)


_ISO_TOP_TYPES = {
    b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid",
    b"sidx", b"moof", b"junk",
}  # fmt: skip
_MXF_PARTITION_KEY = bytes.fromhex("060e2b34020501010d01020101")
_ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_SIMPLE_MAGICS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x1a\x45\xdf\xa3", "matroska"),
    (0, b"fLaC", "flac"),
    (0, b"OggS", "ogg"),
    (0, b"caff", "caf"),
    (0, b"FLV\x01", "flv"),
    (0, b".RMF", "realmedia"),
    (0, b"#!AMR", "amr"),
    (0, _ASF_GUID, "asf"),
    (0, b"\x00\x00\x01\xba", "mpegps"),
    (0, b"\x00\x00\x01\xb3", "mpegvideo"),
)


def _sniff_riff(head: bytes) -> str | None:
    if head[:4] not in (b"RIFF", b"RF64") or len(head) < 12:
        return None
    return {b"AVI ": "avi", b"AVIX": "avi", b"WAVE": "wav"}.get(head[8:12])


def _sniff_iso(head: bytes) -> bool:
    if len(head) < 8 or head[4:8] not in _ISO_TOP_TYPES:
        return False
    size = int.from_bytes(head[:4], "big")
    return size in (0, 1) or size >= 8


def _ts_layout(head: bytes) -> tuple[int, int, int] | None:
    """(packet_size, sync_offset, first_packet) if the head is a run of TS packets."""
    for packet_size, sync_offset in ((188, 0), (192, 4)):
        for start in range(packet_size):
            count = min(5, (len(head) - start - sync_offset - 1) // packet_size + 1)
            if count < 2:
                break
            if all(head[start + sync_offset + k * packet_size] == 0x47 for k in range(count)):
                return packet_size, sync_offset, start
    return None


_MP3_BITRATES = {
    (3, 3): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (3, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (3, 1): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (2, 3): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (2, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (2, 1): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mpeg_audio_frame(head: bytes, pos: int) -> tuple[int, int] | None:
    """(frame_length, header_signature) of an MPEG audio frame header at pos, if valid."""
    if pos + 4 > len(head) or head[pos] != 0xFF or head[pos + 1] & 0xE0 != 0xE0:
        return None
    version = (head[pos + 1] >> 3) & 3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5, 1: reserved
    layer = (head[pos + 1] >> 1) & 3  # 3: layer I, 2: layer II, 1: layer III
    bitrate_index = head[pos + 2] >> 4
    rate_index = (head[pos + 2] >> 2) & 3
    if version == 1 or layer == 0 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    kbps = _MP3_BITRATES[(3 if version == 3 else 2, layer)][bitrate_index]
    rate = _MP3_RATES[version][rate_index]
    padding = (head[pos + 2] >> 1) & 1
    if layer == 3:
        length = (12 * kbps * 1000 // rate + padding) * 4
    elif layer == 1 and version != 3:
        length = 72 * kbps * 1000 // rate + padding
    else:
        length = 144 * kbps * 1000 // rate + padding
    return length, (version << 4) | (layer << 2) | rate_index


def _sniff_mpeg_audio(head: bytes, pos: int = 0) -> bool:
    # Two consecutive consistent frame headers: a lone 0xFFEx pair is common in random data.
    first = _mpeg_audio_frame(head, pos)
    if first is None:
        return False
    second = _mpeg_audio_frame(head, pos + first[0])
    return second is not None and second[1] == first[1]


def _sniff_adts(head: bytes, pos: int = 0) -> bool:
    def frame_len(p: int) -> int | None:
        if p + 7 > len(head) or head[p] != 0xFF or head[p + 1] & 0xF6 != 0xF0:
            return None
        n = ((head[p + 3] & 3) << 11) | (head[p + 4] << 3) | (head[p + 5] >> 5)
        return n if n >= 7 else None

    first = frame_len(pos)
    return first is not None and frame_len(pos + first) is not None


def _id3_end(head: bytes) -> int | None:
    if len(head) < 10 or head[:3] != b"ID3":
        return None
    size = 0
    for byte in head[6:10]:
        if byte & 0x80:
            return None  # sizes are syncsafe: a set top bit means this is not a tag
        size = (size << 7) | byte
    footer = 10 if head[5] & 0x10 else 0
    return 10 + size + footer


def sniff_container(head: bytes) -> Sniff | None:
    """Identify the container from the first bytes of a file; None when nothing matches."""
    if _sniff_iso(head):
        return Sniff("isobmff")
    for offset, magic, name in _SIMPLE_MAGICS:
        if head[offset : offset + len(magic)] == magic:
            return Sniff(name)
    riff = _sniff_riff(head)
    if riff:
        return Sniff(riff)
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return Sniff("aiff")
    id3_end = _id3_end(head)
    if id3_end is not None:
        return Sniff("mp3", min_head=id3_end)
    if head.find(_MXF_PARTITION_KEY, 0, 64 * KiB) >= 0:
        return Sniff("mxf")
    ts = _ts_layout(head)
    if ts:
        return Sniff("mpegts", packet_size=ts[0], sync_offset=ts[1])
    if _sniff_mpeg_audio(head):
        return Sniff("mp3")
    if _sniff_adts(head):
        return Sniff("aac")
    return None


# --------------------------------------------------------------------------- ffprobe output


def parse_rate(rate: object) -> float | None:
    """'30000/1001' -> 29.97; None for missing, zero or malformed rates."""
    if not isinstance(rate, str) or "/" not in rate:
        return None
    num, _, den = rate.partition("/")
    try:
        n, d = float(num), float(den)
    except ValueError:
        return None
    if n <= 0 or d <= 0:
        return None
    return round(n / d, 3)


def _positive_int(value: object) -> int | None:
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _positive_float(value: object) -> float | None:
    try:
        number = float(str(value))
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _streams(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    streams = data.get("streams")
    return [s for s in streams if isinstance(s, Mapping)] if isinstance(streams, list) else []


def _is_attached_pic(stream: Mapping[str, Any]) -> bool:
    # Cover art shows up as a one-frame video stream; it says nothing about the media.
    disposition = stream.get("disposition")
    return isinstance(disposition, Mapping) and disposition.get("attached_pic") == 1


def _video_streams(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [s for s in _streams(data) if s.get("codec_type") == "video" and not _is_attached_pic(s)]


def _audio_streams(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [s for s in _streams(data) if s.get("codec_type") == "audio"]


def _codec(stream: Mapping[str, Any]) -> str | None:
    name = stream.get("codec_name")
    return name if isinstance(name, str) and name and name != "none" else None


def _fps(stream: Mapping[str, Any]) -> float | None:
    return parse_rate(stream.get("avg_frame_rate")) or parse_rate(stream.get("r_frame_rate"))


def _format(data: Mapping[str, Any]) -> Mapping[str, Any]:
    fmt = data.get("format")
    return fmt if isinstance(fmt, Mapping) else {}


def ffprobe_duration(data: Mapping[str, Any]) -> float | None:
    """The container duration, else the longest stream duration."""
    duration = _positive_float(_format(data).get("duration"))
    if duration is not None:
        return duration
    durations = [_positive_float(s.get("duration")) for s in _streams(data)]
    return max((d for d in durations if d is not None), default=None)


def parse_ffprobe_json(
    data: Mapping[str, Any],
    *,
    path: str,
    size: int,
    bytes_read: int = 0,
    trust_bit_rate: bool = True,
) -> ProbeResult:
    """Turn `ffprobe -show_format -show_streams` JSON into a ProbeResult (ok=True).

    `trust_bit_rate=False` is for input ffprobe saw only part of (stdin): its bit rate is
    then absent or nominal, so size*8/duration over the true size is used instead.
    """
    fmt = _format(data)
    duration = ffprobe_duration(data)
    bit_rate = _positive_int(fmt.get("bit_rate")) if trust_bit_rate else None
    if bit_rate is None and duration:
        bit_rate = int(size * 8 / duration)
    video = next(iter(_video_streams(data)), None)
    audio = next(iter(_audio_streams(data)), None)
    format_name = fmt.get("format_name")
    return ProbeResult(
        path=path,
        ok=True,
        bytes_read=bytes_read,
        format=format_name if isinstance(format_name, str) else None,
        duration=duration,
        bit_rate=bit_rate,
        video_codec=_codec(video) if video else None,
        width=_positive_int(video.get("width")) if video else None,
        height=_positive_int(video.get("height")) if video else None,
        fps=_fps(video) if video else None,
        audio_codec=_codec(audio) if audio else None,
        channels=_positive_int(audio.get("channels")) if audio else None,
        sample_rate=_positive_int(audio.get("sample_rate")) if audio else None,
    )


_LOG_LINE = re.compile(r"^\[(?P<ctx>[^\]]+?) @ 0x[0-9a-fA-F]+\]\s*(?P<msg>.*)$")
# What a demuxer says when it reaches the end of the part we chose to give it, or crosses
# the zero-filled gaps of a sparse file. Harmless there, alarming on a whole file.
_EXPECTED_WHEN_PARTIAL = (
    "File ended prematurely",
    "max resync size reached",
    "Packet corrupt",
)
_SUSPICIOUS = (
    "broken header",
    "missing mandatory atoms",
    "moov atom not found",
    "partial file",
    "invalid data found",
    "error reading header",
    "truncat",
    "file ended prematurely",
    "exceeds containing master element",
    "as first byte of an ebml number",
    "contradictionary stsc and stco",
    "end of file",
)
_TRUNCATION_HINTS = (
    "partial file",
    "moov atom not found",
    "file ended prematurely",
    "truncat",
    "end of file",
)


def _clean_line(line: str) -> str:
    match = _LOG_LINE.match(line)
    return f"[{match['ctx']}] {match['msg']}" if match else line


def stderr_problems(stderr: str, *, demuxer: str | None, partial: bool) -> list[str]:
    """Lines of ffprobe's stderr that cast doubt on its answer.

    Decoder messages are ignored on partial input: they come from feeding zeros or a cut
    sample to a decoder, while the metadata comes from the container. On partial input any
    other demuxer error counts; on a whole file only the known-bad patterns do (a whole file
    with a few damaged samples still has trustworthy metadata).
    """
    problems: list[str] = []
    for raw in stderr.splitlines():
        line = raw.strip()
        if not line or line.startswith("Last message repeated"):
            continue
        match = _LOG_LINE.match(line)
        ctx = match["ctx"] if match else None
        msg = match["msg"] if match else line
        from_container = ctx is None or ctx == demuxer
        if partial:
            if from_container and not any(p in msg for p in _EXPECTED_WHEN_PARTIAL):
                problems.append(_clean_line(line))
        elif from_container and any(p in msg.lower() for p in _SUSPICIOUS):
            problems.append(_clean_line(line))
    return problems


def _check_streams(
    data: Mapping[str, Any], *, partial: bool, expected: Expected | None
) -> str | None:
    video, audio = _video_streams(data), _audio_streams(data)
    if not video and not audio:
        return "no audio or video streams"
    if expected and len(video) < expected.video:
        return f"header lists {expected.video} video track(s), ffprobe found {len(video)}"
    if expected and len(audio) < expected.audio:
        return f"header lists {expected.audio} audio track(s), ffprobe found {len(audio)}"
    for s in video:
        index = s.get("index")
        if _codec(s) is None:
            return f"video stream {index} has no codec"
        if _positive_int(s.get("width")) is None or _positive_int(s.get("height")) is None:
            return f"video stream {index} has no frame size"
        if partial and _fps(s) is None:
            return f"video stream {index} has no frame rate"
    for s in audio:
        index = s.get("index")
        if _codec(s) is None:
            return f"audio stream {index} has no codec"
        if _positive_int(s.get("sample_rate")) is None or _positive_int(s.get("channels")) is None:
            return f"audio stream {index} has no sample rate or channel count"
    return None


def validate_ffprobe(
    data: Mapping[str, Any],
    stderr: str = "",
    *,
    partial: bool,
    expected: Expected | None = None,
) -> str | None:
    """Why ffprobe's answer can't be trusted, or None if it can. Exit code 0 is not enough:
    ffprobe drops a stream with a broken header, or misses the duration, and still succeeds."""
    format_name = _format(data).get("format_name")
    if not isinstance(format_name, str) or not format_name:
        return "ffprobe reported no container format"
    reason = _check_streams(data, partial=partial, expected=expected)
    if reason:
        return reason
    if ffprobe_duration(data) is None:
        return "no duration"
    problems = stderr_problems(stderr, demuxer=format_name, partial=partial)
    if problems:
        return f"ffprobe reported: {problems[0]}"
    return None


# --------------------------------------------------------------------------- running ffprobe


@dataclass(frozen=True)
class _Run:
    returncode: int
    stdout: bytes
    stderr: str


def _run_ffprobe(
    target: str, *, ffprobe_path: str, timeout_s: float, stdin_data: bytes | None
) -> _Run:
    cmd = [
        ffprobe_path, "-hide_banner", "-v", "error", "-print_format", "json",
        "-show_format", "-show_streams", target,
    ]  # fmt: skip
    try:
        # run() kills the child on timeout before re-raising, so nothing is left behind.
        proc = subprocess.run(
            cmd,
            input=stdin_data,
            stdin=None if stdin_data is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError as exc:
        raise FfprobeNotFoundError(f"ffprobe not found: {ffprobe_path}") from exc
    except subprocess.TimeoutExpired as exc:
        raise _ProbeFailure(f"ffprobe timed out after {timeout_s:g}s") from exc
    return _Run(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Attempt:
    """One ffprobe run: fetch `ranges` (offset, length) into the cache, then feed ffprobe
    either the first `pipe_bytes` on stdin or the whole sparse cache file."""

    label: str
    mode: Literal["pipe", "file"]
    ranges: tuple[tuple[int, int], ...] = ()
    pipe_bytes: int = 0
    expected: Expected | None = None


@dataclass(frozen=True)
class _Options:
    ffprobe_path: str
    timeout_s: float
    head_bytes: int
    max_moov_bytes: int
    max_full_read_bytes: int | None
    probe_unknown: bool


@dataclass
class _Ctx:
    cache: SparseFileCache
    opts: _Options
    sniff: Sniff
    trace: list[str] | None = None

    @property
    def size(self) -> int:
        return self.cache.size

    def tail(self, length: int) -> tuple[int, int]:
        start = max(0, self.size - length)
        return start, self.size - start


# ISO-BMFF ------------------------------------------------------------------


@dataclass
class _IsoLayout:
    boxes: list[Box]
    moov: Box
    mdat: Box | None
    resume_at: int | None  # where the walk stopped early (fragmented files), else None


def _box_failure(exc: BoxError) -> _ProbeFailure:
    if isinstance(exc, TruncatedBoxError):
        return _ProbeFailure(f"truncated: {exc}")
    if isinstance(exc, BoxTooLargeError):
        return _ProbeFailure(f"moov too large: {exc}")
    return _ProbeFailure(f"corrupt MP4/MOV structure: {exc}")


def _iso_layout(ctx: _Ctx) -> _IsoLayout:
    boxes: list[Box] = []
    moov: Box | None = None
    mdat: Box | None = None
    resume_at: int | None = None
    walker = iter_boxes(
        ctx.cache, max_boxes=MAX_LAYOUT_BOXES, max_moov_bytes=ctx.opts.max_moov_bytes
    )
    try:
        for box in walker:
            boxes.append(box)
            if box.type == "moov" and moov is None:
                moov = box
            elif box.type == "mdat" and mdat is None:
                mdat = box
            elif box.type == "moof" and moov is not None:
                # Fragmented: thousands of boxes may follow; walk them only if needed.
                resume_at = box.end
                break
    except BoxError as exc:
        if moov is None or mdat is None:
            raise _box_failure(exc) from exc
        # Junk after a complete moov and mdat (e.g. zero padding) does not stop ffprobe.
        _log(ctx, f"ignored trailing data: {exc}")
    if moov is None:
        kinds = ",".join(b.type for b in boxes[:8])
        raise _ProbeFailure(f"truncated: no moov box (top-level boxes: {kinds})")
    return _IsoLayout(boxes, moov, mdat, resume_at)


def _fetch_metadata(ctx: _Ctx, box: Box) -> None:
    """Fetch a small top-level box that is not media payload (moof, sidx, styp, meta...):
    left as zeros in the sparse file it would read as garbage to the demuxer."""
    if box.type not in _PAYLOAD_BOXES and box.size <= METADATA_BOX_MAX_BYTES:
        # Also take the next box header in the same read: one round trip, not two.
        ctx.cache.ensure(box.offset, box.size + 16)


def _fetch_fragments(ctx: _Ctx, start: int) -> bool:
    """Fetch every moof (and sidx...) after `start` so ffprobe can sum the fragment
    durations; False if the walk had to give up (the answer would then be silently short)."""
    try:
        for box in iter_boxes(ctx.cache, start=start, max_boxes=MAX_FRAGMENT_BOXES):
            _fetch_metadata(ctx, box)
    except TruncatedBoxError as exc:
        raise _box_failure(exc) from exc
    except BoxError as exc:
        _log(ctx, f"fragment walk gave up: {exc}")
        return False
    return True


def _plan_isobmff(ctx: _Ctx) -> Iterator[Attempt]:
    layout = _iso_layout(ctx)
    moov = layout.moov
    ctx.cache.ensure(moov.offset, moov.size)
    try:
        info = parse_moov(ctx.cache.read_cached(moov.offset, moov.size))
    except BoxError as exc:
        raise _ProbeFailure(f"corrupt MP4/MOV structure: moov: {exc}") from exc
    expected = Expected(video=info.video_tracks, audio=info.audio_tracks)
    for box in layout.boxes:
        _fetch_metadata(ctx, box)
    if info.fragmented and not info.has_fragment_duration:
        # Without mehd the duration is the sum of all fragments: every moof is needed.
        if layout.resume_at is None or _fetch_fragments(ctx, layout.resume_at):
            yield Attempt("sparse moov+all moofs", "file", expected=expected)
        return
    mdat = layout.mdat
    if mdat is not None and moov.end <= mdat.offset:
        pipe_len = mdat.payload_offset
        if pipe_len - moov.size <= ctx.opts.head_bytes + PIPE_MAX_EXTRA_BYTES:
            # Stop right after the mdat header: a cut sample upsets the decoders, while no
            # sample at all lets ffprobe take everything from the moov.
            yield Attempt("pipe head through moov", "pipe", ((0, pipe_len),), pipe_len, expected)
    yield Attempt("sparse head+moov", "file", expected=expected)
    yield Attempt(
        "sparse 4 MiB head+moov+tail",
        "file",
        ((0, ESCALATION_HEAD_BYTES), ctx.tail(ESCALATION_TAIL_BYTES)),
        expected=expected,
    )


# Matroska ------------------------------------------------------------------

_EBML_ID = 0x1A45DFA3
_SEGMENT_ID = 0x18538067
_CLUSTER_ID = 0x1F43B675
_TRACKS_ID = 0x1654AE6B
_TRACK_ENTRY_ID = 0xAE
_TRACK_TYPE_ID = 0x83


class _EbmlError(ValueError):
    pass


def _vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int | None, int]:
    """EBML variable-length integer at pos: (value, length); value None for 'unknown'."""
    if pos >= len(data) or data[pos] == 0:
        raise _EbmlError(f"invalid EBML number at {pos}")
    first = data[pos]
    length = 8 - first.bit_length() + 1
    if pos + length > len(data):
        raise _EbmlError(f"EBML number at {pos} cut off")
    value = first if keep_marker else first & ((1 << (8 - length)) - 1)
    all_ones = value == (1 << (8 - length)) - 1
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
        all_ones = all_ones and byte == 0xFF
    return (None if all_ones and not keep_marker else value), length


def _ebml_element(data: bytes, pos: int) -> tuple[int, int | None, int]:
    """(id, payload size or None if unknown, header length) of the element at pos."""
    element_id, id_len = _vint(data, pos, keep_marker=True)
    if id_len > 4 or element_id is None:
        raise _EbmlError(f"invalid EBML element id at {pos}")
    size, size_len = _vint(data, pos + id_len, keep_marker=False)
    return element_id, size, id_len + size_len


def _ebml_children(data: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos < len(data):
        element_id, size, header = _ebml_element(data, pos)
        if size is None:
            return
        yield element_id, data[pos + header : pos + header + size]
        pos += header + size


def mkv_track_counts(tracks_payload: bytes) -> Expected:
    """Video/audio track counts from the payload of a Matroska Tracks element."""
    video = audio = 0
    for element_id, entry in _ebml_children(tracks_payload):
        if element_id != _TRACK_ENTRY_ID:
            continue
        for child_id, value in _ebml_children(entry):
            if child_id == _TRACK_TYPE_ID:
                kind = int.from_bytes(value, "big")
                video += kind == 1
                audio += kind == 2
    return Expected(video=video, audio=audio)


@dataclass(frozen=True)
class _MkvLayout:
    head_end: int  # just past the first Cluster's header
    expected: Expected | None


def _mkv_element_at(ctx: _Ctx, pos: int) -> tuple[int, int | None, int]:
    return _ebml_element(ctx.cache.read_at(pos, 12), 0)


def _mkv_layout(ctx: _Ctx) -> _MkvLayout | None:
    """Walk the EBML header and the Segment's children up to the first Cluster, one header
    read each. None if the layout is unusual; raises _ProbeFailure if it is truncated."""
    size = ctx.size
    try:
        element_id, ebml_size, header = _mkv_element_at(ctx, 0)
        if element_id != _EBML_ID or ebml_size is None:
            return None
        pos = header + ebml_size
        element_id, segment_size, header = _mkv_element_at(ctx, pos)
        if element_id != _SEGMENT_ID:
            return None
        pos += header
        if segment_size is not None and pos + segment_size > size:
            raise _ProbeFailure(
                f"truncated: Matroska segment declares {segment_size} bytes, "
                f"only {size - pos} present"
            )
        expected: Expected | None = None
        for _ in range(MKV_MAX_HEADER_ELEMENTS):
            if pos >= min(size, MKV_MAX_HEADER_BYTES):
                break
            element_id, element_size, header = _mkv_element_at(ctx, pos)
            if element_id == _CLUSTER_ID:
                return _MkvLayout(head_end=pos + header, expected=expected)
            if element_size is None or pos + header + element_size > size:
                return None
            if element_id == _TRACKS_ID and element_size <= 16 * MiB:
                expected = mkv_track_counts(ctx.cache.read_at(pos + header, element_size))
            pos += header + element_size
    except _EbmlError as exc:
        _log(ctx, f"EBML walk gave up: {exc}")
    return None


def _plan_matroska(ctx: _Ctx) -> Iterator[Attempt]:
    layout = _mkv_layout(ctx)
    if layout is not None:
        # The demuxer needs the first Cluster's header to know the header part is over.
        n = layout.head_end
        yield Attempt("pipe head through first cluster", "pipe", ((0, n),), n, layout.expected)
        n += MiB
        yield Attempt("pipe head +1 MiB", "pipe", ((0, n),), n, layout.expected)
    else:
        yield Attempt("pipe 1 MiB head", "pipe", ((0, MiB),), MiB)
    yield Attempt(
        "sparse 4 MiB head+tail",
        "file",
        ((0, ESCALATION_HEAD_BYTES), ctx.tail(ESCALATION_TAIL_BYTES)),
        expected=layout.expected if layout else None,
    )


# MPEG-TS -------------------------------------------------------------------


def ts_pids_with_pts(data: bytes, packet_size: int = 188, sync_offset: int = 0) -> set[int]:
    """PIDs of TS packets in `data` that start a PES carrying a PTS."""
    start = next(
        (
            s
            for s in range(min(packet_size, len(data)))
            if all(
                data[s + sync_offset + k * packet_size] == 0x47
                for k in range(min(3, (len(data) - s - sync_offset - 1) // packet_size + 1))
            )
        ),
        None,
    )
    pids: set[int] = set()
    if start is None:
        return pids
    for pos in range(start + sync_offset, len(data) - 187, packet_size):
        packet = data[pos : pos + 188]
        if packet[0] != 0x47 or not packet[1] & 0x40:  # no sync, or no payload unit start
            continue
        adaptation = (packet[3] >> 4) & 3
        if adaptation in (0, 2):  # no payload
            continue
        p = 4 + (1 + packet[4] if adaptation == 3 else 0)
        if p + 14 <= 188 and packet[p : p + 3] == b"\x00\x00\x01" and packet[p + 7] & 0x80:
            pids.add(((packet[1] & 0x1F) << 8) | packet[2])
    return pids


def _plan_mpegts(ctx: _Ctx) -> Iterator[Attempt]:
    cache, sniff = ctx.cache, ctx.sniff
    head = max(TS_HEAD_BYTES, ctx.opts.head_bytes)
    cache.ensure(0, head)
    wanted = ts_pids_with_pts(cache.read_cached(0, head), sniff.packet_size, sniff.sync_offset)
    # Duration is last PTS minus first: the tail must hold a PTS of every stream, and how
    # many bytes that takes depends on the bit rate, so grow it until it does.
    tail = TS_MIN_TAIL_BYTES
    while True:
        start, length = ctx.tail(tail)
        cache.ensure(start, length)
        found = ts_pids_with_pts(
            cache.read_cached(start, length), sniff.packet_size, sniff.sync_offset
        )
        if wanted <= found or tail >= TS_MAX_TAIL_BYTES or start == 0:
            break
        tail *= 2
    yield Attempt("sparse head+tail", "file", ((0, head), ctx.tail(tail)))
    yield Attempt("sparse 4 MiB head+tail", "file", ((0, ESCALATION_HEAD_BYTES), ctx.tail(tail)))


# Everything else -----------------------------------------------------------


def _check_riff_size(ctx: _Ctx) -> None:
    # AVI writers always patch the RIFF size on close, so a size past EOF means a cut copy;
    # the header alone would otherwise look perfect.
    head = ctx.cache.read_cached(0, 12)
    if head[:4] != b"RIFF" or ctx.sniff.container != "avi":
        return
    declared = int.from_bytes(head[4:8], "little") + 8
    if 8 < declared and head[4:8] != b"\xff\xff\xff\xff" and declared > ctx.size:
        raise _ProbeFailure(
            f"truncated: RIFF header declares {declared} bytes, the file has {ctx.size}"
        )


def _check_mxf_footer(ctx: _Ctx) -> None:
    # A closed MXF header partition points at the footer partition; a footer offset past
    # EOF means the file was cut, even though the header metadata alone looks complete.
    head = ctx.cache.read_cached(0, min(ctx.size, 64 * KiB))
    start = head.find(_MXF_PARTITION_KEY)
    if start < 0 or start + 17 > len(head) or head[start + 13] != 0x02:
        return
    ber = head[start + 16]
    value = start + 17 + (ber & 0x7F if ber & 0x80 else 0)
    if value + 32 > len(head):
        return
    footer = int.from_bytes(head[value + 24 : value + 32], "big")
    if footer and start + footer >= ctx.size:
        raise _ProbeFailure(
            f"truncated: MXF footer partition expected at offset {start + footer}, "
            f"the file has {ctx.size} bytes"
        )


def _plan_generic(ctx: _Ctx) -> Iterator[Attempt]:
    _check_riff_size(ctx)
    if ctx.sniff.container == "mxf":
        _check_mxf_footer(ctx)
    head = max(ctx.opts.head_bytes, min(ctx.sniff.min_head + 64 * KiB, ID3_MAX_HEAD_BYTES))
    if ctx.sniff.container in _DURATION_AT_END:
        # A head alone gives these a plausible but wrong duration (estimated from the
        # bit rate), which validation cannot see: never try without the tail.
        yield Attempt("sparse head+64 KiB tail", "file", ((0, head), ctx.tail(64 * KiB)))
    else:
        yield Attempt("sparse head", "file", ((0, head),))
    yield Attempt("sparse head+tail", "file", ((0, head), ctx.tail(GENERIC_TAIL_BYTES)))
    yield Attempt(
        "sparse 4 MiB head+tail",
        "file",
        ((0, max(head, ESCALATION_HEAD_BYTES)), ctx.tail(ESCALATION_TAIL_BYTES)),
    )


_PLANS = {
    "isobmff": _plan_isobmff,
    "matroska": _plan_matroska,
    "mpegts": _plan_mpegts,
}


# --------------------------------------------------------------------------- driver


def _failure_reason(run: _Run, why: str | None, *, partial: bool) -> str:
    lines = [_clean_line(line.strip()) for line in run.stderr.splitlines() if line.strip()]
    detail = why or (lines[-1] if lines else f"ffprobe exited with {run.returncode}")
    if run.returncode != 0 and why is None:
        # The first demuxer line usually names the cause; the last is ffprobe's summary.
        detail = "; ".join(dict.fromkeys(lines[:1] + lines[-1:])) or detail
    if partial:
        # Failing on a part of the file says nothing about the file itself.
        return f"partial read: {detail}"
    lowered = (detail + " " + run.stderr).lower()
    if any(hint in lowered for hint in _TRUNCATION_HINTS):
        return f"truncated: {detail}"
    return detail


def _run_attempt(ctx: _Ctx, attempt: Attempt) -> tuple[ProbeResult | None, str]:
    cache, opts = ctx.cache, ctx.opts
    if attempt.mode == "pipe":
        n = min(attempt.pipe_bytes, ctx.size)
        partial = n < ctx.size
        run = _run_ffprobe(
            "pipe:0",
            ffprobe_path=opts.ffprobe_path,
            timeout_s=opts.timeout_s,
            stdin_data=cache.read_cached(0, n),
        )
    else:
        partial = not cache.is_covered(0, ctx.size)
        run = _run_ffprobe(
            "file:" + cache.path,
            ffprobe_path=opts.ffprobe_path,
            timeout_s=opts.timeout_s,
            stdin_data=None,
        )
    # Name the file in messages, not our temp copy or stdin.
    stderr = run.stderr.replace("file:" + cache.path, cache.name).replace("pipe:0", cache.name)
    run = replace(run, stderr=stderr.replace(cache.path, cache.name))
    try:
        data = json.loads(run.stdout or b"{}")
    except json.JSONDecodeError:
        return None, _failure_reason(run, "ffprobe printed invalid JSON", partial=partial)
    if run.returncode != 0 or not isinstance(data, dict):
        return None, _failure_reason(run, None, partial=partial)
    why = validate_ffprobe(data, run.stderr, partial=partial, expected=attempt.expected)
    if why is not None:
        return None, _failure_reason(run, why, partial=partial)
    result = parse_ffprobe_json(
        data, path=cache.name, size=ctx.size, trust_bit_rate=attempt.mode == "file"
    )
    return result, "ok"


def _whole_file(ctx: _Ctx) -> Attempt | str:
    limit = ctx.opts.max_full_read_bytes
    missing = ctx.size - ctx.cache.covered_bytes
    if limit is not None and missing > limit:
        return f"whole-file read skipped ({missing} more bytes, limit {limit})"
    return Attempt("whole file", "file", ((0, ctx.size),))


def _attempts(ctx: _Ctx) -> Iterator[Attempt]:
    plan = _PLANS.get(ctx.sniff.container, _plan_generic)
    yield from plan(ctx)


def _input_key(ctx: _Ctx, attempt: Attempt) -> tuple[object, ...]:
    if attempt.mode == "pipe":
        return ("pipe", min(attempt.pipe_bytes, ctx.size))
    return ("file", tuple(ctx.cache.covered))


def _log(ctx: _Ctx, message: str) -> None:
    if ctx.trace is not None:
        ctx.trace.append(message)


def _probe_with(ctx: _Ctx) -> ProbeResult:
    tried: set[tuple[object, ...]] = set()
    reason = "no attempt was made"
    pending: Iterator[Attempt] = _attempts(ctx)
    whole_done = False
    while True:
        attempt = next(pending, None)
        if attempt is None:
            if whole_done:
                break
            whole_done = True
            whole = _whole_file(ctx)
            if isinstance(whole, str):
                reason = f"{reason}; {whole}"
                break
            attempt = whole
        for offset, length in attempt.ranges:
            ctx.cache.ensure(offset, length)
        key = _input_key(ctx, attempt)
        if key in tried:
            _log(ctx, f"{attempt.label}: skipped (same input as an earlier attempt)")
            continue
        tried.add(key)
        result, reason = _run_attempt(ctx, attempt)
        _log(ctx, f"{attempt.label}: {reason} (read so far {ctx.cache.bytes_read})")
        if result is not None:
            return result
    raise _ProbeFailure(reason)


def _suffix(name: str) -> str:
    # Demuxer probing gives the extension a small vote: keep it, but only if it is sane.
    ext = os.path.splitext(name)[1]
    return ext if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", ext) else ""


def _failed(path: str, bytes_read: int, reason: str) -> ProbeResult:
    return ProbeResult(path=path, ok=False, bytes_read=bytes_read, error=reason)


def probe(
    reader: RangeReader,
    *,
    ffprobe_path: str = "ffprobe",
    timeout_s: float = 30.0,
    head_bytes: int = DEFAULT_HEAD_BYTES,
    max_moov_bytes: int = DEFAULT_MAX_MOOV_BYTES,
    max_full_read_bytes: int | None = None,
    probe_unknown: bool = False,
    tmp_dir: str | None = None,
    trace: list[str] | None = None,
) -> ProbeResult:
    """Probe the media file behind `reader`, reading as little of it as the container allows.

    Media problems (empty, not media, truncated, hostile headers, ffprobe timeouts) come back
    as ok=False with a reason. Reader I/O errors propagate; a missing ffprobe raises
    FfprobeNotFoundError. `max_full_read_bytes` caps the last-resort whole-file read;
    `probe_unknown` lets ffprobe try files whose first bytes match no known container;
    `trace`, if given, receives one line per ffprobe attempt.
    """
    if head_bytes < 1024:
        raise ValueError(f"head_bytes must be at least 1024, got {head_bytes}")
    name = reader.name
    if reader.size == 0:
        return _failed(name, 0, "zero-byte file")
    opts = _Options(
        ffprobe_path=ffprobe_path,
        timeout_s=timeout_s,
        head_bytes=head_bytes,
        max_moov_bytes=max_moov_bytes,
        max_full_read_bytes=max_full_read_bytes,
        probe_unknown=probe_unknown,
    )
    counter = CountingReader(reader)
    with SparseFileCache(counter, suffix=_suffix(name), tmp_dir=tmp_dir) as cache:
        try:
            sniff = sniff_container(cache.read_at(0, head_bytes))
            if sniff is None and not probe_unknown:
                raise _ProbeFailure("not a media file (no recognised container)")
            ctx = _Ctx(cache, opts, sniff or Sniff("unknown"), trace)
            _log(ctx, f"container: {ctx.sniff.container}, {ctx.size} bytes")
            result = _probe_with(ctx)
            return replace(result, bytes_read=counter.bytes_read)
        except _ProbeFailure as exc:
            if trace is not None:
                trace.append(f"failed: {exc.reason}")
            return _failed(name, counter.bytes_read, exc.reason)
        except ShortReadError as exc:
            reason = f"truncated: file shrank while being read: {exc}"
            if trace is not None:
                trace.append(f"failed: {reason}")
            return _failed(name, counter.bytes_read, reason)


def probe_path(path: str | os.PathLike[str], **kw: Any) -> ProbeResult:
    """probe() a local file. Opening errors (missing file, permissions) propagate."""
    with LocalFileReader(path) as reader:
        return probe(reader, **kw)
