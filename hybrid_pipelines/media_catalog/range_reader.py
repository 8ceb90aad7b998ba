"""Random-access byte sources for probing, and the sparse cache probe() reads through.

A RangeReader is the only thing probe() needs from a storage backend: the local
implementation lives here, the NAS/SMB one elsewhere. Every reader counts the bytes it
actually fetched, because "how much did probing cost" is a number the pipelines report.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Protocol, Self, runtime_checkable


@runtime_checkable
class RangeReader(Protocol):
    """Read-only random access to one file of known size.

    `read_at` may return fewer bytes than asked only when the range runs past the end of file.
    """

    @property
    def name(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def bytes_read(self) -> int: ...

    def read_at(self, offset: int, length: int) -> bytes: ...


class ShortReadError(OSError):
    """A reader returned fewer bytes than its own size promised (the file shrank or moved)."""


class ReadBudgetExceeded(Exception):
    """Fetching a range would take a SparseFileCache past its byte budget. Raised before any
    of that range is read, so the cache (and its temp file) never holds more than the budget.
    Not an OSError: no retry can change it."""

    def __init__(self, name: str, needed: int, limit: int) -> None:
        super().__init__(f"{name}: reading would total {needed} bytes, over the budget of "
                         f"{limit} bytes")
        self.name, self.needed, self.limit = name, needed, limit


class LocalFileReader:
    """RangeReader over a local file, using pread so no shared file position is involved."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.name = os.fspath(path)
        self._fd: int | None = os.open(self.name, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self.size = os.fstat(self._fd).st_size
        self.bytes_read = 0

    def read_at(self, offset: int, length: int) -> bytes:
        if self._fd is None:
            raise ValueError(f"{self.name}: reader is closed")
        if offset < 0 or length < 0:
            raise ValueError(f"negative offset/length: {offset}, {length}")
        parts: list[bytes] = []
        got = 0
        # pread may return short counts on some filesystems (FUSE, NFS); loop until EOF.
        while got < length:
            chunk = os.pread(self._fd, length - got, offset + got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        self.bytes_read += got
        return b"".join(parts)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class BytesReader:
    """RangeReader over bytes already in memory (box payloads, hand-built test input)."""

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        self.name = name
        self._data = data
        self.size = len(data)
        self.bytes_read = 0

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"negative offset/length: {offset}, {length}")
        chunk = self._data[offset : offset + length]
        self.bytes_read += len(chunk)
        return chunk


class ByteCountingRangeReader:
    """A RangeReader that passes reads through to another and counts what this one consumer
    fetched (bytes and calls).

    The wrapped reader's own counter may be cumulative over many probes; this one belongs to
    a single probe() call.
    """

    def __init__(self, inner: RangeReader) -> None:
        self.inner = inner
        self.bytes_read = 0
        self.reads = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def size(self) -> int:
        return self.inner.size

    def read_at(self, offset: int, length: int) -> bytes:
        data = self.inner.read_at(offset, length)
        self.bytes_read += len(data)
        self.reads += 1
        return data


def _merge(intervals: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """Insert [start, end) into sorted, disjoint, non-touching intervals."""
    out: list[tuple[int, int]] = []
    placed = False
    for a, b in intervals:
        if b < start:
            out.append((a, b))
        elif a > end:
            if not placed:
                out.append((start, end))
                placed = True
            out.append((a, b))
        else:
            start, end = min(a, start), max(b, end)
    if not placed:
        out.append((start, end))
    return out


def _gaps(intervals: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """Parts of [start, end) not covered by the intervals."""
    gaps: list[tuple[int, int]] = []
    pos = start
    for a, b in intervals:
        if b <= pos:
            continue
        if a >= end:
            break
        if a > pos:
            gaps.append((pos, a))
        pos = max(pos, b)
        if pos >= end:
            break
    if pos < end:
        gaps.append((pos, end))
    return gaps


class SparseFileCache:
    """Caches fetched ranges at their true offsets in a sparse temp file of the source's size.

    The temp file doubles as ffprobe's input: it has the real length, so demuxers that seek,
    or derive duration/bit rate from the file size, see the right positions, while the bytes
    never fetched read back as zeros and cost no disk space. Re-reading a cached range does
    not touch the source, so escalating from a small read to a bigger one only pays for the
    new bytes. With `max_bytes`, the total fetched over the cache's life never exceeds it:
    a range that would cross it raises ReadBudgetExceeded before any of it is read.
    """

    def __init__(
        self,
        source: RangeReader,
        *,
        suffix: str = "",
        tmp_dir: str | None = None,
        chunk_bytes: int = 8 * 1024 * 1024,
        max_bytes: int | None = None,
    ) -> None:
        self.source = source
        self.max_bytes = max_bytes
        self.name = source.name
        self.size = source.size
        self.bytes_read = 0
        self._chunk = chunk_bytes
        self._covered: list[tuple[int, int]] = []
        fd, self.path = tempfile.mkstemp(prefix="probe-", suffix=suffix, dir=tmp_dir)
        self._file = os.fdopen(fd, "r+b")
        self._file.truncate(self.size)

    @property
    def covered(self) -> list[tuple[int, int]]:
        return list(self._covered)

    @property
    def covered_bytes(self) -> int:
        return sum(b - a for a, b in self._covered)

    def is_covered(self, offset: int, length: int) -> bool:
        end = min(offset + length, self.size)
        return not _gaps(self._covered, offset, end)

    def ensure(self, offset: int, length: int) -> None:
        """Fetch whatever part of [offset, offset+length) (clipped to EOF) is not cached yet."""
        end = min(offset + max(length, 0), self.size)
        gaps = _gaps(self._covered, max(offset, 0), end)
        if self.max_bytes is not None:
            needed = self.bytes_read + sum(b - a for a, b in gaps)
            if needed > self.max_bytes:
                raise ReadBudgetExceeded(self.name, needed, self.max_bytes)
        for gap_start, gap_end in gaps:
            pos = gap_start
            while pos < gap_end:
                want = min(self._chunk, gap_end - pos)
                data = self.source.read_at(pos, want)
                if len(data) < want:
                    raise ShortReadError(
                        f"{self.name}: got {len(data)} of {want} bytes at offset {pos}, "
                        f"but the file was {self.size} bytes"
                    )
                self._file.seek(pos)
                self._file.write(data)
                self.bytes_read += len(data)
                self._covered = _merge(self._covered, pos, pos + len(data))
                pos += len(data)
        self._file.flush()

    def read_at(self, offset: int, length: int) -> bytes:
        end = min(offset + max(length, 0), self.size)
        if offset >= end:
            return b""
        self.ensure(offset, end - offset)
        self._file.seek(offset)
        return self._file.read(end - offset)

    def read_cached(self, offset: int, length: int) -> bytes:
        """Bytes as they stand in the cache (zeros where nothing was fetched); no source I/O."""
        end = min(offset + max(length, 0), self.size)
        if offset >= end:
            return b""
        self._file.seek(offset)
        return self._file.read(end - offset)

    @contextmanager
    def patched(self, patches: tuple[tuple[int, bytes], ...]) -> Iterator[None]:
        """Write stand-in bytes (e.g. a moov without sample tables) over the temp file for the
        duration of the block, then put back what was there. Patches are not fetched bytes:
        they count as neither read nor covered, so a later ensure() still fetches the real
        ones, and nothing fetched is lost under a patch."""
        saved = [(offset, self.read_cached(offset, len(data))) for offset, data in patches]
        try:
            for offset, data in patches:
                if offset < 0 or offset + len(data) > self.size:
                    raise ValueError(f"patch of {len(data)} bytes at {offset} is outside "
                                     f"the {self.size}-byte file")
                self._file.seek(offset)
                self._file.write(data)
            self._file.flush()
            yield
        finally:
            for offset, data in reversed(saved):
                self._file.seek(offset)
                self._file.write(data)
            self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class BlockReader:
    """A RangeReader view of a SparseFileCache that fetches whole aligned blocks within
    [start, end): walking many small box headers that sit close together (a moov's mvhd,
    tkhd, mdhd, hdlr, stsd, stts) then costs one round trip per block, not one per header.
    """

    def __init__(self, cache: SparseFileCache, start: int, end: int, block: int) -> None:
        self.cache, self.start, self.end, self.block = cache, start, min(end, cache.size), block

    @property
    def name(self) -> str:
        return self.cache.name

    @property
    def size(self) -> int:
        return self.cache.size

    @property
    def bytes_read(self) -> int:
        return self.cache.bytes_read

    def read_at(self, offset: int, length: int) -> bytes:
        stop = min(offset + max(length, 0), self.size)
        if offset >= stop:
            return b""
        if self.start <= offset and stop <= self.end:
            first = self.start + (offset - self.start) // self.block * self.block
            last = min(self.end, stop + self.block - 1 - (stop - 1 - self.start) % self.block)
            if not self.cache.is_covered(offset, stop - offset):
                self.cache.ensure(first, last - first)
        return self.cache.read_at(offset, stop - offset)
