"""Generate small (or long but cheap) test media with ffmpeg.

Shared by the probe tests, the local stack's seeding and the benches, so every generator is
deterministic and caches its output under a name derived from its parameters: a second call
with the same parameters returns the existing file without running ffmpeg.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

VIDEO_KINDS: tuple[str, ...] = (
    "mp4_faststart",
    "mp4_moov_end",
    "mp4_fragmented",
    "mov",
    "mkv",
    "webm",
    "ts",
    "avi",
    "mxf",
)
AUDIO_KINDS: tuple[str, ...] = ("m4a", "mp3", "wav", "flac", "ogg")
CORRUPT_KINDS: tuple[str, ...] = (
    "truncated_mp4",
    "truncated_faststart_mp4",
    "zero_byte",
    "random_bytes",
    "text_as_mp4",
    "huge_moov_mp4",
)
# MXF needs 48 kHz PCM audio, about 350 MB per hour, so it is not offered as a long file.
LONG_KINDS: tuple[str, ...] = (
    "mp4_faststart",
    "mp4_moov_end",
    "mp4_fragmented",
    "mov",
    "mkv",
    "webm",
    "ts",
    "avi",
)

_EXT: dict[str, str] = {
    "mp4_faststart": "mp4",
    "mp4_moov_end": "mp4",
    "mp4_fragmented": "mp4",
    "mov": "mov",
    "mkv": "mkv",
    "webm": "webm",
    "ts": "ts",
    "avi": "avi",
    "mxf": "mxf",
    "m4a": "m4a",
    "mp3": "mp3",
    "wav": "wav",
    "flac": "flac",
    "ogg": "ogg",
}

_H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
# Each kind: (video codec args, audio codec args, extra muxer args, audio sample rate).
_VIDEO_CODECS: dict[str, tuple[list[str], list[str], list[str], int]] = {
    "mp4_faststart": (_H264, ["-c:a", "aac"], ["-movflags", "+faststart"], 44100),
    "mp4_moov_end": (_H264, ["-c:a", "aac"], [], 44100),
    # One-second GOPs so even short files hold several fragments (moof+mdat pairs) and no
    # mehd: the total duration is only known by summing every fragment.
    "mp4_fragmented": (
        [*_H264, "-g", "25"],
        ["-c:a", "aac"],
        ["-movflags", "frag_keyframe+empty_moov+default_base_moof"],
        44100,
    ),
    "mov": (_H264, ["-c:a", "aac"], [], 44100),
    "mkv": (_H264, ["-c:a", "aac"], [], 44100),
    "webm": (
        ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "400k"],
        ["-c:a", "libopus"],
        [],
        48000,
    ),
    "ts": (_H264, ["-c:a", "aac"], [], 44100),
    "avi": (["-c:v", "mpeg4", "-q:v", "5"], ["-c:a", "libmp3lame"], [], 44100),
    "mxf": (["-c:v", "mpeg2video", "-q:v", "4"], ["-c:a", "pcm_s16le"], [], 48000),
}
_AUDIO_CODECS: dict[str, list[str]] = {
    "m4a": ["-c:a", "aac", "-b:a", "96k"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "128k"],
    "wav": ["-c:a", "pcm_s16le"],
    "flac": ["-c:a", "flac"],
    "ogg": ["-c:a", "libvorbis"],
}


class MediaFixtureError(RuntimeError):
    """ffmpeg is missing or could not produce the requested file."""


@dataclass(frozen=True)
class MediaFile:
    """A generated file and what it was asked to contain."""

    kind: str
    path: Path
    duration_s: float | None
    width: int | None = None
    height: int | None = None


def ffmpeg_available(ffmpeg_path: str = "ffmpeg") -> bool:
    return shutil.which(ffmpeg_path) is not None


def ffmpeg_has_muxer(name: str, ffmpeg_path: str = "ffmpeg") -> bool:
    try:
        out = subprocess.run(
            [ffmpeg_path, "-hide_banner", "-muxers"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(line.split()[1:2] == [name] for line in out.splitlines() if line.strip())


def _fmt_num(value: float) -> str:
    # File names double as cache keys, so 2.0 and 2 must give the same name.
    return f"{value:g}".replace(".", "p")


def _run_ffmpeg(args: Sequence[str], out: Path, ffmpeg_path: str, timeout_s: float) -> None:
    """Run ffmpeg into a temp name, then rename: a killed run never leaves a cached half-file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".partial-", suffix=out.suffix, dir=out.parent)
    os.close(fd)
    cmd = [ffmpeg_path, "-hide_banner", "-nostdin", "-v", "error", "-y", *args, tmp_name]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        if proc.returncode != 0:
            raise MediaFixtureError(f"ffmpeg failed for {out.name}: {proc.stderr.strip()[-2000:]}")
        # mkstemp creates 0600 files; the local stack serves these over Samba as another user.
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, out)
    except FileNotFoundError as exc:
        raise MediaFixtureError(f"ffmpeg not found: {ffmpeg_path}") from exc
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _lavfi_inputs(
    duration_s: float, width: int, height: int, fps: float, sample_rate: int, channels: int
) -> list[str]:
    layout = "mono" if channels == 1 else "stereo"
    return [
        "-f", "lavfi",
        "-i", f"testsrc=size={width}x{height}:rate={fps:g}:duration={duration_s:g}",
        "-f", "lavfi",
        "-i", f"sine=frequency=440:sample_rate={sample_rate}:duration={duration_s:g}",
        "-af", f"aformat=channel_layouts={layout}",
    ]  # fmt: skip


