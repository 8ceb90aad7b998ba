"""Sample media for a fresh NAS share: a WSOP/HCL-like tree made by ffmpeg."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

_SRC = ["-f", "lavfi", "-i", "testsrc=size=320x180:rate=25", "-f", "lavfi",
        "-i", "sine=frequency=440:sample_rate=48000"]
_ENC = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
        "-b:a", "64k"]

SAMPLES: dict[str, list[str]] = {
    "WSOP/WSOP 2024/Main Event/Day1.mp4": [*_ENC, "-movflags", "+faststart", "-f", "mp4"],
    # moov after mdat, as cameras and plain ffmpeg write it
    "WSOP/WSOP 2024/Main Event/Day2.mp4": [*_ENC, "-f", "mp4"],
    "WSOP/WSOP 2023/High Roller/Final Table.mkv": [*_ENC, "-f", "matroska"],
    "HCL/HCL 2025/Episode 01.ts": [*_ENC, "-f", "mpegts"],
}


def seed_share(share_dir: Path, seconds: int = 3) -> list[Path]:
    """Create the sample files that are missing; returns those created."""
    if not shutil.which("ffmpeg"):
        raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg); cannot seed the NAS")
    made = []
    for rel, enc in SAMPLES.items():
        target = share_dir / rel
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(".partial-" + target.name)
        subprocess.run(["ffmpeg", "-y", "-v", "error", *_SRC, "-t", str(seconds), *enc, str(tmp)],
                       check=True, capture_output=True, timeout=120)
        tmp.rename(target)
        made.append(target)
    return made

