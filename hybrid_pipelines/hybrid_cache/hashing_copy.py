"""Streamed copy with SHA-256 computed on the bytes as they pass: a file is never held whole in
memory, and the hash describes exactly what was written, not what was meant to be written."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

CHUNK_SIZE = 1 << 20  # 1 MiB: large enough for SMB/S3 throughput, small enough for many workers


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> int | None: ...


@dataclass(frozen=True)
class CopyResult:
    size: int
    sha256: str


def _write_all(dst: Writable, chunk: bytes) -> None:
    # Raw (unbuffered) streams may accept fewer bytes than offered.
    view = memoryview(chunk)
    while view:
        written = dst.write(view)
        if written is None:  # buffered writers take everything and return None on some types
            return
        if written <= 0:
            raise OSError("destination accepted no bytes (disk full or stream closed)")
        view = view[written:]


Progress = Callable[[int], None]
"""Called after every chunk with its length; may raise to stop the copy (a lost lease)."""


def copy_with_sha256(src: Readable, dst: Writable, chunk_size: int = CHUNK_SIZE, *,
                     progress: Progress | None = None) -> CopyResult:
    """Copy `src` to `dst` in chunks, hashing each chunk as it goes by."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    digest, size = hashlib.sha256(), 0
    while True:
        chunk = src.read(chunk_size)
        if not chunk:
            break
        digest.update(chunk)
        _write_all(dst, chunk)
        size += len(chunk)
        if progress:
            progress(len(chunk))
    return CopyResult(size, digest.hexdigest())


def sha256_of_stream(src: Readable, chunk_size: int = CHUNK_SIZE, *,
                     progress: Progress | None = None) -> CopyResult:
    """Hash a stream without keeping it: used to re-read what a backend really holds. A raw
    stream (an SMB or local file opened unbuffered) is read into one reused buffer: no new
    bytes object per chunk, which is a good part of the read-back's CPU over SMB."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    digest, size = hashlib.sha256(), 0
    readinto = getattr(src, "readinto", None)
    if callable(readinto):
        view = memoryview(bytearray(chunk_size))
        while n := readinto(view):
            digest.update(view[:n])
            size += n
            if progress:
                progress(n)
        return CopyResult(size, digest.hexdigest())
    while True:
        chunk = src.read(chunk_size)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
        if progress:
            progress(len(chunk))
    return CopyResult(size, digest.hexdigest())


class HashingReader:
    """A read-only stream that hashes what its consumer pulls through it, for APIs that want a
    file object (boto3's upload_fileobj) while we still want the SHA-256 of the same bytes.

    `read(n)` returns exactly n bytes until the end of the source, looping over short reads:
    raw SMB/socket streams return less than asked, and boto3 takes a short read as the end of
    the data (a truncated upload) or, at the first read, reads the whole rest into memory."""

    def __init__(self, src: Readable, chunk_size: int = CHUNK_SIZE):
        self._src = src
        self._digest = hashlib.sha256()
        self._chunk = chunk_size
        self._eof = False
        self.size = 0

    def _pull(self, want: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < want and not self._eof:
            chunk = self._src.read(min(want - got, max(self._chunk, 1)))
            if not chunk:
                self._eof = True
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while chunk := self._pull(self._chunk):
                parts.append(chunk)
            data = b"".join(parts)
        else:
            data = self._pull(size)
        if data:
            self._digest.update(data)
            self.size += len(data)
        return data

    def readable(self) -> bool:
        return True

    def result(self) -> CopyResult:
        return CopyResult(self.size, self._digest.hexdigest())