def make_video(
    out_dir: str | os.PathLike[str],
    kind: str,
    *,
    duration_s: float = 2.0,
    width: int = 320,
    height: int = 240,
    fps: float = 25.0,
    bulky: bool = False,
    channels: int = 2,
    audio_bitrate: str | None = None,
    name: str | None = None,
    ffmpeg_path: str = "ffmpeg",
    timeout_s: float = 300.0,
) -> Path:
    """Make a test-pattern video with a sine tone in container `kind` (see VIDEO_KINDS).

    `bulky` adds per-frame noise so the file is a few MB per second even at small sizes, which
    makes the difference between a partial and a full read visible.
    """
    if kind not in _VIDEO_CODECS:
        raise ValueError(f"unknown video kind {kind!r}; expected one of {VIDEO_KINDS}")
    vcodec, acodec, mux, sample_rate = _VIDEO_CODECS[kind]
    stem = name or (
        f"{kind}_{_fmt_num(duration_s)}s_{width}x{height}_{_fmt_num(fps)}fps_{channels}ch"
        + ("_bulky" if bulky else "")
        + (f"_a{audio_bitrate}" if audio_bitrate else "")
    )
    out = Path(out_dir) / f"{stem}.{_EXT[kind]}"
    if out.exists():
        return out
    vf = ["-vf", "noise=alls=60:allf=t"] if bulky else []
    abr = ["-b:a", audio_bitrate] if audio_bitrate else []
    args = [
        *_lavfi_inputs(duration_s, width, height, fps, sample_rate, channels),
        *vf,
        *vcodec,
        *acodec,
        *abr,
        *mux,
        "-t", f"{duration_s:g}",
    ]  # fmt: skip
    _run_ffmpeg(args, out, ffmpeg_path, timeout_s)
    return out


