"""One read plan per container family: which bytes to fetch, and what to hand ffprobe.

A plan is a generator of Attempts, cheapest first. The driver pulls them one at a time,
fetches each one's ranges and stops at the first answer that passes validation, so a bigger
read is paid for only when a smaller one failed. A plan raises ProbeFailure when the layout
itself proves the file broken (truncated, hostile sizes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from hybrid_pipelines.media_catalog.probe.context import Attempt, ProbeContext, ProbeFailure
from hybrid_pipelines.media_catalog.range_reader import BlockReader
from hybrid_pipelines.media_catalog.rules.container_sniff import MXF_PARTITION_KEY
from hybrid_pipelines.media_catalog.rules.ffprobe_output import Expected
from hybrid_pipelines.media_catalog.rules.mkv_ebml import (
    CLUSTER_ID,
    EBML_ID,
    SEGMENT_ID,
    TRACKS_ID,
    EbmlError,
    ebml_element,
    mkv_track_counts,
)
from hybrid_pipelines.media_catalog.rules.mp4_boxes import (
    Box,
    BoxError,
    BoxTooLargeError,
    TruncatedBoxError,
    iter_boxes,
    parse_moov,
)
from hybrid_pipelines.media_catalog.rules.mp4_skeleton import moov_skeleton
from hybrid_pipelines.media_catalog.rules.mpegts_packets import ts_pids_with_pts

KiB = 1024
MiB = 1024 * KiB

# TS has no header: stream parameters come from the first packets, so the head must carry
# a few frames of every stream even at broadcast bit rates.
TS_HEAD_BYTES = 256 * KiB
TS_MIN_TAIL_BYTES = 64 * KiB
TS_MAX_TAIL_BYTES = 8 * MiB
# Past this much non-moov data before the mdat, a pipe would carry it all; the sparse file
# can leave it as zeros instead.
PIPE_MAX_EXTRA_BYTES = 1 * MiB
MKV_MAX_HEADER_BYTES = 64 * MiB
ID3_MAX_HEAD_BYTES = 16 * MiB
# A plain MP4 has a handful of top-level boxes; more before the moov means a hostile file.
MAX_LAYOUT_BOXES = 10_000
# 100k fragments is a day of 1 s fragments; each costs two small reads.
MAX_FRAGMENT_BOXES = 200_000
MKV_MAX_HEADER_ELEMENTS = 10_000
# Small top-level MP4 boxes are fetched whole for a sparse file; media payload and padding
# stay zeros, and the moov is fetched on its own, under its own cap.
METADATA_BOX_MAX_BYTES = 1 * MiB
# The moov's box headers are walked in blocks of this size (one round trip each); stts, read
# whole for its sums, is 24 bytes at a constant frame rate and 8 bytes a sample at worst.
SKELETON_BLOCK_BYTES = 8 * KiB
SKELETON_MAX_TABLE_BYTES = 16 * MiB
_PAYLOAD_BOXES = frozenset({"mdat", "free", "skip", "wide", "moov"})
ESCALATION_HEAD_BYTES = 4 * MiB
ESCALATION_TAIL_BYTES = 1 * MiB
GENERIC_TAIL_BYTES = 256 * KiB
# A file of a container we have no plan for is read whole up to this size (exact answers).
UNKNOWN_WHOLE_FILE_BYTES = 16 * MiB
# Containers whose duration ffmpeg takes from the last timestamps in the file (Ogg granule
# positions, MPEG-PS/ES PTS, FLV's last tag) rather than from a header.
_DURATION_AT_END = frozenset({"ogg", "mpegps", "mpegvideo", "flv", "unknown"})


# ISO-BMFF ------------------------------------------------------------------


@dataclass
class _IsoLayout:
    boxes: list[Box]
    moov: Box
    mdat: Box | None
    resume_at: int | None  # where the walk stopped early (fragmented files), else None


def _box_failure(exc: BoxError, ctx: ProbeContext | None = None) -> ProbeFailure:
    if isinstance(exc, TruncatedBoxError):
        return ProbeFailure(f"truncated: {exc}")
    if isinstance(exc, BoxTooLargeError):
        opts = ctx.opts if ctx else None
        if opts is not None and opts.moov_cap < opts.max_moov_bytes:
            # The read budget, not the structural cap, refused it: name the knob.
            return ProbeFailure(f"moov too large: {exc}; probe would read more than the "
                                f"read budget; raise HP_PROBE_MAX_READ_BYTES (now "
                                f"{opts.max_read_bytes}) to read it")
        return ProbeFailure(f"moov too large: {exc}")
    return ProbeFailure(f"corrupt MP4/MOV structure: {exc}")


def _iso_layout(ctx: ProbeContext) -> _IsoLayout:
    boxes: list[Box] = []
    moov: Box | None = None
    mdat: Box | None = None
    resume_at: int | None = None
    walker = iter_boxes(ctx.cache, max_boxes=MAX_LAYOUT_BOXES, max_moov_bytes=ctx.opts.moov_cap)
    try:
        for box in walker:
            boxes.append(box)
            if box.type == "moov" and moov is None:
                moov = box
            elif box.type == "mdat" and mdat is None:
                mdat = box
            elif box.type == "moof" and moov is not None:
                # Fragmented: thousands of boxes may follow; walk them only if needed.
                resume_at = box.end
                break
    except BoxError as exc:
        if moov is None or mdat is None:
            raise _box_failure(exc, ctx) from exc
        # Junk after a complete moov and mdat (e.g. zero padding) does not stop ffprobe.
        ctx.log(f"ignored trailing data: {exc}")
    if moov is None:
        kinds = ",".join(b.type for b in boxes[:8])
        raise ProbeFailure(f"truncated: no moov box (top-level boxes: {kinds})")
    return _IsoLayout(boxes, moov, mdat, resume_at)


def _fetch_metadata(ctx: ProbeContext, box: Box) -> None:
    """Fetch a small top-level box that is not media payload (moof, sidx, styp, meta...):
    left as zeros in the sparse file it would read as garbage to the demuxer."""
    if box.type not in _PAYLOAD_BOXES and box.size <= METADATA_BOX_MAX_BYTES:
        # Also take the next box header in the same read: one round trip, not two.
        ctx.cache.ensure(box.offset, box.size + 16)


def _fetch_fragments(ctx: ProbeContext, start: int) -> bool:
    """Fetch every moof (and sidx...) after `start` so ffprobe can sum the fragment
    durations; False if the walk had to give up (the answer would then be silently short)."""
    try:
        for box in iter_boxes(ctx.cache, start=start, max_boxes=MAX_FRAGMENT_BOXES):
            _fetch_metadata(ctx, box)
    except TruncatedBoxError as exc:
        raise _box_failure(exc) from exc
    except BoxError as exc:
        ctx.log(f"fragment walk gave up: {exc}")
        return False
    return True


def _skeleton_attempt(ctx: ProbeContext, layout: _IsoLayout) -> Attempt | None:
    """ffprobe on a stand-in moov without sample tables (rules.mp4_skeleton): a few KiB of
    a moov that grows ~2 MiB per hour. None if the moov does not lend itself to it
    (fragmented, exotic); the full-moov attempts follow either way."""
    moov = layout.moov
    reader = BlockReader(ctx.cache, moov.offset, moov.end, SKELETON_BLOCK_BYTES)
    # stts is the one table read whole (for its sums); it must leave room in the budget.
    cap = min(SKELETON_MAX_TABLE_BYTES, ctx.opts.moov_cap)
    try:
        skeleton = moov_skeleton(reader, moov, max_table_bytes=cap)
    except BoxError as exc:
        ctx.log(f"stand-in moov skipped: {exc}")
        return None
    if skeleton.fragmented:
        return None
    expected = Expected(video=skeleton.handlers.count("vide"),
                        audio=skeleton.handlers.count("soun"))
    for box in layout.boxes:
        _fetch_metadata(ctx, box)
    return Attempt("sparse stand-in moov (no sample tables)", "file",
                   patches=((moov.offset, skeleton.data),), expected=expected)


def _plan_isobmff(ctx: ProbeContext) -> Iterator[Attempt]:
    layout = _iso_layout(ctx)
    skeleton = _skeleton_attempt(ctx, layout)
    if skeleton is not None:
        yield skeleton
    moov = layout.moov
    ctx.cache.ensure(moov.offset, moov.size)
    try:
        info = parse_moov(ctx.cache.read_cached(moov.offset, moov.size))
    except BoxError as exc:
        raise ProbeFailure(f"corrupt MP4/MOV structure: moov: {exc}") from exc
    expected = Expected(video=info.video_tracks, audio=info.audio_tracks)
    for box in layout.boxes:
        _fetch_metadata(ctx, box)
    if info.fragmented and not info.has_fragment_duration:
        # Without mehd the duration is the sum of all fragments: every moof is needed.
        if layout.resume_at is None or _fetch_fragments(ctx, layout.resume_at):
            yield Attempt("sparse moov+all moofs", "file", expected=expected)
        return
    mdat = layout.mdat
    if mdat is not None and moov.end <= mdat.offset:
        pipe_len = mdat.payload_offset
        if pipe_len - moov.size <= ctx.opts.head_bytes + PIPE_MAX_EXTRA_BYTES:
            # Stop right after the mdat header: a cut sample upsets the decoders, while no
            # sample at all lets ffprobe take everything from the moov.
            yield Attempt("pipe head through moov", "pipe", ((0, pipe_len),), pipe_len, expected)
    yield Attempt("sparse head+moov", "file", expected=expected)
    yield Attempt(
        "sparse 4 MiB head+moov+tail",
        "file",
        ((0, ESCALATION_HEAD_BYTES), ctx.tail(ESCALATION_TAIL_BYTES)),
        expected=expected,
    )


# Matroska ------------------------------------------------------------------


@dataclass(frozen=True)
class _MkvLayout:
    head_end: int  # just past the first Cluster's header
    expected: Expected | None


def _mkv_element_at(ctx: ProbeContext, pos: int) -> tuple[int, int | None, int]:
    return ebml_element(ctx.cache.read_at(pos, 12), 0)


def _mkv_layout(ctx: ProbeContext) -> _MkvLayout | None:
    """Walk the EBML header and the Segment's children up to the first Cluster, one header
    read each. None if the layout is unusual; raises ProbeFailure if it is truncated."""
    size = ctx.size
    try:
        element_id, ebml_size, header = _mkv_element_at(ctx, 0)
        if element_id != EBML_ID or ebml_size is None:
            return None
        pos = header + ebml_size
        element_id, segment_size, header = _mkv_element_at(ctx, pos)
        if element_id != SEGMENT_ID:
            return None
        pos += header
        if segment_size is not None and pos + segment_size > size:
            raise ProbeFailure(
                f"truncated: Matroska segment declares {segment_size} bytes, "
                f"only {size - pos} present"
            )
        expected: Expected | None = None
        for _ in range(MKV_MAX_HEADER_ELEMENTS):
            if pos >= min(size, MKV_MAX_HEADER_BYTES):
                break
            element_id, element_size, header = _mkv_element_at(ctx, pos)
            if element_id == CLUSTER_ID:
                return _MkvLayout(head_end=pos + header, expected=expected)
            if element_size is None or pos + header + element_size > size:
                return None
            if element_id == TRACKS_ID and element_size <= 16 * MiB:
                expected = mkv_track_counts(ctx.cache.read_at(pos + header, element_size))
            pos += header + element_size
    except EbmlError as exc:
        ctx.log(f"EBML walk gave up: {exc}")
    return None


def _plan_matroska(ctx: ProbeContext) -> Iterator[Attempt]:
    layout = _mkv_layout(ctx)
    if layout is not None:
        # The demuxer needs the first Cluster's header to know the header part is over.
        n = layout.head_end
        yield Attempt("pipe head through first cluster", "pipe", ((0, n),), n, layout.expected)
        n += MiB
        yield Attempt("pipe head +1 MiB", "pipe", ((0, n),), n, layout.expected)
    else:
        yield Attempt("pipe 1 MiB head", "pipe", ((0, MiB),), MiB)
    yield Attempt(
        "sparse 4 MiB head+tail",
        "file",
        ((0, ESCALATION_HEAD_BYTES), ctx.tail(ESCALATION_TAIL_BYTES)),
        expected=layout.expected if layout else None,
    )


# MPEG-TS -------------------------------------------------------------------


def _plan_mpegts(ctx: ProbeContext) -> Iterator[Attempt]:
    cache, sniff = ctx.cache, ctx.sniff
    head = max(TS_HEAD_BYTES, ctx.opts.head_bytes)
    cache.ensure(0, head)
    wanted = ts_pids_with_pts(cache.read_cached(0, head), sniff.packet_size, sniff.sync_offset)
    # Duration is last PTS minus first: the tail must hold a PTS of every stream, and how
    # many bytes that takes depends on the bit rate, so grow it until it does.
    tail = TS_MIN_TAIL_BYTES
    while True:
        start, length = ctx.tail(tail)
        cache.ensure(start, length)
        found = ts_pids_with_pts(
            cache.read_cached(start, length), sniff.packet_size, sniff.sync_offset
        )
        if wanted <= found or tail >= TS_MAX_TAIL_BYTES or start == 0:
            break
        tail *= 2
    yield Attempt("sparse head+tail", "file", ((0, head), ctx.tail(tail)))
    yield Attempt("sparse 4 MiB head+tail", "file", ((0, ESCALATION_HEAD_BYTES), ctx.tail(tail)))


# Everything else -----------------------------------------------------------


def _check_riff_size(ctx: ProbeContext) -> None:
    # AVI writers always patch the RIFF size on close, so a size past EOF means a cut copy;
    # the header alone would otherwise look perfect.
    head = ctx.cache.read_cached(0, 12)
    if head[:4] != b"RIFF" or ctx.sniff.container != "avi":
        return
    declared = int.from_bytes(head[4:8], "little") + 8
    if 8 < declared and head[4:8] != b"\xff\xff\xff\xff" and declared > ctx.size:
        raise ProbeFailure(
            f"truncated: RIFF header declares {declared} bytes, the file has {ctx.size}"
        )


def _check_mxf_footer(ctx: ProbeContext) -> None:
    # A closed MXF header partition points at the footer partition; a footer offset past
    # EOF means the file was cut, even though the header metadata alone looks complete.
    head = ctx.cache.read_cached(0, min(ctx.size, 64 * KiB))
    start = head.find(MXF_PARTITION_KEY)
    if start < 0 or start + 17 > len(head) or head[start + 13] != 0x02:
        return
    ber = head[start + 16]
    value = start + 17 + (ber & 0x7F if ber & 0x80 else 0)
    if value + 32 > len(head):
        return
    footer = int.from_bytes(head[value + 24 : value + 32], "big")
    if footer and start + footer >= ctx.size:
        raise ProbeFailure(
            f"truncated: MXF footer partition expected at offset {start + footer}, "
            f"the file has {ctx.size} bytes"
        )


def _plan_generic(ctx: ProbeContext) -> Iterator[Attempt]:
    _check_riff_size(ctx)
    if ctx.sniff.container == "mxf":
        _check_mxf_footer(ctx)
    head = max(ctx.opts.head_bytes, min(ctx.sniff.min_head + 64 * KiB, ID3_MAX_HEAD_BYTES))
    if ctx.sniff.container == "unknown":
        yield from _plan_unknown(ctx, head)
        return
    if ctx.sniff.container in _DURATION_AT_END:
        # A head alone gives these a plausible but wrong duration (estimated from the
        # bit rate), which validation cannot see: never try without the tail. Stream
        # analysis stays in the head (-probesize): past it are zeros (FLV calls them
        # "Packet mismatch" and the attempt would fail for nothing).
        yield Attempt("sparse head+64 KiB tail", "file", ((0, head), ctx.tail(64 * KiB)),
                      probesize=head // 2)
    else:
        yield Attempt("sparse head", "file", ((0, head),))
    yield Attempt("sparse head+tail", "file", ((0, head), ctx.tail(GENERIC_TAIL_BYTES)))
    yield Attempt(
        "sparse 4 MiB head+tail",
        "file",
        ((0, max(head, ESCALATION_HEAD_BYTES)), ctx.tail(ESCALATION_TAIL_BYTES)),
    )


def _plan_unknown(ctx: ProbeContext, head: int) -> Iterator[Attempt]:
    # ffprobe picks the demuxer itself (still within the whitelist). If none opens head+tail,
    # the file is not media. If one does, its answer on a small sparse read is not trusted:
    # with no plan for this layout we cannot tell which bytes its stream analysis needs,
    # and zeros where frames should be read as plausible lies (a DV file's 64 KiB head
    # gives 29.97 fps for a 25 fps recording). So: small files whole; big ones from a 4 MiB
    # head with ffprobe's stream analysis (-probesize) kept to half of it, then all.
    yield Attempt("unknown: is it media? sparse head+64 KiB tail", "file",
                  ((0, head), ctx.tail(64 * KiB)), final_if_unrecognised=True,
                  recognise_only=True)
    if ctx.size > UNKNOWN_WHOLE_FILE_BYTES:
        big_head = max(head, ESCALATION_HEAD_BYTES)
        yield Attempt("unknown: sparse 4 MiB head+tail", "file",
                      ((0, big_head), ctx.tail(ESCALATION_TAIL_BYTES)),
                      final_if_unrecognised=True, probesize=big_head // 2)


_PLANS: dict[str, Callable[[ProbeContext], Iterator[Attempt]]] = {
    "isobmff": _plan_isobmff,
    "matroska": _plan_matroska,
    "mpegts": _plan_mpegts,
}


def attempts(ctx: ProbeContext) -> Iterator[Attempt]:
    """The plan for the sniffed container; anything without its own plan gets the generic
    head, head+tail ladder."""
    plan = _PLANS.get(ctx.sniff.container, _plan_generic)
    yield from plan(ctx)
