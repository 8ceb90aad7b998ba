"""Media probing that reads only what the container needs.

ffprobe on a whole remote file costs the whole file (or, through a naive seekable shim, far
more than ffprobe consumes). Instead we sniff the container from the first bytes and hand
ffprobe the smallest input that carries the metadata:

* MP4/MOV (faststart or moov at the end): a sparse temp file of the true size holding the
  head, the small top-level boxes and, over the moov's place, a stand-in moov without sample
  tables (rules.mp4_skeleton): the same ~100 KiB for a 1-minute or a 4-hour recording, every
  stored field equal to ffprobe on the whole file. If ffprobe rejects the stand-in, the real
  moov is read (pipe through the moov for faststart, else a sparse head+moov).
* MKV/WebM: the head, up to the first media payload, on stdin.
* MPEG-TS: a sparse file with the head and a tail that holds a timestamp for every stream.
* FLV, Ogg, MPEG-PS: head + 64 KiB tail first (their duration is at the end).
* Everything else: a sparse head, then head+tail, then bigger, then the whole file.
* Magic the sniffer does not know (DV, GXF, ...): ffprobe is asked on head+tail; if no
  demuxer opens it, it is "not a media file"; if one does, the file is read whole (up to
  16 MiB) or from a 4 MiB head with ffprobe's analysis kept inside it.

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
