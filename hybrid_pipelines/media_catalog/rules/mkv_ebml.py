"""Matroska/WebM (EBML) element headers, parsed from bytes already read.

The prober walks the Segment's children one small header read at a time to find where the
header part ends (the first Cluster) and how many tracks it promises; this module decodes
those headers. A malformed number raises EbmlError, which the prober takes as "unusual
layout, fall back to a plain head read" rather than as a verdict on the file.
"""

from __future__ import annotations

from collections.abc import Iterator

from hybrid_pipelines.media_catalog.rules.ffprobe_output import Expected

EBML_ID = 0x1A45DFA3
SEGMENT_ID = 0x18538067
CLUSTER_ID = 0x1F43B675
TRACKS_ID = 0x1654AE6B
_TRACK_ENTRY_ID = 0xAE
_TRACK_TYPE_ID = 0x83


class EbmlError(ValueError):
    """Bytes that are not a valid EBML number or element header."""


def _vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int | None, int]:
    """EBML variable-length integer at pos: (value, length); value None for 'unknown'."""
    if pos >= len(data) or data[pos] == 0:
        raise EbmlError(f"invalid EBML number at {pos}")
    first = data[pos]
    length = 8 - first.bit_length() + 1
    if pos + length > len(data):
        raise EbmlError(f"EBML number at {pos} cut off")
    value = first if keep_marker else first & ((1 << (8 - length)) - 1)
    all_ones = value == (1 << (8 - length)) - 1
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
        all_ones = all_ones and byte == 0xFF
    return (None if all_ones and not keep_marker else value), length


def ebml_element(data: bytes, pos: int) -> tuple[int, int | None, int]:
    """(id, payload size or None if unknown, header length) of the element at pos."""
    element_id, id_len = _vint(data, pos, keep_marker=True)
    if id_len > 4 or element_id is None:
        raise EbmlError(f"invalid EBML element id at {pos}")
    size, size_len = _vint(data, pos + id_len, keep_marker=False)
    return element_id, size, id_len + size_len


def _ebml_children(data: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos < len(data):
        element_id, size, header = ebml_element(data, pos)
        if size is None:
            return
        yield element_id, data[pos + header : pos + header + size]
        pos += header + size


def mkv_track_counts(tracks_payload: bytes) -> Expected:
    """Video/audio track counts from the payload of a Matroska Tracks element."""
    video = audio = 0
    for element_id, entry in _ebml_children(tracks_payload):
        if element_id != _TRACK_ENTRY_ID:
            continue
        for child_id, value in _ebml_children(entry):
            if child_id == _TRACK_TYPE_ID:
                kind = int.from_bytes(value, "big")
                video += kind == 1
                audio += kind == 2
    return Expected(video=video, audio=audio)
