"""MPEG transport stream packets, inspected from bytes already read.

A TS has no header with a duration: ffmpeg takes it from the first and last timestamps of
each stream, so the prober grows the tail it reads until every stream's PES with a PTS shows
up there. This module answers "which streams start a PES with a PTS in these bytes".
"""

from __future__ import annotations


def ts_pids_with_pts(data: bytes, packet_size: int = 188, sync_offset: int = 0) -> set[int]:
    """PIDs of TS packets in `data` that start a PES carrying a PTS."""
    start = next(
        (
            s
            for s in range(min(packet_size, len(data)))
            if all(
                data[s + sync_offset + k * packet_size] == 0x47
                for k in range(min(3, (len(data) - s - sync_offset - 1) // packet_size + 1))
            )
        ),
        None,
    )
    pids: set[int] = set()
    if start is None:
        return pids
    for pos in range(start + sync_offset, len(data) - 187, packet_size):
        packet = data[pos : pos + 188]
        if packet[0] != 0x47 or not packet[1] & 0x40:  # no sync, or no payload unit start
            continue
        adaptation = (packet[3] >> 4) & 3
        if adaptation in (0, 2):  # no payload
            continue
        p = 4 + (1 + packet[4] if adaptation == 3 else 0)
        if p + 14 <= 188 and packet[p : p + 3] == b"\x00\x00\x01" and packet[p + 7] & 0x80:
            pids.add(((packet[1] & 0x1F) << 8) | packet[2])
    return pids
