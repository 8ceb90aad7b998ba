"""One ffprobe process, confined: a memory limit, local input only, and no demuxer that opens
other files or the network.

ffprobe is handed bytes from the NAS that anyone with write access to the share chose. Left
with its defaults it would follow an HLS or DASH playlist, an IMF composition or a VobSub
index to other files, and allocate whatever a hostile header asks for. So every run gets:

* an address-space limit (RLIMIT_AS, set in the child before exec): a runaway allocation
  fails inside ffprobe instead of taking the worker's memory;
* `-protocol_whitelist file,pipe`: no http, tcp, udp, rtp... even from inside a demuxer;
* `-format_whitelist`: every demuxer this ffprobe has except those that open other inputs
  (playlists, compositions, sequences, devices, network sessions);
* `-f <demuxer>` when the sniffer has named the container from its magic bytes, so ffprobe
  cannot read the bytes as some other format;
* `-threads 1`: decoder threads each reserve stack and malloc arenas that count against the
  address-space limit, and a probe decodes only a few frames.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass

from hybrid_pipelines.media_catalog.probe.context import ProbeFailure

MiB = 1024 * 1024
# ffprobe maps ~300 MiB of shared libraries before it reads a byte (Debian's build links
# every codec library); 1 GiB leaves ~700 MiB for the demuxer and decoders.
DEFAULT_MEMORY_LIMIT_BYTES = 1024 * MiB
MEMORY_LIMIT_ENV = "HP_PROBE_MEMORY_LIMIT_BYTES"
PROTOCOL_WHITELIST = "file,pipe"
# Demuxers that open other files, devices or network sessions named by the input, or that are
# not media: never allowed, whatever ffprobe is installed.
BLOCKED_DEMUXERS = frozenset({
    "hls", "dash", "concat", "imf", "image2", "vobsub", "webm_dash_manifest", "sdp", "rtsp",
    "rtp", "sap", "lavfi", "ffmetadata", "alsa", "jack", "oss", "pulse", "openal", "fbdev",
    "kmsgrab", "x11grab", "video4linux2", "v4l2", "iec61883", "libdc1394", "libcdio",
    "avisynth", "vapoursynth", "bluray",
})  # fmt: skip
# Containers whose magic bytes name exactly one demuxer. mp3 is absent on purpose: an ID3 tag
# also precedes AAC and FLAC streams, and raw MPEG/AAC streams have no unique magic.
FORCED_FORMATS: dict[str, str] = {
    "isobmff": "mov", "matroska": "matroska", "mpegts": "mpegts", "avi": "avi", "wav": "wav",
    "mxf": "mxf", "flac": "flac", "ogg": "ogg", "caf": "caf", "flv": "flv", "asf": "asf",
    "aiff": "aiff", "realmedia": "rm",
}  # fmt: skip
_OUT_OF_MEMORY_HINTS = ("cannot allocate memory", "failed to map segment", "out of memory")


class FfprobeNotFoundError(RuntimeError):
    """The ffprobe binary is missing: a broken environment, not a broken media file, so it is
    raised rather than recorded against every file."""


@dataclass(frozen=True)
class FfprobeRun:
    returncode: int
    stdout: bytes
    stderr: str


@functools.lru_cache(maxsize=8)
def allowed_demuxers(ffprobe_path: str) -> str:
    """This ffprobe's demuxers minus the blocked ones, as a -format_whitelist value."""
    try:
        out = subprocess.run([ffprobe_path, "-hide_banner", "-demuxers"], capture_output=True,
                             timeout=30, check=True).stdout.decode("utf-8", "replace")
    except FileNotFoundError as exc:
        raise FfprobeNotFoundError(f"ffprobe not found: {ffprobe_path}") from exc
    names: list[str] = []
    for line in out.splitlines():
        parts = line.split()
        # " D  mov,mp4,m4a,3gp,3g2,mj2  QuickTime / MOV": flags, then the name list.
        if len(parts) >= 2 and set(parts[0]) <= {"D", "E", "d", "."} and "D" in parts[0]:
            aliases = parts[1].split(",")
            if not BLOCKED_DEMUXERS & set(aliases):
                names.extend(aliases)
    if not names:
        raise FfprobeNotFoundError(f"{ffprobe_path} -demuxers listed no demuxers; is it ffprobe?")
    return ",".join(names)


