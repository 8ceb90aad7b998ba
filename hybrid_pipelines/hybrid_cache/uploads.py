"""What the file server does on an upload, for feeding and testing the pipeline: the bytes go
to SeaweedFS (or straight to the NAS while SeaweedFS is down) and one row to file_metadata.
Bytes are streamed and hashed on the way; no upload is ever held whole in memory."""

from __future__ import annotations

import mimetypes
import posixpath
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from boto3.s3.transfer import TransferConfig

from hybrid_pipelines.hybrid_cache.hashing_copy import (
    CHUNK_SIZE,
    HashingReader,
    Readable,
    copy_with_sha256,
)
from hybrid_pipelines.hybrid_cache.sync import temp_name
from hybrid_pipelines.resources.nas_fs import NASFileSystem
from hybrid_pipelines.shared.nas_paths import safe_relpath

_TRANSFER = TransferConfig(multipart_threshold=8 * CHUNK_SIZE,
                           multipart_chunksize=8 * CHUNK_SIZE, use_threads=False)


@dataclass(frozen=True)
class UploadedFile:
    id: UUID
    original_name: str
    stored_name: str
    size: int
    sha256: str
    key: str | None
    nas_path: str
    cached: bool


class PatternStream:
    """`size` pseudo-random bytes from a seed, produced block by block."""

    def __init__(self, size: int, seed: int):
        self.remaining = size
        self._rng = random.Random(seed)

    def read(self, n: int = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        want = self.remaining if n is None or n < 0 else min(n, self.remaining)
        want = min(want, 1 << 20)
        self.remaining -= want
        return self._rng.randbytes(want)


class BytesStream:
    def __init__(self, data: bytes):
        self._data, self._pos = memoryview(data), 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n is None or n < 0 else self._pos + n
        chunk = bytes(self._data[self._pos:end])
        self._pos += len(chunk)
        return chunk


def _names(original_name: str, when: datetime, key_prefix: str, nas_prefix: str,
           file_id: UUID) -> tuple[str, str, str]:
    ext = posixpath.splitext(original_name)[1].lower()[:16]
    stored = f"{file_id.hex}{ext}"
    day = when.strftime("%Y/%m/%d")
    key = f"{key_prefix}{day}/{stored}"
    return stored, key, safe_relpath(posixpath.join(nas_prefix, day, stored))


def _insert(conn: psycopg.Connection, f: UploadedFile, mime: str | None, priority: int,
            when: datetime, recache: bool) -> None:
    conn.execute(
        "INSERT INTO file_metadata (id, original_name, stored_name, mime_type, size, hash,"
        " seaweed_fid, cache_status, nas_path, nas_status, sync_priority, recache_requested,"
        " created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (f.id, f.original_name, f.stored_name, mime, f.size, f.sha256, f.key,
         "cached" if f.cached else None, f.nas_path, "synced" if recache else "pending",
         priority, recache, when, when))


def upload_to_cache(conn: psycopg.Connection, s3: Any, bucket: str, original_name: str,
                    data: Readable | bytes, *, key_prefix: str = "uploads/",
                    nas_prefix: str = "uploads", priority: int = 0,
                    created_at: datetime | None = None) -> UploadedFile:
    """The normal path: object into SeaweedFS, row 'cached' + 'pending'."""
    when = created_at or datetime.now(UTC)
    file_id = uuid.uuid4()
    stored, key, nas_path = _names(original_name, when, key_prefix, nas_prefix, file_id)
    reader = HashingReader(BytesStream(data) if isinstance(data, bytes) else data)
    s3.upload_fileobj(reader, bucket, key, Config=_TRANSFER)
    got = reader.result()
    f = UploadedFile(file_id, original_name, stored, got.size, got.sha256, key, nas_path, True)
    _insert(conn, f, mimetypes.guess_type(original_name)[0], priority, when, recache=False)
    return f


def upload_to_nas(conn: psycopg.Connection, nas: NASFileSystem, original_name: str,
                  data: Readable | bytes, *, nas_prefix: str = "uploads", priority: int = 0,
                  created_at: datetime | None = None) -> UploadedFile:
    """The fallback while SeaweedFS is down: straight to the NAS (temporary name, then
    rename), row with cache_status NULL and the re-cache flag."""
    when = created_at or datetime.now(UTC)
    file_id = uuid.uuid4()
    stored, _key, nas_path = _names(original_name, when, "", nas_prefix, file_id)
    parent = posixpath.dirname(nas_path)
    if parent:
        nas.makedirs(parent)
    # Named like the sync's temporary files, so the reconcile job removes one a crash left.
    tmp = temp_name(nas_path, f"upload{uuid.uuid4().hex[:8]}")
    src = BytesStream(data) if isinstance(data, bytes) else data
    with nas.open_write(tmp) as out:
        got = copy_with_sha256(src, out)
    nas.rename(tmp, nas_path)
    f = UploadedFile(file_id, original_name, stored, got.size, got.sha256, None, nas_path,
                     False)
    _insert(conn, f, mimetypes.guess_type(original_name)[0], priority, when, recache=True)
    return f


KIB, MIB = 1024, 1024 * 1024
# (weight, low, high): mostly small documents and images, some clips, a few large videos.
SIZE_MIX = ((5, 0, 0), (50, 1 * KIB, 64 * KIB), (30, 64 * KIB, MIB), (12, MIB, 4 * MIB),
            (3, 4 * MIB, 16 * MIB))
EXTENSIONS = (".jpg", ".png", ".pdf", ".mp4", ".mov", ".txt", ".zip")


def mixed_sizes(n: int, seed: int | None = 0, max_size: int = 16 * MIB) -> Iterator[int]:
    rng = random.Random(seed)
    weights = [w for w, _, _ in SIZE_MIX]
    for _ in range(n):
        _, low, high = rng.choices(SIZE_MIX, weights)[0]
        yield min(max_size, rng.randint(low, high))


@dataclass
class SimulationReport:
    cached: int = 0
    to_nas: int = 0
    bytes: int = 0


def simulate_uploads(conn: psycopg.Connection, s3: Any, bucket: str, n: int, *,
                     nas: NASFileSystem | None = None, seaweed_up: bool = True,
                     seed: int | None = 0,
                     max_size: int = 16 * MIB, key_prefix: str = "uploads/",
                     nas_prefix: str = "uploads") -> SimulationReport:
    """`n` uploads of mixed sizes; with `seaweed_up` False they take the NAS fallback."""
    if n < 0:
        raise ValueError(f"number of uploads must be >= 0, got {n}")
    rng = random.Random(seed)
    report = SimulationReport()
    for i, size in enumerate(mixed_sizes(n, seed, max_size)):
        name = f"upload-{i:05d}{rng.choice(EXTENSIONS)}"
        stream = PatternStream(size, rng.getrandbits(64))
        if seaweed_up:
            upload_to_cache(conn, s3, bucket, name, stream, key_prefix=key_prefix,
                            nas_prefix=nas_prefix)
            report.cached += 1
        else:
            if nas is None:
                raise RuntimeError("SeaweedFS is down and no NAS is configured for the fallback")
            upload_to_nas(conn, nas, name, stream, nas_prefix=nas_prefix)
            report.to_nas += 1
        report.bytes += size
    return report
