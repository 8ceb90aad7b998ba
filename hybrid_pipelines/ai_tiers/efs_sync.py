"""Mirror model prefixes of an S3 bucket onto an EFS (NFS) mount.

An object is downloaded only when it is new or changed: the manifest row (PostgreSQL,
`efs_sync_manifest`) must carry the object's size and ETag, and the local file must still have
the size and mtime recorded after the last download (so a file edited or wiped on the mount is
fetched again). Each download goes to a temp name and is renamed into place after its size and
checksum match. A per-object advisory lock, taken before the download and followed by a fresh
look at the manifest, means two overlapping runs never download the same object at once: the
second waits, then finds it up to date. The lock lives in PostgreSQL rather than on the mount
because NFS file locks are only as good as the NFS client's lock daemon.

Nothing is followed out of the mirror's root (hot_paths): a download into a directory that
is a symlink is refused and reported, the temp file is created O_EXCL|O_NOFOLLOW, and the
deletion of extraneous files unlinks only regular files reached without links. The mirror
owns its files, so a changed file at a mirrored path is replaced (never written through)."""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from hybrid_pipelines.ai_tiers import hot_paths, tier_copy
from hybrid_pipelines.ai_tiers.db import NS_EFS_OBJECT, advisory_lock
from hybrid_pipelines.shared.nas_paths import UnsafePathError, safe_relpath


@dataclass
class SyncReport:
    listed: int = 0
    downloaded: int = 0
    bytes_downloaded: int = 0
    unchanged: int = 0
    deleted: int = 0
    temp_files_swept: int = 0
    size_only_verified: int = 0
    mirrored_bytes: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    left_alone: hot_paths.Skipped = field(default_factory=hot_paths.Skipped)


@dataclass(frozen=True)
class RemoteObject:
    key: str
    size: int
    etag: str


def list_prefix(client: Any, bucket: str, prefix: str) -> Iterator[RemoteObject]:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith("/"):
                yield RemoteObject(obj["Key"], int(obj["Size"]), str(obj["ETag"]).strip('"'))


def _manifest(conn: psycopg.Connection, root: str, rel: str) -> tuple[Any, ...] | None:
    return conn.execute("SELECT size_bytes, etag, mtime_ns FROM efs_sync_manifest "
                        "WHERE efs_root = %s AND rel_path = %s", (root, rel)).fetchone()


def _up_to_date(row: tuple[Any, ...] | None, obj: RemoteObject, root: Path, rel: str) -> bool:
    if row is None or int(row[0]) != obj.size or row[1] != obj.etag:
        return False
    st = hot_paths.lstat(root, rel)
    return (st is not None and stat.S_ISREG(st.st_mode) and st.st_size == obj.size
            and st.st_mtime_ns == int(row[2]))


def _sync_one(conn: psycopg.Connection, client: Any, bucket: str, root: Path, obj: RemoteObject,
              rel: str, now: datetime, report: SyncReport) -> None:
    if _up_to_date(_manifest(conn, str(root), rel), obj, root, rel):
        report.unchanged += 1
        return
    with advisory_lock(conn, NS_EFS_OBJECT, f"{root}\x1f{rel}"):
        if _up_to_date(_manifest(conn, str(root), rel), obj, root, rel):  # another run did it
            report.unchanged += 1
            return
        result = tier_copy.download_verified(client, bucket, obj.key, root, rel,
                                             require_checksum=False)
        # Record the version downloaded, which may be newer than the listing.
        obj = RemoteObject(obj.key, result.digest.size, result.etag)
        st = hot_paths.lstat(root, rel)
        if st is None:
            raise tier_copy.CopyError(f"{root / rel} vanished right after its download")
        with conn.transaction():
            conn.execute(
                "INSERT INTO efs_sync_manifest (efs_root, rel_path, bucket, key, size_bytes, "
                "etag, mtime_ns, synced_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (efs_root, rel_path) DO UPDATE SET bucket = EXCLUDED.bucket, "
                "key = EXCLUDED.key, size_bytes = EXCLUDED.size_bytes, etag = EXCLUDED.etag, "
                "mtime_ns = EXCLUDED.mtime_ns, synced_at = EXCLUDED.synced_at",
                (str(root), rel, bucket, obj.key, obj.size, obj.etag, st.st_mtime_ns, now))
        report.downloaded += 1
        report.bytes_downloaded += result.digest.size
        report.size_only_verified += result.verified_by == "size-only"


