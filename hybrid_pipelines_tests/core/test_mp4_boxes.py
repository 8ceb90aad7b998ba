"""Box walking on hand-built bytes: well-formed layouts and hostile ones."""

from __future__ import annotations

import struct

import pytest

from hybrid_pipelines.media_catalog.range_reader import ByteCountingRangeReader, BytesReader
from hybrid_pipelines.media_catalog.rules.mp4_boxes import (
    Box,
    BoxError,
    BoxTooLargeError,
    TruncatedBoxError,
    child_boxes,
    iter_boxes,
    parse_moov,
    walk_boxes,
)


def box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def large_box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4sQ", 1, kind, 16 + len(payload)) + payload


def hdlr(handler: bytes) -> bytes:
    return box(b"hdlr", b"\x00" * 8 + handler + b"\x00" * 12)


def trak(handler: bytes) -> bytes:
    return box(b"trak", box(b"tkhd", b"\x00" * 84) + box(b"mdia", hdlr(handler)))


def reader(data: bytes) -> ByteCountingRangeReader:
    return ByteCountingRangeReader(BytesReader(data, "test.mp4"))


FTYP = box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2mp41")


def test_walks_moov_after_mdat_with_one_read_per_box() -> None:
    mdat = box(b"mdat", b"\x00" * 10_000)
    moov = box(b"moov", box(b"mvhd", b"\x00" * 100))
    data = FTYP + box(b"free") + mdat + moov
    src = reader(data)
    boxes = walk_boxes(src)
    assert [b.type for b in boxes] == ["ftyp", "free", "mdat", "moov"]
    assert boxes[2] == Box("mdat", len(FTYP) + 8, len(mdat), 8)
    assert boxes[3].end == len(data)
    assert src.reads == 4
    # Header reads only: the 10 kB mdat payload is never fetched.
    assert src.bytes_read <= 4 * 16


def test_largesize_header() -> None:
    data = FTYP + large_box(b"mdat", b"\x01" * 100) + box(b"moov")
    boxes = walk_boxes(reader(data))
    assert boxes[1] == Box("mdat", len(FTYP), 116, 16)
    assert boxes[1].payload_offset == len(FTYP) + 16
    assert boxes[2].type == "moov"


def test_size_zero_extends_to_end_of_file() -> None:
    data = FTYP + struct.pack(">I4s", 0, b"mdat") + b"\x00" * 500
    boxes = walk_boxes(reader(data))
    assert boxes[-1] == Box("mdat", len(FTYP), 508, 8)


def test_size_smaller_than_header_is_rejected() -> None:
    data = FTYP + struct.pack(">I4s", 4, b"free") + b"\x00" * 20
    with pytest.raises(BoxError, match="less than its own 8-byte header"):
        walk_boxes(reader(data))


def test_largesize_smaller_than_header_is_rejected() -> None:
    data = FTYP + struct.pack(">I4sQ", 1, b"mdat", 12) + b"\x00" * 20
    with pytest.raises(BoxError, match="16-byte header"):
        walk_boxes(reader(data))


def test_box_past_end_of_file_is_truncation() -> None:
    data = FTYP + struct.pack(">I4s", 1_000_000, b"mdat") + b"\x00" * 100
    with pytest.raises(TruncatedBoxError, match="'mdat'.*1000000 bytes"):
        walk_boxes(reader(data))


def test_trailing_bytes_too_short_for_a_header() -> None:
    with pytest.raises(TruncatedBoxError, match="too short"):
        walk_boxes(reader(FTYP + b"\x00\x00\x00"))


def test_huge_declared_moov_is_refused_before_reading() -> None:
    data = FTYP + struct.pack(">I4sQ", 1, b"moov", 2**62) + b"\x00" * 64
    src = reader(data)
    with pytest.raises(BoxTooLargeError, match="over the 268435456-byte limit"):
        walk_boxes(src)
    assert src.bytes_read <= 2 * 16


def test_moov_cap_is_configurable() -> None:
    data = FTYP + box(b"moov", b"\x00" * 2000)
    with pytest.raises(BoxTooLargeError):
        walk_boxes(reader(data), max_moov_bytes=1000)
    assert walk_boxes(reader(data), max_moov_bytes=4096)[1].type == "moov"


def test_max_boxes_bounds_the_walk() -> None:
    data = FTYP + box(b"free") * 50
    with pytest.raises(BoxError, match="more than 10 boxes"):
        walk_boxes(reader(data), max_boxes=10)


def test_non_box_bytes_are_rejected() -> None:
    with pytest.raises(BoxError, match="invalid box type"):
        walk_boxes(reader(b"\x00\x00\x00\x10\xff\xfe\x00\x01" + b"\x00" * 8))


def test_walk_is_lazy() -> None:
    data = FTYP + box(b"moov") + (box(b"moof", b"\x00" * 8) + box(b"mdat", b"\x00" * 8)) * 100
    src = reader(data)
    walker = iter_boxes(src)
    first = [next(walker) for _ in range(3)]
    assert [b.type for b in first] == ["ftyp", "moov", "moof"]
    assert src.reads == 3


def test_walk_of_a_sub_range() -> None:
    inner = box(b"mvhd", b"\x00" * 10) + box(b"trak")
    data = FTYP + box(b"moov", inner)
    moov = walk_boxes(reader(data))[1]
    children = walk_boxes(reader(data), start=moov.payload_offset, end=moov.end)
    assert [c.type for c in children] == ["mvhd", "trak"]


def test_child_box_past_parent_end_is_truncation() -> None:
    moov = struct.pack(">I4s", 24, b"moov") + struct.pack(">I4s", 100, b"trak") + b"\x00" * 8
    with pytest.raises(TruncatedBoxError):
        child_boxes(moov, Box("moov", 0, 24, 8))


def test_parse_moov_counts_tracks_by_handler() -> None:
    moov = box(b"moov", box(b"mvhd", b"\x00" * 100) + trak(b"vide") + trak(b"soun") + trak(b"soun"))
    info = parse_moov(moov)
    assert info.handlers == ["vide", "soun", "soun"]
    assert (info.video_tracks, info.audio_tracks) == (1, 2)
    assert not info.fragmented


def test_parse_moov_detects_fragmentation_and_mehd() -> None:
    plain = box(b"moov", trak(b"vide") + box(b"mvex", box(b"trex", b"\x00" * 24)))
    with_mehd = box(b"moov", trak(b"vide") + box(b"mvex", box(b"mehd", b"\x00" * 8)))
    assert parse_moov(plain).fragmented and not parse_moov(plain).has_fragment_duration
    assert parse_moov(with_mehd).has_fragment_duration


def test_parse_moov_rejects_a_cut_moov() -> None:
    moov = box(b"moov", trak(b"vide"))
    with pytest.raises(TruncatedBoxError):
        parse_moov(moov[:-10])


def test_trak_without_handler_counts_as_unknown() -> None:
    moov = box(b"moov", box(b"trak", box(b"tkhd", b"\x00" * 84)))
    assert parse_moov(moov).handlers == [""]
