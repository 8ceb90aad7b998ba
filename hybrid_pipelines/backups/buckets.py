"""Bucket mirrors and uploaded files, with verification.

A mirror copies every object of a source bucket under `<dest_prefix>` of the backup bucket
(server-side CopyObject when both live on the same store, streamed otherwise) and records the
source listing it copied as the manifest. Verification lists the copy and compares keys, sizes
and ETags with that manifest; where an ETag cannot prove equality (multipart `-N` ETags,
which a copy does not keep) both objects are re-hashed (MD5 of the bytes)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from hybrid_pipelines.backups.rules.compare import (
    ObjectFacts,
    clean_etag,
    compare_listings,
    multipart_etag,
)

COPY_LIMIT = 5 * 1024**3  # CopyObject's limit; bigger objects are streamed
CHUNK = 8 * 1024**2


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def require_bucket(client: Any, bucket: str, role: str) -> None:
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchBucket"):
            raise RuntimeError(f"{role} bucket {bucket!r} does not exist: create it, or fix "
                               "the bucket name in the backup configuration") from exc
        raise


def ensure_bucket(client: Any, bucket: str) -> None:
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if error_code(exc) not in ("404", "NoSuchBucket"):
            raise
        client.create_bucket(Bucket=bucket)


def listing(client: Any, bucket: str, prefix: str = "") -> dict[str, ObjectFacts]:
    """key (prefix removed) -> size and ETag, for every object under `prefix`."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []) or []:
            out[obj["Key"][len(prefix):]] = ObjectFacts(int(obj["Size"]),
                                                        clean_etag(obj["ETag"]))
    return out


def md5_of(client: Any, bucket: str, key: str) -> str:
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    digest = hashlib.md5()  # noqa: S324 - content identity, as S3's ETags are
    for chunk in iter(lambda: body.read(CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


@dataclass
class MirrorFacts:
    source: str
    dest_prefix: str
    manifest: dict[str, ObjectFacts] = field(default_factory=dict)
    vanished: list[str] = field(default_factory=list)  # deleted while we copied
    problems: list[str] = field(default_factory=list)

    @property
    def objects(self) -> int:
        return len(self.manifest)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.manifest.values())

    @property
    def verified(self) -> bool:
        return not self.problems


def _copy(src: Any, src_bucket: str, dst: Any, dst_bucket: str, key: str, dst_key: str,
          same_store: bool, facts: ObjectFacts) -> None:
    if same_store and facts.size <= COPY_LIMIT:
        # IfMatch: a copy of bytes other than the ones listed would fail verification.
        dst.copy_object(Bucket=dst_bucket, Key=dst_key, MetadataDirective="COPY",
                        CopySource={"Bucket": src_bucket, "Key": key},
                        CopySourceIfMatch=f'"{facts.etag}"')
        return
    body = src.get_object(Bucket=src_bucket, Key=key, IfMatch=f'"{facts.etag}"')["Body"]
    dst.upload_fileobj(body, dst_bucket, dst_key)


def _copy_checked(src: Any, src_bucket: str, dst: Any, dst_bucket: str, key: str,
                  dst_key: str, same_store: bool, obj: ObjectFacts) -> ObjectFacts | None:
    """Copy one object as listed; the facts of what was copied, or None when it was deleted
    meanwhile. An object changed between listing and copying is looked up and copied again."""
    for attempt in range(3):
        try:
            _copy(src, src_bucket, dst, dst_bucket, key, dst_key, same_store, obj)
            return obj
        except ClientError as exc:
            code = error_code(exc)
            if code in ("NoSuchKey", "404"):
                return None
            if code not in ("PreconditionFailed", "412") or attempt == 2:
                raise
            head = src.head_object(Bucket=src_bucket, Key=key)
            obj = ObjectFacts(int(head["ContentLength"]), clean_etag(head["ETag"]))
    raise AssertionError("unreachable")


def copy_all(src: Any, src_bucket: str, dst: Any, dst_bucket: str,
             objects: dict[str, ObjectFacts], key_map: Any, same_store: bool,
             workers: int = 8) -> tuple[dict[str, ObjectFacts], list[str]]:
    """Copy `objects` (key -> facts) in parallel (boto3 clients are thread-safe): the
    manifest of what was copied, and the keys that vanished."""
    from concurrent.futures import ThreadPoolExecutor

    keys = sorted(objects)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = list(pool.map(lambda k: _copy_checked(src, src_bucket, dst, dst_bucket, k,
                                                     key_map(k), same_store, objects[k]),
                             keys))
    manifest = {k: f for k, f in zip(keys, done, strict=True) if f is not None}
    return manifest, [k for k, f in zip(keys, done, strict=True) if f is None]


def mirror_bucket(src: Any, src_bucket: str, dst: Any, dst_bucket: str, dest_prefix: str,
                  same_store: bool) -> MirrorFacts:
    """Copy every object of `src_bucket` to `dst_bucket/<dest_prefix><key>`, then delete
    what a previous run left under that prefix and the source no longer has. An object
    changed between listing and copying is copied as it is now; one deleted meanwhile is
    left out (recorded as vanished)."""
    require_bucket(src, src_bucket, "source")
    facts = MirrorFacts(source=src_bucket, dest_prefix=dest_prefix)
    facts.manifest, facts.vanished = copy_all(src, src_bucket, dst, dst_bucket,
                                              listing(src, src_bucket),
                                              lambda k: dest_prefix + k, same_store)
    stale = sorted(listing(dst, dst_bucket, dest_prefix).keys() - facts.manifest.keys())
    for batch in _batches(stale, 1000):
        dst.delete_objects(Bucket=dst_bucket, Delete={
            "Objects": [{"Key": dest_prefix + k} for k in batch], "Quiet": True})
    return facts


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def verify_mirror(src: Any, src_bucket: str, dst: Any, dst_bucket: str,
                  facts: MirrorFacts) -> list[str]:
    """Problems between the manifest and what the backup bucket holds now (stored on
    `facts.problems` too)."""
    found = listing(dst, dst_bucket, facts.dest_prefix)
    problems, rehash = compare_listings(facts.manifest, found)
    for key in rehash:
        if md5_of(dst, dst_bucket, facts.dest_prefix + key) != md5_of(src, src_bucket, key):
            problems.append(f"{key}: content differs from the source (MD5 of the bytes)")
    facts.problems = problems
    return problems


def file_md5_etag(path: Path, part_size: int) -> str:
    """The ETag S3 reports for `path` uploaded by upload_file in parts of `part_size`."""
    parts = []
    size = path.stat().st_size
    with path.open("rb") as fh:
        if size <= part_size:
            return hashlib.md5(fh.read()).hexdigest()  # noqa: S324
        for chunk in iter(lambda: fh.read(part_size), b""):
            parts.append(hashlib.md5(chunk).digest())  # noqa: S324
    return multipart_etag(parts)


def upload_verified(client: Any, path: Path, bucket: str, key: str,
                    part_size: int = 64 * 1024**2) -> list[str]:
    """Upload a local file and check the stored size and ETag against the file; returns the
    problems (empty: verified)."""
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=part_size + 1, multipart_chunksize=part_size)
    client.upload_file(str(path), bucket, key, Config=config)
    head = client.head_object(Bucket=bucket, Key=key)
    want = ObjectFacts(path.stat().st_size, file_md5_etag(path, part_size))
    got = ObjectFacts(int(head["ContentLength"]), clean_etag(head["ETag"]))
    if want != got:
        return [f"{key}: stored as {got.size} bytes, ETag {got.etag}; the file is "
                f"{want.size} bytes, ETag {want.etag}"]
    return []


