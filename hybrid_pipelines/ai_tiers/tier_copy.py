"""Verified copies between a POSIX tier (a JuiceFS or EFS mount) and an S3 object store.

A copy counts as verified only when the store proves it holds the exact bytes: the size, the
sha256 we stored in the object's metadata, and either the server-computed MD5 ETag (single-part
objects) or a streamed read-back hash (multipart objects, whose ETag is not an MD5 of the
content). Callers delete the only other copy only after `verify_object` returned.

Works on any boto3 S3 client; no Dagster here."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybrid_pipelines.ai_tiers import hot_paths

# Re-exported: callers have always found the temp-name rule here.
from hybrid_pipelines.ai_tiers.hot_paths import TEMP_MARKER as TEMP_MARKER
from hybrid_pipelines.ai_tiers.hot_paths import is_temp_name as is_temp_name

CHUNK = 1 << 20
SHA256_META = "sha256"
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")


class CopyError(RuntimeError):
    """A copy between tiers failed; the source copy is untouched."""


class ColdCopyMissing(CopyError):
    """The object store does not hold the copy a step relies on."""


class VerificationFailed(CopyError):
    """The object store holds something, but not the expected bytes."""


@dataclass(frozen=True)
class Digest:
    size: int
    sha256: str
    md5: str


def digest_chunks(chunks: Iterable[bytes]) -> Digest:
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    for chunk in chunks:
        sha.update(chunk)
        md5.update(chunk)
        size += len(chunk)
    return Digest(size, sha.hexdigest(), md5.hexdigest())


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def digest_file(path: Path) -> Digest:
    return digest_chunks(_file_chunks(path))


def digest_fd(fd: int) -> Digest:
    """Hash an open descriptor from its start (the descriptor is not closed)."""
    os.lseek(fd, 0, os.SEEK_SET)
    return digest_chunks(iter(lambda: os.read(fd, CHUNK), b""))


def digest_beneath(root: Path, rel: str) -> tuple[Digest, os.stat_result]:
    """Hash the regular file root/rel, reached without following links (hot_paths), and its
    stat before hashing; NotRegularFileError / PathEscapeError otherwise."""
    with hot_paths.open_file(root, rel) as (fd, st):
        return digest_fd(fd), st


def s3_url(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def head_object(client: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """HEAD the object; None when it does not exist (any other error propagates)."""
    try:
        return dict(client.head_object(Bucket=bucket, Key=key))
    except Exception as exc:  # botocore ClientError; imported lazily by boto3 users
        if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def upload_file(client: Any, bucket: str, key: str, path: Path, digest: Digest, *,
                storage_class: str | None = None, transfer_config: Any = None) -> str | None:
    """Upload `path` with its sha256 in the metadata. Returns the storage class applied: a
    store that rejects the class (MinIO knows only STANDARD/REDUCED_REDUNDANCY) gets the
    object in its default class rather than no object at all."""
    extra: dict[str, Any] = {"Metadata": {SHA256_META: digest.sha256}}
    if storage_class:
        try:
            client.upload_file(str(path), bucket, key, ExtraArgs={**extra,
                               "StorageClass": storage_class}, Config=transfer_config)
            return storage_class
        except Exception as exc:
            if "InvalidStorageClass" not in f"{_error_code(exc)} {exc}":
                raise
    client.upload_file(str(path), bucket, key, ExtraArgs=extra, Config=transfer_config)
    return None


def object_digest(client: Any, bucket: str, key: str, etag: str | None = None) -> Digest:
    """Stream the object and hash it; `etag` pins the version we expect to read."""
    resp = client.get_object(Bucket=bucket, Key=key)
    if etag is not None and resp.get("ETag") != etag:
        raise VerificationFailed(f"{s3_url(bucket, key)} changed while it was being verified "
                                 "(ETag moved); run the job again")
    body = resp["Body"]
    try:
        return digest_chunks(iter(lambda: body.read(CHUNK), b""))
    finally:
        body.close()


def verify_object(client: Any, bucket: str, key: str, expected: Digest) -> str:
    """Prove the store holds exactly `expected`; returns how ('etag-md5' or 'read-back').
    Raises ColdCopyMissing or VerificationFailed naming the object and the mismatch."""
    url = s3_url(bucket, key)
    head = head_object(client, bucket, key)
    if head is None:
        raise ColdCopyMissing(f"cold copy {url} is missing: the object store does not have it")
    if int(head.get("ContentLength", -1)) != expected.size:
        raise VerificationFailed(f"cold copy {url} has {head.get('ContentLength')} bytes, the "
                                 f"source has {expected.size}")
    stored_sha = (head.get("Metadata") or {}).get(SHA256_META)
    if stored_sha != expected.sha256:
        raise VerificationFailed(f"cold copy {url} carries sha256 {stored_sha!r} in its metadata, "
                                 f"the source hashes to {expected.sha256}")
    etag = str(head.get("ETag", "")).strip('"')
    if _MD5_ETAG.match(etag):
        # A single-part ETag is the MD5 the server computed over the bytes it stored.
        if etag != expected.md5:
            raise VerificationFailed(f"cold copy {url} has MD5 ETag {etag}, the source hashes "
                                     f"to {expected.md5}")
        return "etag-md5"
    # Multipart ETags are MD5s of part MD5s: read the object back instead.
    got = object_digest(client, bucket, key, etag=head.get("ETag"))
    if got.sha256 != expected.sha256 or got.size != expected.size:
        raise VerificationFailed(f"cold copy {url} read back as sha256 {got.sha256} "
                                 f"({got.size} bytes), the source is {expected.sha256} "
                                 f"({expected.size} bytes)")
    return "read-back"


def sweep_temp_files(root: Path, older_than_s: float, now_ts: float | None = None,
                     rel: str = "", skipped: hot_paths.Skipped | None = None) -> int:
    """Remove temp files that crashed downloads left behind beneath root/rel (only ours, only
    old ones, never through a link); links and special files met go to `skipped`."""
    limit_ns = int(((now_ts if now_ts is not None else time.time()) - older_than_s) * 1e9)
    removed = 0
    base = hot_paths.parts_of(rel)
    for entry in hot_paths.walk_files(root, rel, skipped, temp_files=True):
        if entry.mtime_ns <= limit_ns and hot_paths.unlink_file(
                root, "/".join([*base, entry.rel]), entry.size, entry.mtime_ns):
            removed += 1
    return removed


@dataclass(frozen=True)
class Download:
    digest: Digest
    verified_by: str  # 'sha256' | 'etag-md5' | 'size-only'
    etag: str = ""  # of the version downloaded
    moved_aside: str | None = None  # rel path of a differing file kept beside the new one


def download_verified(client: Any, bucket: str, key: str, root: Path, rel: str, *,
                      require_checksum: bool = True, replace: bool = True) -> Download:
    """Download to root/rel through a temp file created exclusively beside it (in a directory
    reached without following links, see hot_paths), check size and checksum, fsync, then
    install it: readers never see a partial file, and a failed check leaves the destination
    untouched. replace=False keeps a differing file already there under a conflict name
    (`Download.moved_aside`) instead of overwriting it."""
    url = s3_url(bucket, key)
    head = head_object(client, bucket, key)
    if head is None:
        raise ColdCopyMissing(f"{url} is missing: nothing to download")
    size = int(head.get("ContentLength", -1))
    want_sha = (head.get("Metadata") or {}).get(SHA256_META)
    etag = str(head.get("ETag", "")).strip('"')
    if not want_sha and not _MD5_ETAG.match(etag) and require_checksum:
        raise VerificationFailed(f"{url} has no sha256 metadata and a multipart ETag: nothing "
                                 "to verify a download against")
    parent, name = hot_paths.split(rel)
    with hot_paths.open_dir(root, parent, create=True) as dir_fd:
        tmp, fd = hot_paths.create_temp(dir_fd, name)
        try:
            resp = client.get_object(Bucket=bucket, Key=key)
            if resp.get("ETag") != head.get("ETag"):
                raise VerificationFailed(f"{url} changed during the download; run again")
            body = resp["Body"]
            sha, md5, got = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
            with os.fdopen(fd, "wb") as out:
                fd = -1
                try:
                    while chunk := body.read(CHUNK):
                        out.write(chunk)
                        sha.update(chunk)
                        md5.update(chunk)
                        got += len(chunk)
                finally:
                    body.close()
                out.flush()
                os.fsync(out.fileno())
            digest = Digest(got, sha.hexdigest(), md5.hexdigest())
            if got != size:
                raise VerificationFailed(f"{url}: downloaded {got} bytes, the store says {size}")
            if want_sha:
                if digest.sha256 != want_sha:
                    raise VerificationFailed(f"{url}: downloaded sha256 {digest.sha256}, "
                                             f"metadata says {want_sha}")
                how = "sha256"
            elif _MD5_ETAG.match(etag):
                if digest.md5 != etag:
                    raise VerificationFailed(f"{url}: downloaded MD5 {digest.md5}, ETag says "
                                             f"{etag}")
                how = "etag-md5"
            else:
                how = "size-only"
            aside = hot_paths.install(
                dir_fd, tmp, name, replace=replace,
                same_bytes=lambda efd: digest_fd(efd).sha256 == digest.sha256)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            raise
    moved = "/".join(x for x in (parent, aside) if x) if aside else None
    return Download(digest, how, etag, moved)


def gzip_jsonl_file(path: Path, lines: Iterable[bytes]) -> int:
    """Write JSON lines (already encoded, without newline) gzip-compressed; returns the count."""
    count = 0
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for line in lines:
            gz.write(line)
            gz.write(b"\n")
            count += 1
    return count


def read_gzip_jsonl(client: Any, bucket: str, key: str) -> Iterator[bytes]:
    """Stream the lines of a gzip JSON-lines object (without trailing newlines)."""
    resp = client.get_object(Bucket=bucket, Key=key)
    with gzip.GzipFile(fileobj=resp["Body"], mode="rb") as gz:
        for line in gz:
            if line.strip():
                yield line.rstrip(b"\n")
