"""A stand-in moov without sample tables: what ffprobe reports, from a few KiB of a big moov.

A long recording's moov is mostly sample tables (stsz, stco, ctts, stss: one entry per
sample or chunk, ~4 MiB for 2 h at 25 fps), and none of what the catalog stores comes from
them. ffprobe's mov demuxer takes the format duration from mvhd, the codec, frame size,
channels and sample rate from stsd (plus tkhd/mdhd/hdlr), the average frame rate from the
stts sums (frames / duration), and the format bit rate from file size and duration.

So we walk the moov's box headers, copy every small box verbatim, descend into trak / mdia /
minf / stbl, and rebuild each stbl as stsd + stts + *empty* stsz/stsc/stco: a track with no
samples, which the demuxer accepts (a chunk-less track with no samples passes its sanity
checks) and which ffprobe describes exactly as the full track, minus packets it never
decodes for these fields. The stand-in has the original moov's size (a `free` child pads it)
so it can be written over the moov's place in a sparse copy of the file: every other box
keeps its offset and the file its size.

Pure: reads go through the RangeReader it is given (the prober hands it a block cache).
Treats the input as hostile like mp4_boxes: every size is checked before it is read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from hybrid_pipelines.media_catalog.range_reader import RangeReader
from hybrid_pipelines.media_catalog.rules.mp4_boxes import Box, BoxError, iter_boxes

# Boxes we rebuild from their children rather than copy.
_DESCEND = frozenset({"trak", "mdia", "minf"})
# Sample-table children that are dropped: per-sample data nothing reported depends on.
_STBL_DROP = frozenset({
    "stss", "ctts", "stsh", "stdp", "sdtp", "sbgp", "sgpd", "subs", "saiz", "saio", "cslg",
    "stps", "padb",
})  # fmt: skip
# A box larger than this is not copied (udta with cover art, a huge meta): nothing the
# catalog stores lives there.
COPY_MAX_BYTES = 64 * 1024
# stsd carries the codec configuration; a larger one is hostile or exotic: give up.
STSD_MAX_BYTES = 1024 * 1024
# stts is read whole for its sums; past this many entries it is folded into two entries
# with the same totals (the stand-in stays small, avg_frame_rate stays exact).
STTS_KEEP_ENTRIES = 512
MAX_CHILDREN = 10_000


class SkeletonError(BoxError):
    """The moov cannot be summarised without its sample tables; read it whole instead."""


@dataclass
class MoovSkeleton:
    data: bytes  # the stand-in moov up to its free child's header (see moov_skeleton)
    handlers: list[str] = field(default_factory=list)
    fragmented: bool = False
    has_fragment_duration: bool = False
    frames: list[int] = field(default_factory=list)  # stts sample count, one per stbl


def _box(kind: str, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind.encode("ascii")) + payload


def _full_box(kind: str, payload: bytes) -> bytes:
    return _box(kind, b"\x00\x00\x00\x00" + payload)


def _children(reader: RangeReader, parent: Box) -> list[Box]:
    return list(iter_boxes(reader, start=parent.payload_offset, end=parent.end,
                           max_boxes=MAX_CHILDREN, max_moov_bytes=parent.size))


def _copy(reader: RangeReader, box: Box) -> bytes:
    data = reader.read_at(box.offset, box.size)
    if len(data) != box.size:
        raise SkeletonError(f"box '{box.type}' at offset {box.offset} cut short")
    return data


def fold_stts(entries: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Two (count, delta) entries with the same total count and total duration: the sums
    are all the demuxer's average frame rate uses."""
    count = sum(c for c, _ in entries)
    duration = sum(c * d for c, d in entries)
    if count == 0:
        return []
    q, rem = divmod(duration, count)  # rem of the samples last q+1, the rest q
    folded = [(count - rem, q), (rem, q + 1)]
    return [(c, d) for c, d in folded if c > 0 and d < 2**32]


def _stts(reader: RangeReader, box: Box, max_table_bytes: int, out: MoovSkeleton) -> bytes:
    if box.size > max_table_bytes:
        raise SkeletonError(f"stts of {box.size} bytes is over the {max_table_bytes}-byte cap")
    raw = _copy(reader, box)[box.header_size :]
    if len(raw) < 8:
        raise SkeletonError("stts too short")
    n = struct.unpack(">I", raw[4:8])[0]
    if 8 + 8 * n > len(raw):
        raise SkeletonError(f"stts declares {n} entries, room for {(len(raw) - 8) // 8}")
    entries = list(struct.iter_unpack(">II", raw[8 : 8 + 8 * n]))
    out.frames.append(sum(c for c, d in entries if d > 0))
    if n <= STTS_KEEP_ENTRIES:
        return _box("stts", raw[: 8 + 8 * n])
    folded = fold_stts(entries)
    body = struct.pack(">I", len(folded)) + b"".join(struct.pack(">II", *e) for e in folded)
    return _full_box("stts", body)


