"""Media probing that reads only what the container needs.

ffprobe on a whole remote file costs the whole file (or, through a naive seekable shim, far
more than ffprobe consumes). Instead we sniff the container from the first bytes and hand
ffprobe the smallest input that carries the metadata:

* MKV/WebM, faststart MP4/MOV: the head, up to the first media payload, on stdin.
* MP4/MOV with the moov after the mdat: a sparse temp file holding the head and the exact
  moov at their true offsets (the box walk costs one small read per top-level box).
* MPEG-TS: a sparse file with the head and a tail that holds a timestamp for every stream.
* Everything else: a sparse head, then head+tail, then bigger, then the whole file.

No probe fetches more than its read budget in total (HP_PROBE_MAX_READ_BYTES, 64 MiB): a
file that would need more is recorded invalid with the reason, never copied whole.

Every answer is validated (streams complete, duration > 0, stderr clean) before it is
trusted; a failed check escalates to a bigger read. Reader I/O errors propagate, so callers
can retry them instead of recording a healthy file as broken.

Where things live: the sniffing and ffprobe-output parsing are pure and sit in rules/
(container_sniff, ffprobe_output, mkv_ebml, mpegts_packets, next to mp4_boxes); the read
plans in probe.plans, what they share with the driver in probe.context, the confined ffprobe
process in probe.ffprobe_run, and validation, escalation and the read budget in probe.driver.
This package re-exports what callers import.
"""

from __future__ import annotations

from hybrid_pipelines.media_catalog.probe.driver import probe, probe_path
from hybrid_pipelines.media_catalog.probe.ffprobe_run import FfprobeNotFoundError
from hybrid_pipelines.media_catalog.rules.container_sniff import sniff_container
from hybrid_pipelines.media_catalog.rules.ffprobe_output import (
    Expected,
    ProbeResult,
    parse_ffprobe_json,
    parse_rate,
    stderr_problems,
    validate_ffprobe,
)
from hybrid_pipelines.media_catalog.rules.mkv_ebml import mkv_track_counts
from hybrid_pipelines.media_catalog.rules.mpegts_packets import ts_pids_with_pts

__all__ = [
    "Expected",
    "FfprobeNotFoundError",
    "ProbeResult",
    "mkv_track_counts",
    "parse_ffprobe_json",
    "parse_rate",
    "probe",
    "probe_path",
    "sniff_container",
    "stderr_problems",
    "ts_pids_with_pts",
    "validate_ffprobe",
]
