"""What ffprobe said, and whether to believe it.

Pure functions over `ffprobe -show_format -show_streams` JSON and its stderr: turning the
JSON into a ProbeResult, and the checks that decide if an answer (often from a partial read)
can be trusted. Running ffprobe is the prober's job, not this module's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


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


@dataclass(frozen=True)
class Expected:
    """Minimum stream counts the container's own header promises."""

    video: int = 0
    audio: int = 0


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


def clean_line(line: str) -> str:
    """Drop the `@ 0x...` context address from a log line: it differs on every run, and the
    line ends up in recorded failure reasons."""
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
                problems.append(clean_line(line))
        elif from_container and any(p in msg.lower() for p in _SUSPICIOUS):
            problems.append(clean_line(line))
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

