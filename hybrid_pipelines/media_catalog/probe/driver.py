"""The driver: sniff, follow the container's read plan through a sparse cache, run ffprobe on
each attempt, validate, escalate; and the whole-file read as the last resort.

Reader I/O errors propagate (callers retry them); media problems come back as ok=False.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from hybrid_pipelines.media_catalog.probe.context import (
    Attempt,
    ProbeContext,
    ProbeFailure,
    ProbeOptions,
)
from hybrid_pipelines.media_catalog.probe.ffprobe_run import (
    DEFAULT_MEMORY_LIMIT_BYTES,
    FfprobeRun,
    memory_failure,
    run_ffprobe,
)
from hybrid_pipelines.media_catalog.probe.plans import attempts
from hybrid_pipelines.media_catalog.range_reader import (
    ByteCountingRangeReader,
    LocalFileReader,
    RangeReader,
    ReadBudgetExceeded,
    ShortReadError,
    SparseFileCache,
)
from hybrid_pipelines.media_catalog.rules.container_sniff import Sniff, sniff_container
from hybrid_pipelines.media_catalog.rules.ffprobe_output import (
    ProbeResult,
    clean_line,
    parse_ffprobe_json,
    validate_ffprobe,
)
from hybrid_pipelines.media_catalog.rules.mp4_boxes import DEFAULT_MAX_MOOV_BYTES

DEFAULT_HEAD_BYTES = 64 * 1024
MiB = 1024 * 1024
# Total bytes one probe may fetch over all its attempts: far above what any sound file needs
# (a 2 h faststart MP4 has a 3.6 MiB moov), far below "the whole 200 GB file in /tmp".
DEFAULT_MAX_READ_BYTES = 64 * MiB
MAX_READ_ENV = "HP_PROBE_MAX_READ_BYTES"
# On a whole file, these in ffprobe's output mean the file was cut short, so the recorded
# reason says "truncated" (on a partial read they say nothing about the file).
_TRUNCATION_HINTS = (
    "partial file",
    "moov atom not found",
    "file ended prematurely",
    "truncat",
    "end of file",
)


def _mib(n: int) -> str:
    return f"{n / MiB:.0f} MiB" if n >= MiB else f"{n} bytes"


def budget_reason(limit: int, needed: int, size: int, after: str = "") -> str:
    """Why a file was left unprobed at the read budget, and the setting that changes it."""
    what = "the whole file" if needed >= size else f"{needed} bytes in total"
    return (f"probe would read more than {_mib(limit)} of this {size}-byte file (its next "
            f"attempt needs {what}{'; ' + after if after else ''}); raise {MAX_READ_ENV} "
            f"(now {limit}) to at least {needed} to try it")


def _failure_reason(run: FfprobeRun, why: str | None, *, partial: bool) -> str:
    lines = [clean_line(line.strip()) for line in run.stderr.splitlines() if line.strip()]
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


def _run_attempt(ctx: ProbeContext, attempt: Attempt) -> tuple[ProbeResult | None, str]:
    cache, opts = ctx.cache, ctx.opts
    if attempt.mode == "pipe":
        n = min(attempt.pipe_bytes, ctx.size)
        partial = n < ctx.size
        run = run_ffprobe(
            "pipe:0",
            ffprobe_path=opts.ffprobe_path,
            timeout_s=opts.timeout_s,
            stdin_data=cache.read_cached(0, n),
            container=ctx.sniff.container,
            memory_limit_bytes=opts.memory_limit_bytes,
        )
    else:
        partial = bool(attempt.patches) or not cache.is_covered(0, ctx.size)
        with cache.patched(attempt.patches):
            run = run_ffprobe(
                "file:" + cache.path,
                ffprobe_path=opts.ffprobe_path,
                timeout_s=opts.timeout_s,
                stdin_data=None,
                container=ctx.sniff.container,
                memory_limit_bytes=opts.memory_limit_bytes,
                probesize=attempt.probesize,
            )
    # Name the file in messages, not our temp copy or stdin.
    stderr = run.stderr.replace("file:" + cache.path, cache.name).replace("pipe:0", cache.name)
    run = replace(run, stderr=stderr.replace(cache.path, cache.name))
    oom = memory_failure(run, opts.memory_limit_bytes)
    if oom is not None:
        raise ProbeFailure(oom)
    try:
        data = json.loads(run.stdout or b"{}")
    except json.JSONDecodeError:
        return None, _failure_reason(run, "ffprobe printed invalid JSON", partial=partial)
    if run.returncode != 0 or not isinstance(data, dict):
        if attempt.final_if_unrecognised and not (isinstance(data, dict) and data.get("format")):
            # No demuxer took the bytes either: asked and answered, not a partial-read doubt.
            lines = [clean_line(x.strip()) for x in run.stderr.splitlines() if x.strip()]
            detail = lines[-1] if lines else f"exited with {run.returncode}"
            raise ProbeFailure(f"not a media file (no recognised container; ffprobe: {detail})")
        return None, _failure_reason(run, None, partial=partial)
    if attempt.recognise_only:
        return None, f"partial read: recognised as {data.get('format', {}).get('format_name')}"
    why = validate_ffprobe(data, run.stderr, partial=partial, expected=attempt.expected)
    if why is not None:
        return None, _failure_reason(run, why, partial=partial)
    result = parse_ffprobe_json(
        data, path=cache.name, size=ctx.size, trust_bit_rate=attempt.mode == "file"
    )
    return result, "ok"


def _whole_file(ctx: ProbeContext) -> Attempt | str:
    limit = ctx.opts.max_full_read_bytes
    missing = ctx.size - ctx.cache.covered_bytes
    if limit is not None and missing > limit:
        return f"whole-file read skipped ({missing} more bytes, limit {limit})"
    budget = ctx.opts.max_read_bytes
    if budget is not None and ctx.cache.bytes_read + missing > budget:
        # Checked here too (the cache would refuse anyway) so that the verdict carries the
        # reason the last partial attempt failed.
        return budget_reason(budget, ctx.cache.bytes_read + missing, ctx.size, ctx.last_failure)
    return Attempt("whole file", "file", ((0, ctx.size),))


def _input_key(ctx: ProbeContext, attempt: Attempt) -> tuple[object, ...]:
    if attempt.mode == "pipe":
        return ("pipe", min(attempt.pipe_bytes, ctx.size))
    return ("file", tuple(ctx.cache.covered), attempt.patches)


def _probe_with(ctx: ProbeContext) -> ProbeResult:
    tried: set[tuple[object, ...]] = set()
    reason = "no attempt was made"
    pending: Iterator[Attempt] = attempts(ctx)
    whole_done = False
    while True:
        attempt = next(pending, None)
        if attempt is None:
            if whole_done:
                break
            whole_done = True
            whole = _whole_file(ctx)
            if isinstance(whole, str):
                reason = whole if whole.startswith("probe would read") else f"{reason}; {whole}"
                break
            attempt = whole
        for offset, length in attempt.ranges:
            ctx.cache.ensure(offset, length)
        key = _input_key(ctx, attempt)
        if key in tried:
            ctx.log(f"{attempt.label}: skipped (same input as an earlier attempt)")
            continue
        tried.add(key)
        result, reason = _run_attempt(ctx, attempt)
        ctx.last_failure = reason if result is None else ""
        ctx.log(f"{attempt.label}: {reason} (read so far {ctx.cache.bytes_read})")
        if result is not None:
            return result
    raise ProbeFailure(reason)


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
    probe_unknown: bool = True,
    tmp_dir: str | None = None,
    trace: list[str] | None = None,
    max_read_bytes: int | None = DEFAULT_MAX_READ_BYTES,
    memory_limit_bytes: int | None = DEFAULT_MEMORY_LIMIT_BYTES,
) -> ProbeResult:
    """Probe the media file behind `reader`, reading as little of it as the container allows.

    Media problems (empty, not media, truncated, hostile headers, ffprobe timeouts) come back
    as ok=False with a reason. Reader I/O errors propagate; a missing ffprobe raises
    FfprobeNotFoundError. `max_read_bytes` bounds the bytes fetched over all attempts (and so
    the temp file, the moov and the pipe); past it the file is recorded invalid with the
    reason. `max_full_read_bytes` caps the last-resort whole-file read on its own;
    `memory_limit_bytes` is ffprobe's address-space limit; `probe_unknown=False` refuses
    files whose first bytes match no known container without asking ffprobe (by default
    ffprobe decides, and a file no demuxer opens is "not a media file"); `trace`, if given,
    receives one line per ffprobe attempt.
    """
    if head_bytes < 1024:
        raise ValueError(f"head_bytes must be at least 1024, got {head_bytes}")
    if max_read_bytes is not None and max_read_bytes < head_bytes:
        raise ValueError(f"max_read_bytes ({max_read_bytes}) must be at least head_bytes "
                         f"({head_bytes}): {MAX_READ_ENV} is too small to sniff a file")
    name = reader.name
    if reader.size == 0:
        return _failed(name, 0, "zero-byte file")
    opts = ProbeOptions(
        ffprobe_path=ffprobe_path,
        timeout_s=timeout_s,
        head_bytes=head_bytes,
        max_moov_bytes=max_moov_bytes,
        max_full_read_bytes=max_full_read_bytes,
        probe_unknown=probe_unknown,
        max_read_bytes=max_read_bytes,
        memory_limit_bytes=memory_limit_bytes,
    )
    counter = ByteCountingRangeReader(reader)
    ctx: ProbeContext | None = None
    with SparseFileCache(counter, suffix=_suffix(name), tmp_dir=tmp_dir,
                         max_bytes=max_read_bytes) as cache:
        try:
            sniff = sniff_container(cache.read_at(0, head_bytes))
            if sniff is None and not probe_unknown:
                raise ProbeFailure("not a media file (no recognised container)")
            # Unknown to the sniffer is not "not media": camera and broadcast formats (DV,
            # GXF, ...) have no magic here, so ffprobe is asked before any verdict.
            ctx = ProbeContext(cache, opts, sniff or Sniff("unknown"), trace)
            ctx.log(f"container: {ctx.sniff.container}, {ctx.size} bytes")
            result = _probe_with(ctx)
            return replace(result, bytes_read=counter.bytes_read)
        except ProbeFailure as exc:
            if trace is not None:
                trace.append(f"failed: {exc.reason}")
            return _failed(name, counter.bytes_read, exc.reason)
        except (ShortReadError, ReadBudgetExceeded) as exc:
            if isinstance(exc, ReadBudgetExceeded):
                reason = budget_reason(exc.limit, exc.needed, reader.size,
                                       ctx.last_failure if ctx else "")
            else:
                reason = f"truncated: file shrank while being read: {exc}"
            if trace is not None:
                trace.append(f"failed: {reason}")
            return _failed(name, counter.bytes_read, reason)


def probe_path(path: str | os.PathLike[str], **kw: Any) -> ProbeResult:
    """probe() a local file. Opening errors (missing file, permissions) propagate."""
    with LocalFileReader(path) as reader:
        return probe(reader, **kw)