def _stbl(reader: RangeReader, stbl: Box, max_table_bytes: int, out: MoovSkeleton) -> bytes:
    parts: list[bytes] = []
    seen: set[str] = set()
    for child in _children(reader, stbl):
        kind = child.type
        if kind == "stsd":
            if child.size > STSD_MAX_BYTES:
                raise SkeletonError(f"stsd of {child.size} bytes")
            parts.append(_copy(reader, child))
        elif kind == "stts":
            parts.append(_stts(reader, child, max_table_bytes, out))
        elif kind in ("stsz", "stz2", "stsc", "stco", "co64") or kind in _STBL_DROP:
            pass  # rebuilt empty below, or dropped
        elif child.size <= COPY_MAX_BYTES:
            parts.append(_copy(reader, child))
        seen.add(kind)
    if "stsd" not in seen or "stts" not in seen:
        raise SkeletonError("stbl without stsd or stts")
    # A track with no chunks and no samples: passes the demuxer's mandatory-atom checks.
    parts.append(_full_box("stsz", struct.pack(">II", 0, 0)))
    parts.append(_full_box("stsc", struct.pack(">I", 0)))
    parts.append(_full_box("stco", struct.pack(">I", 0)))
    return _box("stbl", b"".join(parts))


def _handler(hdlr: bytes) -> str:
    # header (8), version/flags (4), pre_defined (4), handler_type (4)
    raw = hdlr[16:20]
    return raw.decode("latin-1") if len(raw) == 4 else ""


def _rebuild(reader: RangeReader, box: Box, out: MoovSkeleton, max_table_bytes: int) -> bytes:
    parts: list[bytes] = []
    for child in _children(reader, box):
        if child.type in _DESCEND:
            parts.append(_rebuild(reader, child, out, max_table_bytes))
        elif child.type == "stbl":
            parts.append(_stbl(reader, child, max_table_bytes, out))
        elif child.size <= COPY_MAX_BYTES:
            data = _copy(reader, child)
            if child.type == "hdlr" and box.type == "mdia":
                out.handlers.append(_handler(data))
            elif child.type == "mvex":
                out.fragmented = True
                out.has_fragment_duration = b"mehd" in data
            parts.append(data)
        elif child.type in ("mvex", "mvhd", "tkhd", "mdhd", "hdlr"):
            raise SkeletonError(f"'{child.type}' of {child.size} bytes")
    return _box(box.type, b"".join(parts))


def moov_skeleton(reader: RangeReader, moov: Box, *, max_table_bytes: int) -> MoovSkeleton:
    """The stand-in for `moov` (a top-level box of the file behind `reader`): a moov box of
    exactly moov.size bytes whose tail is a `free` child. Only the `free` child's header is
    returned, not its payload: the caller writes `data` at moov.offset over a sparse copy
    and leaves the rest as it is. Raises SkeletonError (a BoxError) if it cannot be built;
    the caller then reads the moov whole."""
    if moov.type != "moov":
        raise SkeletonError(f"expected a moov box, got '{moov.type}'")
    out = MoovSkeleton(b"")
    body = _rebuild(reader, moov, out, max_table_bytes)[8:]
    if not out.handlers or len(out.frames) != len(out.handlers):
        raise SkeletonError("a track without exactly one handler and one stts")
    if any(h == "vide" and n == 0 for h, n in zip(out.handlers, out.frames, strict=True)):
        # Its frame rate would then come from packets, which the stand-in does not have.
        raise SkeletonError("a video track whose stts gives no frame rate")
    header = (struct.pack(">I4s", moov.size, b"moov") if moov.header_size == 8
              else struct.pack(">I4sQ", 1, b"moov", moov.size))
    pad = moov.size - len(header) - len(body)
    if pad < 8 or pad >= 2**32:
        raise SkeletonError(f"stand-in moov leaves {pad} bytes: no room for a free box")
    out.data = header + body + struct.pack(">I4s", pad, b"free")
    return out