def out_of_date(conn: psycopg.Connection, client: Any, bucket: str, root: Path,
                prefixes: list[str]) -> list[RemoteObject]:
    """The objects a sync would download now (new, changed, or their file on the mount edited
    or gone): one listing per prefix and one manifest query, no download. Names that cannot
    be files on the mount are left to the sync, which reports them."""
    rows = {rel: row for rel, *row in conn.execute(
        "SELECT rel_path, size_bytes, etag, mtime_ns FROM efs_sync_manifest"
        " WHERE efs_root = %s", (str(root),)).fetchall()}
    waiting = []
    for prefix in prefixes or [""]:
        for obj in list_prefix(client, bucket, prefix):
            try:
                rel = safe_relpath(obj.key)
            except UnsafePathError:
                continue
            if rel and not tier_copy.is_temp_name(Path(rel).name) and not _up_to_date(
                    tuple(rows[rel]) if rel in rows else None, obj, root, rel):
                waiting.append(obj)
    return waiting


def _delete_extraneous(conn: psycopg.Connection, root: Path, prefix: str, seen: set[str],
                       report: SyncReport) -> None:
    """Remove mirrored files whose object is gone; only files this sync wrote (manifest rows
    with an unchanged mtime), never anything else on the mount."""
    rows = conn.execute("SELECT rel_path, size_bytes, mtime_ns FROM efs_sync_manifest "
                        "WHERE efs_root = %s AND starts_with(rel_path, %s)",
                        (str(root), prefix)).fetchall()
    for rel, size, mtime_ns in rows:
        if rel in seen:
            continue
        with advisory_lock(conn, NS_EFS_OBJECT, f"{root}\x1f{rel}"):
            try:
                if hot_paths.unlink_file(root, rel, int(size), int(mtime_ns)):
                    report.deleted += 1
            except hot_paths.PathEscapeError as exc:
                report.errors[rel] = f"not deleted, its row is kept: {exc}"
                continue
            with conn.transaction():
                conn.execute("DELETE FROM efs_sync_manifest WHERE efs_root = %s AND "
                             "rel_path = %s", (str(root), rel))


def sync_to_efs(conn: psycopg.Connection, client: Any, bucket: str, root: Path,
                prefixes: list[str], now: datetime, delete_extraneous: bool = False,
                log: Callable[[str], None] = print) -> SyncReport:
    """Mirror `bucket/<prefix>...` to `root/<key>` for every prefix ('' = whole bucket)."""
    report = SyncReport()
    root.mkdir(parents=True, exist_ok=True)
    report.temp_files_swept = tier_copy.sweep_temp_files(root, older_than_s=3600,
                                                         skipped=report.left_alone)
    for prefix in prefixes or [""]:
        seen: set[str] = set()
        for obj in list_prefix(client, bucket, prefix):
            report.listed += 1
            try:
                rel = safe_relpath(obj.key)
                if not rel or tier_copy.is_temp_name(Path(rel).name):
                    raise UnsafePathError("the name is empty or looks like a temp file")
            except UnsafePathError as exc:
                report.errors[obj.key] = f"skipped: cannot be a file name on EFS ({exc})"
                continue
            seen.add(rel)
            try:
                _sync_one(conn, client, bucket, root, obj, rel, now, report)
                report.mirrored_bytes += obj.size
            except (tier_copy.CopyError, OSError, UnsafePathError) as exc:
                report.errors[obj.key] = str(exc)
                log(f"sync of s3://{bucket}/{obj.key} failed: {exc}")
        if delete_extraneous and not report.errors:
            # Only when the listing was complete: a key we failed on must not look deleted.
            _delete_extraneous(conn, root, prefix, seen, report)
    return report


def manifest_mismatches(conn: psycopg.Connection, mount_root: Path,
                        limit: int = 20) -> list[str]:
    """Manifest rows under `mount_root` whose file is missing or has another size."""
    bad = []
    for root, rel, size in conn.execute(
            "SELECT efs_root, rel_path, size_bytes FROM efs_sync_manifest "
            "WHERE efs_root = %s OR starts_with(efs_root, %s) ORDER BY efs_root, rel_path",
            (str(mount_root), f"{mount_root}/")):
        try:
            st = hot_paths.lstat(Path(root), rel)
        except (OSError, UnsafePathError):
            st = None
        if st is None or not stat.S_ISREG(st.st_mode) or st.st_size != int(size):
            bad.append(f"{root}/{rel}")
            if len(bad) >= limit:
                break
    return bad