def make_audio(
    out_dir: str | os.PathLike[str],
    kind: str,
    *,
    duration_s: float = 2.0,
    sample_rate: int = 44100,
    channels: int = 2,
    name: str | None = None,
    ffmpeg_path: str = "ffmpeg",
    timeout_s: float = 300.0,
) -> Path:
    """Make an audio-only file (see AUDIO_KINDS) holding a sine tone."""
    if kind not in _AUDIO_CODECS:
        raise ValueError(f"unknown audio kind {kind!r}; expected one of {AUDIO_KINDS}")
    stem = name or f"{kind}_{_fmt_num(duration_s)}s_{sample_rate}hz_{channels}ch"
    out = Path(out_dir) / f"{stem}.{_EXT[kind]}"
    if out.exists():
        return out
    layout = "mono" if channels == 1 else "stereo"
    args = [
        "-f", "lavfi",
        "-i", f"sine=frequency=440:sample_rate={sample_rate}:duration={duration_s:g}",
        "-af", f"aformat=channel_layouts={layout}",
        *_AUDIO_CODECS[kind],
    ]  # fmt: skip
    _run_ffmpeg(args, out, ffmpeg_path, timeout_s)
    return out


def make_long_video(
    out_dir: str | os.PathLike[str],
    kind: str,
    *,
    duration_s: float = 3600.0,
    segment_s: float = 60.0,
    width: int = 64,
    height: int = 48,
    fps: float = 25.0,
    name: str | None = None,
    ffmpeg_path: str = "ffmpeg",
    timeout_s: float = 600.0,
) -> Path:
    """Make an hour-scale file in seconds: encode one short tiny segment, then loop it with
    `-stream_loop` and `-c copy`, so the cost is a remux rather than an encode.

    The frame rate stays realistic (25 fps by default) on purpose: the sample tables, and so
    the MP4 moov, then grow as they do for real long recordings.
    """
    if kind not in LONG_KINDS:
        raise ValueError(f"unknown long kind {kind!r}; expected one of {LONG_KINDS}")
    stem = name or f"long_{kind}_{_fmt_num(duration_s)}s_{width}x{height}_{_fmt_num(fps)}fps"
    out = Path(out_dir) / f"{stem}.{_EXT[kind]}"
    if out.exists():
        return out
    seg_kind = "mp4_moov_end" if kind.startswith("mp4_") else kind
    segment = make_video(
        Path(out_dir) / ".segments",
        seg_kind,
        duration_s=min(segment_s, duration_s),
        width=width,
        height=height,
        fps=fps,
        channels=1,
        audio_bitrate="24k",
        ffmpeg_path=ffmpeg_path,
        timeout_s=timeout_s,
    )
    loops = max(0, math.ceil(duration_s / segment_s) - 1)
    mux = _VIDEO_CODECS[kind][2]
    args = [
        "-stream_loop", str(loops),
        "-i", str(segment),
        "-map", "0",
        "-c", "copy",
        *mux,
        "-t", f"{duration_s:g}",
    ]  # fmt: skip
    _run_ffmpeg(args, out, ffmpeg_path, timeout_s)
    return out


# Formats the prober's sniffer has no magic for (camera DV, broadcast GXF) and one whose
# duration sits at the end (FLV), named by extension: (codec args, audio rate, channels, size).
EXTRA_KINDS: dict[str, tuple[list[str], int, int, tuple[int, int]]] = {
    "dv": (["-c:v", "dvvideo", "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le"], 48000, 2, (720, 576)),
    "gxf": (["-c:v", "mpeg2video", "-b:v", "2M", "-c:a", "pcm_s16le"], 48000, 1, (720, 576)),
    "flv": (["-c:v", "flv1", "-c:a", "libmp3lame", "-b:a", "64k"], 44100, 2, (320, 240)),
}  # fmt: skip


def make_extra(out_dir: str | os.PathLike[str], kind: str, *, duration_s: float = 2.0,
               ffmpeg_path: str = "ffmpeg", timeout_s: float = 300.0) -> Path:
    """A 25 fps test-pattern video in one of EXTRA_KINDS, cached by kind and duration."""
    codecs, rate, channels, (w, h) = EXTRA_KINDS[kind]
    out = Path(out_dir) / f"extra_{kind}_{_fmt_num(duration_s)}s.{kind}"
    if not out.exists():
        lavfi = _lavfi_inputs(duration_s, w, h, 25.0, rate, channels)
        _run_ffmpeg([*lavfi, *codecs, "-t", f"{duration_s:g}"], out, ffmpeg_path, timeout_s)
    return out


