"""ISO-BMFF (MP4/MOV/M4A/3GP) top-level box walking from header reads only.

Finding the moov of a file whose moov sits after a multi-GB mdat costs one small read per
top-level box, instead of streaming the mdat. Everything here treats the input as hostile:
sizes are checked against the header, the end of file and explicit caps before anything is
read or allocated.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from hybrid_pipelines.media_catalog.range_reader import BytesReader, RangeReader

DEFAULT_MAX_BOXES = 100_000
DEFAULT_MAX_MOOV_BYTES = 256 * 1024 * 1024
# Enough for a 64-bit largesize header; reading it in one go keeps it to one read per box.
_HEADER_READ = 16


class Box(NamedTuple):
    type: str
    offset: int
    size: int
    header_size: int

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def payload_offset(self) -> int:
        return self.offset + self.header_size


class BoxError(ValueError):
    """The box structure is malformed."""


class TruncatedBoxError(BoxError):
    """A box runs past the end of the file: the file was cut short."""


class BoxTooLargeError(BoxError):
    """A box declares more bytes than we are willing to read (e.g. a hostile moov size)."""


def _box_type(raw: bytes, offset: int) -> str:
    # Real box types are four printable characters (QuickTime's '©' types only occur inside
    # udta, never at top level); anything else means we are not looking at a box header.
    if not all(0x20 <= c <= 0x7E for c in raw):
        raise BoxError(f"invalid box type {raw!r} at offset {offset}: not an ISO-BMFF box")
    return raw.decode("ascii")


def parse_box_header(header: bytes, offset: int, remaining: int) -> Box:
    """Decode one box header whose first byte sits at `offset`, with `remaining` bytes left
    in the enclosing range (file or parent box)."""
    if len(header) < 8:
        raise TruncatedBoxError(
            f"{remaining} byte(s) left at offset {offset}: too short for a box header"
        )
    size32, raw_type = struct.unpack(">I4s", header[:8])
    box_type = _box_type(raw_type, offset)
    header_size = 8
    if size32 == 1:
        if len(header) < 16:
            raise TruncatedBoxError(f"box '{box_type}' at offset {offset}: largesize cut off")
        size = struct.unpack(">Q", header[8:16])[0]
        header_size = 16
    elif size32 == 0:
        size = remaining  # "extends to the end of the enclosing range"
    else:
        size = size32
    if size < header_size:
        raise BoxError(
            f"box '{box_type}' at offset {offset} declares {size} bytes, "
            f"less than its own {header_size}-byte header"
        )
    return Box(box_type, offset, size, header_size)


def iter_boxes(
    reader: RangeReader,
    *,
    start: int = 0,
    end: int | None = None,
    max_boxes: int = DEFAULT_MAX_BOXES,
    max_moov_bytes: int = DEFAULT_MAX_MOOV_BYTES,
) -> Iterator[Box]:
    """Yield the boxes laid end to end in [start, end) (default: the whole file).

    Lazy, so callers can stop early, e.g. on a fragmented file with thousands of fragments.
    Raises BoxError (or a subclass) on malformed input.
    """
    limit = reader.size if end is None else min(end, reader.size)
    offset = start
    count = 0
    while offset < limit:
        if count >= max_boxes:
            raise BoxError(f"more than {max_boxes} boxes; refusing to walk further")
        remaining = limit - offset
        header = reader.read_at(offset, min(_HEADER_READ, remaining))
        box = parse_box_header(header, offset, remaining)
        if box.type == "moov" and box.size > max_moov_bytes:
            raise BoxTooLargeError(
                f"box 'moov' at offset {offset} declares {box.size} bytes, "
                f"over the {max_moov_bytes}-byte limit"
            )
        if box.size > remaining:
            raise TruncatedBoxError(
                f"box '{box.type}' at offset {offset} declares {box.size} bytes "
                f"but only {remaining} remain (file size {reader.size})"
            )
        yield box
        # size >= header_size >= 8, so the offset strictly grows: no loops are possible.
        offset += box.size
        count += 1


def walk_boxes(
    reader: RangeReader,
    *,
    start: int = 0,
    end: int | None = None,
    max_boxes: int = DEFAULT_MAX_BOXES,
    max_moov_bytes: int = DEFAULT_MAX_MOOV_BYTES,
) -> list[Box]:
    """All top-level boxes as (type, offset, size, header_size)."""
    return list(
        iter_boxes(reader, start=start, end=end, max_boxes=max_boxes, max_moov_bytes=max_moov_bytes)
    )


def child_boxes(data: bytes, box: Box | None = None, *, max_boxes: int = 10_000) -> list[Box]:
    """Children of a container box held in memory (`data` is the whole box, header included),
    with offsets relative to `data`. Without `box`, `data` is a sequence of boxes."""
    reader = BytesReader(data)
    start = box.header_size if box is not None else 0
    return walk_boxes(reader, start=start, max_boxes=max_boxes, max_moov_bytes=len(data))


@dataclass(frozen=True)
class MoovInfo:
    """What the moov says the file holds, used to check ffprobe's answer against."""

    handlers: list[str] = field(default_factory=list)  # one per trak: 'vide', 'soun', ...
    fragmented: bool = False  # has mvex: samples also live in moof boxes
    has_fragment_duration: bool = False  # mvex/mehd gives the total duration up front

    @property
    def video_tracks(self) -> int:
        return self.handlers.count("vide")

    @property
    def audio_tracks(self) -> int:
        return self.handlers.count("soun")


def _find_child(data: bytes, parent: Box, wanted: str) -> Box | None:
    for child in child_boxes(data[parent.offset : parent.end], _rebase(parent)):
        if child.type == wanted:
            return Box(child.type, parent.offset + child.offset, child.size, child.header_size)
    return None


def _rebase(box: Box) -> Box:
    return Box(box.type, 0, box.size, box.header_size)


def _trak_handler(data: bytes, trak: Box) -> str:
    mdia = _find_child(data, trak, "mdia")
    hdlr = _find_child(data, mdia, "hdlr") if mdia else None
    if hdlr is None:
        return ""
    # hdlr payload: version/flags (4), pre_defined (4), handler_type (4).
    raw = data[hdlr.payload_offset + 8 : hdlr.payload_offset + 12]
    return raw.decode("latin-1") if len(raw) == 4 else ""


def parse_moov(moov: bytes) -> MoovInfo:
    """Summarise a complete moov box (header included). Raises BoxError if malformed."""
    top = parse_box_header(moov[:16], 0, len(moov))
    if top.type != "moov":
        raise BoxError(f"expected a moov box, got '{top.type}'")
    if top.size != len(moov):
        raise TruncatedBoxError(f"moov declares {top.size} bytes, {len(moov)} given")
    handlers: list[str] = []
    fragmented = has_mehd = False
    for child in child_boxes(moov, top):
        if child.type == "trak":
            handlers.append(_trak_handler(moov, child))
        elif child.type == "mvex":
            fragmented = True
            has_mehd = _find_child(moov, child, "mehd") is not None
    return MoovInfo(handlers=handlers, fragmented=fragmented, has_fragment_duration=has_mehd)
