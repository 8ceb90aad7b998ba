"""Which container a media file is, from its first bytes alone.

Pure byte inspection, no I/O: the prober reads a head and asks this module what it holds,
so the read plan (and how much more to fetch) can follow the container's own layout.
"""

from __future__ import annotations

from dataclasses import dataclass

_KiB = 1024


@dataclass(frozen=True)
class Sniff:
    container: str  # isobmff, matroska, mpegts, avi, wav, mxf, mp3, flac, ogg, ...
    packet_size: int = 0  # mpegts: 188 or 192 (M2TS)
    sync_offset: int = 0  # mpegts: where 0x47 sits in each packet
    min_head: int = 0  # bytes the header is known to need (e.g. an ID3 tag)


_ISO_TOP_TYPES = {
    b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid",
    b"sidx", b"moof", b"junk",
}  # fmt: skip
# Public: the MXF plan looks for the same key again to find the footer pointer.
MXF_PARTITION_KEY = bytes.fromhex("060e2b34020501010d01020101")
_ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_SIMPLE_MAGICS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x1a\x45\xdf\xa3", "matroska"),
    (0, b"fLaC", "flac"),
    (0, b"OggS", "ogg"),
    (0, b"caff", "caf"),
    (0, b"FLV\x01", "flv"),
    (0, b".RMF", "realmedia"),
    (0, b"#!AMR", "amr"),
    (0, _ASF_GUID, "asf"),
    (0, b"\x00\x00\x01\xba", "mpegps"),
    (0, b"\x00\x00\x01\xb3", "mpegvideo"),
)


def _sniff_riff(head: bytes) -> str | None:
    if head[:4] not in (b"RIFF", b"RF64") or len(head) < 12:
        return None
    return {b"AVI ": "avi", b"AVIX": "avi", b"WAVE": "wav"}.get(head[8:12])


def _sniff_iso(head: bytes) -> bool:
    if len(head) < 8 or head[4:8] not in _ISO_TOP_TYPES:
        return False
    size = int.from_bytes(head[:4], "big")
    return size in (0, 1) or size >= 8


def _ts_layout(head: bytes) -> tuple[int, int, int] | None:
    """(packet_size, sync_offset, first_packet) if the head is a run of TS packets."""
    for packet_size, sync_offset in ((188, 0), (192, 4)):
        for start in range(packet_size):
            count = min(5, (len(head) - start - sync_offset - 1) // packet_size + 1)
            if count < 2:
                break
            if all(head[start + sync_offset + k * packet_size] == 0x47 for k in range(count)):
                return packet_size, sync_offset, start
    return None


_MP3_BITRATES = {
    (3, 3): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (3, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (3, 1): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (2, 3): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (2, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (2, 1): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mpeg_audio_frame(head: bytes, pos: int) -> tuple[int, int] | None:
    """(frame_length, header_signature) of an MPEG audio frame header at pos, if valid."""
    if pos + 4 > len(head) or head[pos] != 0xFF or head[pos + 1] & 0xE0 != 0xE0:
        return None
    version = (head[pos + 1] >> 3) & 3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5, 1: reserved
    layer = (head[pos + 1] >> 1) & 3  # 3: layer I, 2: layer II, 1: layer III
    bitrate_index = head[pos + 2] >> 4
    rate_index = (head[pos + 2] >> 2) & 3
    if version == 1 or layer == 0 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    kbps = _MP3_BITRATES[(3 if version == 3 else 2, layer)][bitrate_index]
    rate = _MP3_RATES[version][rate_index]
    padding = (head[pos + 2] >> 1) & 1
    if layer == 3:
        length = (12 * kbps * 1000 // rate + padding) * 4
    elif layer == 1 and version != 3:
        length = 72 * kbps * 1000 // rate + padding
    else:
        length = 144 * kbps * 1000 // rate + padding
    return length, (version << 4) | (layer << 2) | rate_index


def _sniff_mpeg_audio(head: bytes, pos: int = 0) -> bool:
    # Two consecutive consistent frame headers: a lone 0xFFEx pair is common in random data.
    first = _mpeg_audio_frame(head, pos)
    if first is None:
        return False
    second = _mpeg_audio_frame(head, pos + first[0])
    return second is not None and second[1] == first[1]


def _sniff_adts(head: bytes, pos: int = 0) -> bool:
    def frame_len(p: int) -> int | None:
        if p + 7 > len(head) or head[p] != 0xFF or head[p + 1] & 0xF6 != 0xF0:
            return None
        n = ((head[p + 3] & 3) << 11) | (head[p + 4] << 3) | (head[p + 5] >> 5)
        return n if n >= 7 else None

    first = frame_len(pos)
    return first is not None and frame_len(pos + first) is not None


def _id3_end(head: bytes) -> int | None:
    if len(head) < 10 or head[:3] != b"ID3":
        return None
    size = 0
    for byte in head[6:10]:
        if byte & 0x80:
            return None  # sizes are syncsafe: a set top bit means this is not a tag
        size = (size << 7) | byte
    footer = 10 if head[5] & 0x10 else 0
    return 10 + size + footer


def sniff_container(head: bytes) -> Sniff | None:
    """Identify the container from the first bytes of a file; None when nothing matches."""
    if _sniff_iso(head):
        return Sniff("isobmff")
    for offset, magic, name in _SIMPLE_MAGICS:
        if head[offset : offset + len(magic)] == magic:
            return Sniff(name)
    riff = _sniff_riff(head)
    if riff:
        return Sniff(riff)
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return Sniff("aiff")
    id3_end = _id3_end(head)
    if id3_end is not None:
        return Sniff("mp3", min_head=id3_end)
    if head.find(MXF_PARTITION_KEY, 0, 64 * _KiB) >= 0:
        return Sniff("mxf")
    ts = _ts_layout(head)
    if ts:
        return Sniff("mpegts", packet_size=ts[0], sync_offset=ts[1])
    if _sniff_mpeg_audio(head):
        return Sniff("mp3")
    if _sniff_adts(head):
        return Sniff("aac")
    return None