def ffprobe_version(ffprobe_path: str, timeout_s: float = 30.0) -> str:
    """The version this ffprobe reports (`ffprobe -version`), recorded with every probe so a
    changed ffprobe can re-probe the files the old one failed on. Not cached: a package
    upgrade changes it under a running process."""
    from hybrid_pipelines.media_catalog.rules.reprobe import parse_ffprobe_version

    try:
        out = subprocess.run([ffprobe_path, "-version"], capture_output=True, timeout=timeout_s,
                             check=False).stdout.decode("utf-8", "replace")
    except FileNotFoundError as exc:
        raise FfprobeNotFoundError(f"ffprobe not found: {ffprobe_path}") from exc
    return parse_ffprobe_version(out)


def _limited(cmd: list[str], limit: int | None) -> list[str]:
    """`cmd` under an address-space limit set by a shell's `ulimit -v` just before it execs
    ffprobe. Not a preexec_fn: with one, subprocess forks (instead of vfork) and every fork
    handler in this process runs in the child first. gRPC's (the Firestore client) then
    aborted ffprobe before its exec when a Firestore client was alive, and valid media was
    recorded invalid as "ffprobe died of signal 6" (test_ffprobe_fork.py)."""
    if not limit:
        return cmd
    return ["/bin/sh", "-c", 'ulimit -v "$1" && shift && exec "$@"', "sh",
            str(max(1, limit // 1024)), *cmd]


def command(target: str, *, ffprobe_path: str, container: str | None,
            probesize: int | None = None) -> list[str]:
    cmd = [ffprobe_path, "-hide_banner", "-v", "error", "-threads", "1",
           "-protocol_whitelist", PROTOCOL_WHITELIST,
           "-format_whitelist", allowed_demuxers(ffprobe_path)]
    if probesize:
        # Keeps stream analysis inside the fetched head of a sparse file: past it are zeros.
        cmd += ["-probesize", str(probesize)]
    forced = FORCED_FORMATS.get(container or "")
    if forced:
        cmd += ["-f", forced]
    return [*cmd, "-print_format", "json", "-show_format", "-show_streams", target]


def memory_failure(run: FfprobeRun, memory_limit_bytes: int | None) -> str | None:
    """The verdict when a run failed for lack of memory under the limit (a bigger read would
    only need more), naming the setting to raise; None otherwise."""
    if not memory_limit_bytes or run.returncode == 0:
        return None
    text = run.stderr.lower()
    if run.returncode > 0 and not any(h in text for h in _OUT_OF_MEMORY_HINTS):
        return None
    last = [line.strip() for line in run.stderr.splitlines() if line.strip()][-1:]
    detail = f": {last[0]}" if last else ""
    limit = f"{memory_limit_bytes // MiB} MiB"
    fix = f"if the file is sound, raise {MEMORY_LIMIT_ENV} (now {memory_limit_bytes})"
    if run.returncode < 0:  # a signal: the kernel's answer to a failed mapping, or a crash
        return (f"ffprobe died of signal {-run.returncode} (a crash, or its memory limit of "
                f"{limit}){detail}; {fix}")
    return (f"ffprobe ran out of memory under its limit of {limit} (exited with "
            f"{run.returncode}{detail}); {fix}")


def run_ffprobe(target: str, *, ffprobe_path: str, timeout_s: float, stdin_data: bytes | None,
                container: str | None = None,
                memory_limit_bytes: int | None = DEFAULT_MEMORY_LIMIT_BYTES,
                probesize: int | None = None) -> FfprobeRun:
    found = shutil.which(ffprobe_path)
    if found is None:  # the shell below would report it as a failed run, not a missing tool
        raise FfprobeNotFoundError(f"ffprobe not found: {ffprobe_path}")
    cmd = command(target, ffprobe_path=found, container=container, probesize=probesize)
    try:
        # run() kills the child on timeout before re-raising, so nothing is left behind.
        proc = subprocess.run(
            _limited(cmd, memory_limit_bytes),
            input=stdin_data,
            stdin=None if stdin_data is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError as exc:  # the shell of the memory limit, or ffprobe removed since
        raise FfprobeNotFoundError(f"cannot run {found}: {exc.filename or found} not found"
                                   ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ProbeFailure(f"ffprobe timed out after {timeout_s:g}s") from exc
    return FfprobeRun(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))
