"""Fresh outputs get a verified cold copy within the hour (the design keeps a cold copy of
every output, so losing the hot tier never loses one).

The platform writes `cold_storage = true` when it generates an output, whether or not the
object reached the outputs bucket. An hourly run takes the hot outputs without our
`cold_verified_at` (one query on a partial index that holds only those rows, so an idle hour
costs one index probe) and, per output under its advisory lock:
  1. hashes the hot file, reached without following links (hot_paths);
  2. verifies the cold object (size, sha256 metadata, MD5 ETag or read-back), or uploads the
     hot file and verifies the upload;
  3. records sha256 + cold_verified_at and sets cold_storage true; an output whose copy
     cannot be proven gets cold_storage false (the platform's column stays truthful) and
     is tried again next hour.
A cold object holding other bytes than the hot file is never overwritten blind: it is
copied to `<key>.cold-conflict-<UTC time>-<id>` first (a user's deletion removes those too).
Connections must be autocommit."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from hybrid_pipelines.ai_tiers import hot_paths, tier_copy
from hybrid_pipelines.ai_tiers.db import NS_OUTPUT, PosixTier, advisory_lock
from hybrid_pipelines.ai_tiers.rules.tier_policy import naive_utc
from hybrid_pipelines.resources.errors import BackendError

CONFLICT_MARKER = ".cold-conflict-"
# Fixed column list shared with outputs.py (_ROW); the partial index
# hp_generated_outputs_cold_unverified covers exactly the WHERE clause.
_ROW = ("output_id::text, user_id, filename, path, hot_storage, size_bytes, access_count, "
        "created_at")
UNVERIFIED = "hot_storage IS TRUE AND cold_verified_at IS NULL"


@dataclass(frozen=True)
class ColdCopy:
    digest: tier_copy.Digest
    uploaded: bool
    verified_by: str
    hot_stat: os.stat_result  # of the hot file when it was hashed
    kept_aside: str | None = None  # key of a differing object kept before the upload


@dataclass
class ColdCopyReport:
    verified: int = 0
    uploaded: int = 0
    bytes_uploaded: int = 0
    kept_aside: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def conflict_key(key: str, now: datetime | None = None) -> str:
    when = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{key}{CONFLICT_MARKER}{when}-{uuid.uuid4().hex[:8]}"


def _keep_aside(client: Any, bucket: str, key: str) -> str:
    """Server-side copy of the object to a conflict key, proven by size before anyone
    overwrites the original."""
    head = tier_copy.head_object(client, bucket, key)
    if head is None:
        raise tier_copy.ColdCopyMissing(f"{tier_copy.s3_url(bucket, key)} vanished while it "
                                        "was being kept aside; run again")
    aside = conflict_key(key)
    client.copy_object(Bucket=bucket, Key=aside, CopySource={"Bucket": bucket, "Key": key},
                       MetadataDirective="COPY")
    copied = tier_copy.head_object(client, bucket, aside)
    if copied is None or int(copied.get("ContentLength", -1)) != int(head["ContentLength"]):
        raise tier_copy.VerificationFailed(
            f"could not keep {tier_copy.s3_url(bucket, key)} aside as {aside} before replacing "
            "it; the object is left as it was")
    return aside


def _holds_same_bytes(client: Any, bucket: str, key: str, digest: tier_copy.Digest) -> bool:
    head = tier_copy.head_object(client, bucket, key)
    if head is None or int(head.get("ContentLength", -1)) != digest.size:
        return head is None  # missing: nothing to keep
    got = tier_copy.object_digest(client, bucket, key, etag=head.get("ETag"))
    return got.sha256 == digest.sha256


def ensure_cold_copy(client: Any, bucket: str, key: str, root: Path, hot_rel: str,
                     storage_class: str | None = None) -> ColdCopy:
    """Prove `bucket/key` holds the bytes of the hot file root/hot_rel, uploading them when it
    does not. Raises FileNotFoundError / hot_paths.UnsafePathError (hot side) or
    tier_copy.CopyError (cold side); the hot file is never touched."""
    digest, st = tier_copy.digest_beneath(root, hot_rel)
    try:
        how = tier_copy.verify_object(client, bucket, key, digest)
        return ColdCopy(digest, False, how, st)
    except tier_copy.ColdCopyMissing:
        aside = None
    except tier_copy.VerificationFailed:
        # The platform's own upload carries no sha256 metadata: same bytes are simply
        # uploaded again with it; other bytes are kept under a conflict key first.
        aside = None if _holds_same_bytes(client, bucket, key, digest) else _keep_aside(
            client, bucket, key)
    # The upload reads the path by name; the verification below proves it sent the bytes
    # hashed through the link-free descriptor above.
    tier_copy.upload_file(client, bucket, key, root / hot_rel, digest,
                          storage_class=storage_class)
    how = tier_copy.verify_object(client, bucket, key, digest)
    return ColdCopy(digest, True, how, st, aside)


def unverified_outputs(conn: psycopg.Connection, limit: int) -> list[tuple[Any, ...]]:
    """Hot outputs without a verified cold copy, oldest first (the partial index)."""
    return conn.execute(f"SELECT {_ROW} FROM generated_outputs WHERE {UNVERIFIED} "  # noqa: S608
                        "ORDER BY created_at, output_id LIMIT %s", (limit,)).fetchall()


def any_unverified(conn: psycopg.Connection) -> bool:
    return conn.execute(f"SELECT EXISTS (SELECT 1 FROM generated_outputs "  # noqa: S608
                        f"WHERE {UNVERIFIED})").fetchone() == (True,)


def overdue_count(conn: psycopg.Connection, now: datetime, grace_s: int) -> int:
    """Hot outputs older than `grace_s` still without a verified cold copy."""
    row = conn.execute(f"SELECT count(*) FROM generated_outputs WHERE {UNVERIFIED} "  # noqa: S608
                       "AND created_at < %s - make_interval(secs => %s)",
                       (naive_utc(now), grace_s)).fetchone()
    return int(row[0]) if row else 0


def _mark_unproven(conn: psycopg.Connection, output_id: str) -> None:
    with conn.transaction():
        conn.execute(f"UPDATE generated_outputs SET cold_storage = false "  # noqa: S608
                     f"WHERE output_id = %s AND {UNVERIFIED} "
                     "AND cold_storage IS DISTINCT FROM false", (output_id,))


def verify_one(conn: psycopg.Connection, client: Any, bucket: str, hot: PosixTier,
               row: tuple[Any, ...], rel: str, hot_rel: str, key: str, now: datetime,
               storage_class: str | None, report: ColdCopyReport) -> None:
    output_id = row[0]
    hot.require_healthy()  # a vanished mount looks like missing files: stop first
    try:
        copy = ensure_cold_copy(client, bucket, key, hot.root(), hot_rel, storage_class)
    except FileNotFoundError:
        _mark_unproven(conn, output_id)
        raise tier_copy.CopyError(
            f"output {output_id}: the row says hot but {hot.path(hot_rel)} is missing and no "
            f"verified copy of it is known; cold_storage set false. Restore the file or "
            f"{tier_copy.s3_url(bucket, key)}") from None
    except (hot_paths.UnsafePathError, tier_copy.CopyError) as exc:
        _mark_unproven(conn, output_id)
        raise tier_copy.CopyError(f"output {output_id}: no verified cold copy, "
                                  f"cold_storage set false: {exc}") from exc
    with conn.transaction():
        conn.execute("UPDATE generated_outputs SET cold_storage = true, sha256 = %s, "
                     "cold_verified_at = %s, size_bytes = coalesce(size_bytes, %s) "
                     "WHERE output_id = %s", (copy.digest.sha256, naive_utc(now),
                                              copy.digest.size, output_id))
    report.verified += 1
    if copy.uploaded:
        report.uploaded += 1
        report.bytes_uploaded += copy.digest.size
    if copy.kept_aside:
        report.kept_aside.append(copy.kept_aside)


def run_cold_copies(conn: psycopg.Connection, client: Any, bucket: str, hot: PosixTier,
                    now: datetime, place: Callable[[tuple[Any, ...]], tuple[str, str, str]],
                    limit: int = 10_000, storage_class: str | None = None,
                    log: Callable[[str], None] = print) -> ColdCopyReport:
    """`place(row)` -> (relative path, hot path rel to the hot root, cold key)."""
    report = ColdCopyReport()
    rows = unverified_outputs(conn, limit)
    if rows:
        hot.require_healthy()
    for row in rows:
        output_id = row[0]
        try:
            with advisory_lock(conn, NS_OUTPUT, output_id):
                current = conn.execute(
                    f"SELECT {_ROW} FROM generated_outputs WHERE output_id = %s "  # noqa: S608
                    f"AND {UNVERIFIED}", (output_id,)).fetchone()
                if current is None:
                    continue  # demoted, deleted or verified since the query
                rel, hot_rel, key = place(current)
                verify_one(conn, client, bucket, hot, current, rel, hot_rel, key, now,
                           storage_class, report)
        except BackendError:
            raise  # the hot tier or a server is down: stop, nothing is marked
        except (tier_copy.CopyError, ValueError, OSError, RuntimeError) as exc:
            report.errors[output_id] = str(exc)
            log(f"output {output_id}: {exc}")
    return report
