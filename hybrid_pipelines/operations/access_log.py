"""Incremental reading of the file server's JSON access log, with a cursor.

The cursor is {"inode": ..., "offset": ...}: the byte after the last complete line read.
- A partial last line (the writer is mid-line) is left for the next read.
- Rotation (the path now names another file): the rest of the old file is read first when it
  sits beside the new one as `<path>.1` (logrotate's default name), then the new file from 0.
- Truncation (copytruncate: same file, now shorter than the offset): read again from 0.
- At most `max_bytes` are read per call, so one evaluation stays short after a long pause.
- The very first read (no cursor) starts `max_bytes` before the end, at a line start: only
  the last minutes matter, not a log's whole history.
Bad lines are counted, never fatal."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybrid_pipelines.operations.rules.access_stats import (
    BadLine,
    Download,
    add,
    parse_line,
    prune,
)

MAX_BYTES = 8 * 1024 * 1024


@dataclass
class ReadResult:
    cursor: dict[str, Any]
    downloads: list[Download] = field(default_factory=list)
    other: int = 0
    bad: int = 0
    bytes_read: int = 0
    rotated: bool = False
    truncated: bool = False
    missing: bool = False
    first_error: str = ""


def _take_lines(fh, offset: int, limit: int, *, final: bool) -> tuple[list[bytes], int]:
    """Complete lines from `offset` (at most `limit` bytes); the new offset. `final`: the
    file is no longer written (rotated away), so a last line without newline counts too."""
    fh.seek(offset)
    data = fh.read(limit)
    end = data.rfind(b"\n")
    if end < 0:
        if final or len(data) >= limit:
            # Rotated file's unterminated tail, or one line longer than the limit: consume it
            # (counted as whatever it parses to) rather than stall here forever.
            return ([data] if data else []), offset + len(data)
        return [], offset
    lines = data[: end + 1].splitlines()
    if final and end + 1 < len(data):
        lines.append(data[end + 1:])
        return lines, offset + len(data)
    return lines, offset + end + 1


def _line_start(path: Path, offset: int) -> int:
    """The first line start at or after `offset` (the byte after a newline)."""
    with path.open("rb") as fh:
        fh.seek(offset - 1)
        while chunk := fh.read(64 * 1024):
            nl = chunk.find(b"\n")
            if nl >= 0:
                return fh.tell() - len(chunk) + nl + 1
    return offset


def _parse(result: ReadResult, lines: list[bytes]) -> None:
    for raw in lines:
        text = raw.decode("utf-8", errors="replace").strip()
        if not text:
            continue
        try:
            d = parse_line(text)
        except BadLine as exc:
            result.bad += 1
            result.first_error = result.first_error or str(exc)
            continue
        if d is None:
            result.other += 1
        else:
            result.downloads.append(d)


def read_new(path: str | Path, cursor: dict[str, Any] | None,
             max_bytes: int = MAX_BYTES) -> ReadResult:
    """The lines written since `cursor` (None: from the start of the file)."""
    path = Path(path)
    cur = cursor if isinstance(cursor, dict) else {}
    inode, offset = cur.get("inode"), int(cur.get("offset") or 0)
    try:
        st = path.stat()
    except FileNotFoundError:
        return ReadResult(cursor={"inode": inode, "offset": offset}, missing=True)
    result = ReadResult(cursor={})
    budget = max_bytes
    if not cur and st.st_size > max_bytes:
        offset = _line_start(path, st.st_size - max_bytes)
    if inode is not None and st.st_ino != inode:
        result.rotated = True
        old = path.with_name(path.name + ".1")
        try:
            if old.stat().st_ino == inode:
                with old.open("rb") as fh:
                    lines, end = _take_lines(fh, offset, budget, final=True)
                _parse(result, lines)
                budget -= end - offset
                result.bytes_read += end - offset
        except FileNotFoundError:
            pass
        offset = 0
    elif st.st_size < offset:
        result.truncated = True
        offset = 0
    with path.open("rb") as fh:
        lines, end = _take_lines(fh, offset, max(budget, 0), final=False)
    _parse(result, lines)
    result.bytes_read += end - offset
    result.cursor = {"inode": st.st_ino, "offset": end}
    return result


def ingest(path: str | Path, state: dict[str, Any] | None, now: float,
           max_bytes: int = MAX_BYTES) -> tuple[dict[str, Any], ReadResult]:
    """Read what is new and fold it into the per-minute buckets. `state` is
    {"cursor": ..., "buckets": ...} (from the sensor cursor); returns the next state."""
    st = state if isinstance(state, dict) else {}
    buckets = {k: list(v) for k, v in (st.get("buckets") or {}).items()}
    result = read_new(path, st.get("cursor"), max_bytes)
    for d in result.downloads:
        add(buckets, d)
    prune(buckets, now)
    return {"cursor": result.cursor, "buckets": buckets}, result

