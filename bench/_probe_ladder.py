"""What bench/probe_growth.py compares against: the fixed read ladder (512 KiB head -> 5 MB
head -> last 1 MiB -> whole file) over any RangeReader, and full-file ffprobe as the answer
every field must equal. A helper module (run_all.py skips files starting with '_')."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from hybrid_pipelines.media_catalog.probe import parse_ffprobe_json, validate_ffprobe
from hybrid_pipelines.media_catalog.range_reader import RangeReader
from hybrid_pipelines.media_catalog.rules.ffprobe_output import ProbeResult

MiB = 1024 * 1024
FFPROBE = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams"]
LADDER: list[tuple[str, int]] = [("head", 512 * 1024), ("head", 5_000_000), ("tail", MiB),
                                 ("whole", 0)]
# Every field the catalog stores from a probe.
STORED = [f.name for f in dataclasses.fields(ProbeResult) if f.name not in ("path", "bytes_read")]


def _ffprobe(target: str, stdin_data: bytes | None = None) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run([*FFPROBE, target], input=stdin_data,
                          stdin=None if stdin_data is not None else subprocess.DEVNULL,
                          capture_output=True, timeout=300, check=False)
    try:
        data = json.loads(proc.stdout or b"{}")
    except json.JSONDecodeError:
        data = {}
    return proc.returncode, data, proc.stderr.decode("utf-8", "replace")


def _judge(name: str, size: int, rc: int, data: dict[str, Any], stderr: str, *,
           partial: bool) -> ProbeResult:
    why = "ffprobe failed" if rc != 0 else validate_ffprobe(data, stderr, partial=partial)
    if why:
        return ProbeResult(path=name, ok=False, bytes_read=0, error=why)
    return parse_ffprobe_json(data, path=name, size=size, trust_bit_rate=not partial)


def full_file(path: Path) -> ProbeResult:
    """ffprobe on the whole local file: the reference."""
    rc, data, stderr = _ffprobe("file:" + str(path))
    return _judge(str(path), path.stat().st_size, rc, data, stderr, partial=False)


def ladder(reader: RangeReader, tmp_dir: str | None = None) -> tuple[ProbeResult, int]:
    """(answer, bytes fetched) of the fixed ladder over `reader`, stopping at the first answer
    that passes the same validation as ours. Bytes already fetched by an earlier step are
    not fetched again: the most favourable accounting for the baseline."""
    size, name = reader.size, reader.name
    head = b""
    result = ProbeResult(path=name, ok=False, bytes_read=0, error="ladder exhausted")
    for kind, n in LADDER:
        if kind == "whole":
            with tempfile.NamedTemporaryFile(dir=tmp_dir, suffix=Path(name).suffix) as fh:
                fh.write(head)
                pos = len(head)
                while pos < size:
                    chunk = reader.read_at(pos, min(8 * MiB, size - pos))
                    fh.write(chunk)
                    pos += len(chunk)
                fh.flush()
                rc, data, stderr = _ffprobe("file:" + fh.name)
            result = _judge(name, size, rc, data, stderr, partial=False)
        else:
            n = min(n, size)
            if kind == "head":
                if n > len(head):
                    head += reader.read_at(len(head), n - len(head))
                chunk = head[:n]
            else:
                chunk = reader.read_at(size - n, n)
            rc, data, stderr = _ffprobe("pipe:0", chunk)
            result = _judge(name, size, rc, data, stderr, partial=n < size)
        if result.ok:
            break
    return result, min(reader.bytes_read, size)  # the union: a re-read is not counted twice


def same_fields(result: ProbeResult, reference: ProbeResult) -> bool:
    return result.ok and reference.ok and all(
        getattr(result, f) == getattr(reference, f) for f in STORED)


def differences(result: ProbeResult, reference: ProbeResult) -> dict[str, tuple[Any, Any]]:
    return {f: (getattr(result, f), getattr(reference, f)) for f in STORED
            if getattr(result, f) != getattr(reference, f)}