def restore_bucket(backup: Any, backup_bucket: str, prefix: str, target: Any,
                   target_bucket: str, same_store: bool, force: bool = False) -> MirrorFacts:
    """Copy a mirror (`backup_bucket/<prefix>`) into `target_bucket` (created if missing),
    then verify it the same way. A target holding any object is refused unless `force`
    (then same-named objects are overwritten; others are left alone)."""
    require_bucket(backup, backup_bucket, "backup")
    ensure_bucket(target, target_bucket)
    if not force and target.list_objects_v2(Bucket=target_bucket, MaxKeys=1).get("KeyCount"):
        raise RuntimeError(f"restore target bucket {target_bucket!r} is not empty: restore "
                           "into a new bucket, or pass --force to overwrite same-named objects")
    facts = MirrorFacts(source=f"{backup_bucket}/{prefix}", dest_prefix="")
    found_in_backup = {prefix + k: f for k, f in listing(backup, backup_bucket, prefix).items()}
    copied, _ = copy_all(backup, backup_bucket, target, target_bucket, found_in_backup,
                         lambda k: k[len(prefix):], same_store)
    facts.manifest = {k[len(prefix):]: f for k, f in copied.items()}
    found = listing(target, target_bucket)
    found = {k: v for k, v in found.items() if k in facts.manifest} if force else found
    problems, rehash = compare_listings(facts.manifest, found)
    for key in rehash:
        if md5_of(target, target_bucket, key) != md5_of(backup, backup_bucket, prefix + key):
            problems.append(f"{key}: content differs from the backup (MD5 of the bytes)")
    facts.problems = problems
    return facts