def _top_level_box(data: bytes, box_type: bytes) -> int:
    """Offset of the first top-level box of `box_type` in a complete MP4 held in memory."""
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind == box_type:
            return offset
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        if size < 8:
            break
        offset += size
    raise MediaFixtureError(f"no top-level {box_type!r} box")


def make_corrupt(
    out_dir: str | os.PathLike[str],
    kind: str,
    *,
    name: str | None = None,
    ffmpeg_path: str = "ffmpeg",
) -> Path:
    """Make a broken file (see CORRUPT_KINDS); all carry a .mp4 name, as they would on a NAS."""
    if kind not in CORRUPT_KINDS:
        raise ValueError(f"unknown corrupt kind {kind!r}; expected one of {CORRUPT_KINDS}")
    out = Path(out_dir) / f"{name or kind}.mp4"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    data: bytes
    if kind == "zero_byte":
        data = b""
    elif kind == "random_bytes":
        data = random.Random(1234).randbytes(256 * 1024)
    elif kind == "text_as_mp4":
        data = "".join(f"line {i}: this is not a video\n" for i in range(2000)).encode()
    else:
        src_kind = "mp4_faststart" if kind == "truncated_faststart_mp4" else "mp4_moov_end"
        src = make_video(out_dir, src_kind, duration_s=2.0, ffmpeg_path=ffmpeg_path)
        whole = src.read_bytes()
        if kind.startswith("truncated"):
            data = whole[: len(whole) // 2]
        else:
            # Declares a moov of ~4 GiB in a file of a few hundred KB: the kind of header a
            # parser must refuse before trying to allocate or read it.
            moov = _top_level_box(whole, b"moov")
            data = whole[:moov] + struct.pack(">I", 0xFFFFFFF0) + whole[moov + 4 :]
    tmp = out.with_name(f".partial-{out.name}")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return out


def generate_many(
    jobs: Mapping[str, Callable[[], Path]], *, workers: int | None = None
) -> dict[str, Path]:
    """Run generator calls concurrently (each is an ffmpeg process, so threads suffice).

    Two jobs producing the same cached file are harmless: each writes its own temp file and
    the atomic rename makes the last one win with identical content.
    """
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {key: pool.submit(job) for key, job in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def make_suite(
    out_dir: str | os.PathLike[str],
    *,
    video_kinds: Iterable[str] = VIDEO_KINDS,
    audio_kinds: Iterable[str] = AUDIO_KINDS,
    corrupt_kinds: Iterable[str] = CORRUPT_KINDS,
    duration_s: float = 2.0,
    audio_duration_s: float | None = None,
    width: int = 320,
    height: int = 240,
    ffmpeg_path: str = "ffmpeg",
    workers: int | None = None,
) -> dict[str, Path]:
    """One file per kind, keyed by kind. MXF is left out when this ffmpeg cannot write it."""
    jobs: dict[str, Callable[[], Path]] = {}
    for kind in video_kinds:
        if kind == "mxf" and not ffmpeg_has_muxer("mxf", ffmpeg_path):
            continue
        jobs[kind] = partial(
            make_video, out_dir, kind, duration_s=duration_s, width=width, height=height,
            ffmpeg_path=ffmpeg_path,
        )  # fmt: skip
    audio_s = audio_duration_s or duration_s
    for kind in audio_kinds:
        jobs[kind] = partial(make_audio, out_dir, kind, duration_s=audio_s, ffmpeg_path=ffmpeg_path)
    for kind in corrupt_kinds:
        jobs[kind] = partial(make_corrupt, out_dir, kind, ffmpeg_path=ffmpeg_path)
    return generate_many(jobs, workers=workers)
