"""Session-wide test media for the probing tests: generated once with the real ffmpeg."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from hybrid_pipelines.dev import media_fixtures as mf


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install ffmpeg); media tests need it")
    return path


@pytest.fixture(scope="session")
def ffprobe_bin() -> str:
    return _require("ffprobe")


@pytest.fixture(scope="session")
def probe_media(tmp_path_factory: pytest.TempPathFactory, ffprobe_bin: str) -> dict[str, Path]:
    """kind -> file: every container and corrupt kind, plus bulky and long variants and
    awkward names."""
    _require("ffmpeg")
    out = tmp_path_factory.mktemp("probe-media")
    # A minute of audio outgrows the first read, so head-only shortcuts would show (an Ogg
    # head alone yields a plausible but wrong duration).
    files = mf.make_suite(out, audio_duration_s=60.0)
    extra: dict[str, Callable[[], Path]] = {
        # A few MB each, so a partial read is visibly smaller than the file.
        f"bulky_{kind}": partial(mf.make_video, out, kind, duration_s=4.0, bulky=True)
        for kind in ("mp4_moov_end", "mp4_faststart", "mkv", "ts")
    }
    # Long enough for a moov of several hundred KB, made by remuxing a looped segment.
    extra["long_mp4_moov_end"] = partial(
        mf.make_long_video, out, "mp4_moov_end", duration_s=1200.0, segment_s=30.0
    )
    files.update(mf.generate_many(extra))
    odd = out / "odd names"
    odd.mkdir()
    files["unicode_name"] = odd / "Été à Zürich — 日本語 clip.mp4"
    shutil.copyfile(files["mp4_moov_end"], files["unicode_name"])
    files["mkv_named_mp4"] = odd / "really a matroska.mp4"
    shutil.copyfile(files["mkv"], files["mkv_named_mp4"])
    return files
