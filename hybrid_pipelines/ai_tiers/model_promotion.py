"""Promotion of a cold model back onto the hot tier (JuiceFS), under the model's lock.

Every file is written beneath the hot root only (hot_paths): the model directory and every
directory below it are opened without following links, so a `models/<id>` that is a symlink,
or a link inside it, refuses the promotion before anything is written; each file arrives
through a temp file created O_EXCL|O_NOFOLLOW and checked against the cold copy.

A hot file may already sit where a cold file goes: a leftover the sweep kept because its
bytes differ from the cold copy (someone wrote the model directory after the demotion).
Those bytes exist nowhere else, so the promotion never overwrites them: the file is renamed
to a `<name>.hot-conflict-<UTC time>-<id>` sibling, the cold version takes its place, and the
aside names are reported (Promotion.moved_aside, the run's metadata, the request's detail).
Moving aside rather than refusing: whoever asked for the promotion is waiting for the model
the row and the cold tier describe, and refusing would block it until someone sorted the
directory by hand, while moving aside keeps both sets of bytes (the next demotion carries
the aside file to the cold tier like any other file of the model)."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from hybrid_pipelines.ai_tiers import hot_paths, tier_copy
from hybrid_pipelines.ai_tiers.db import NS_MODEL, PosixTier, advisory_lock
from hybrid_pipelines.ai_tiers.models import (
    ModelLayout,
    ModelTierError,
    hot_files,
    load_model,
    model_segment,
)
from hybrid_pipelines.ai_tiers.rules.tier_policy import HOT, naive_utc
from hybrid_pipelines.shared.nas_paths import UnsafePathError, safe_relpath


@dataclass(frozen=True)
class Promotion:
    model_id: str
    already_hot: bool
    files_downloaded: int
    bytes_downloaded: int
    size_bytes: int
    weakly_verified: int = 0
    moved_aside: tuple[str, ...] = ()  # hot files with other bytes, kept under these names


def promote_model(conn: psycopg.Connection, client: Any, bucket: str, hot: PosixTier,
                  model_id: str, now: datetime, layout: ModelLayout) -> Promotion:
    """Copy a cold model into the hot path, verify, mark it hot. Concurrent calls for one
    model wait for the lock, then find it hot and download nothing. A model with no row
    (first use, before the platform registered it) is restored from the cold bucket alone
    and its row created; one in neither place is an error naming both."""
    model_segment(model_id)
    with advisory_lock(conn, NS_MODEL, model_id):
        current = load_model(conn, model_id)
        hot.require_healthy()
        at = naive_utc(now)
        if current is None:
            return _promote_unregistered(conn, client, bucket, hot, model_id, at, layout)
        if current.tier == HOT and _has_hot_files(hot, layout, model_id):
            with conn.transaction():
                conn.execute("UPDATE model_locations SET last_access = greatest(last_access, %s)"
                             " WHERE model_id = %s", (at, model_id))
            return Promotion(model_id, True, 0, 0, current.size_bytes)
        # Cold, or hot in the row only: the platform flips a row to hot on first use while
        # the files are still in the cold tier. Either way the files come from there.
        prefix = layout.cold_prefix_for(model_id)
        objects = list_objects(client, bucket, prefix)
        if not objects:
            raise ModelTierError(f"model {model_id}: the row says {current.tier} but the hot "
                                 f"tier has no files and {tier_copy.s3_url(bucket, prefix)} "
                                 "holds no objects; upload the model to one of them")
        try:
            result = _copy_in(client, bucket, hot.root(), layout.hot_rel(model_id), prefix,
                              objects, model_id)
        except UnsafePathError as exc:
            raise ModelTierError(f"model {model_id}: promotion refused, the row stays "
                                 f"{current.tier}: {exc}") from exc
        with conn.transaction():
            # last_access only moves forward: the platform may have used it meanwhile.
            conn.execute("UPDATE model_locations SET tier = 'hot', size_bytes = %s, "
                         "last_access = greatest(last_access, %s), tier_changed_at = %s "
                         "WHERE model_id = %s", (result.size_bytes, at, at, model_id))
        return result


def _promote_unregistered(conn: psycopg.Connection, client: Any, bucket: str, hot: PosixTier,
                          model_id: str, at: datetime, layout: ModelLayout) -> Promotion:
    """First use of a model that only the cold bucket knows: restore it and create its row.
    The platform may insert the row itself meanwhile (its own first use, size_bytes 0): the
    insert then becomes an update of that row, so its created_at stays and last_access only
    moves forward."""
    prefix = layout.cold_prefix_for(model_id)
    objects = list_objects(client, bucket, prefix)
    if not objects:
        raise ModelTierError(f"model {model_id!r} is not in model_locations and "
                             f"{tier_copy.s3_url(bucket, prefix)} holds no objects: it is in "
                             "neither place; check the model id, or upload the model's files "
                             "under that prefix and ask again")
    try:
        result = _copy_in(client, bucket, hot.root(), layout.hot_rel(model_id), prefix,
                          objects, model_id)
    except UnsafePathError as exc:
        raise ModelTierError(f"model {model_id}: promotion refused, no row created: "
                             f"{exc}") from exc
    with conn.transaction():
        conn.execute(
            "INSERT INTO model_locations (model_id, tier, size_bytes, last_access, "
            "tier_changed_at) VALUES (%s, 'hot', %s, %s, %s) ON CONFLICT (model_id) DO UPDATE "
            "SET tier = 'hot', size_bytes = EXCLUDED.size_bytes, last_access = "
            "greatest(model_locations.last_access, EXCLUDED.last_access), "
            "tier_changed_at = EXCLUDED.tier_changed_at",
            (model_id, result.size_bytes, at, at))
    return result


def _has_hot_files(hot: PosixTier, layout: ModelLayout, model_id: str) -> bool:
    try:
        return bool(hot_files(hot.root(), layout.hot_rel(model_id)))
    except (ModelTierError, UnsafePathError):
        return False


def _copy_in(client: Any, bucket: str, root: Path, model_rel: str, prefix: str,
             objects: list[tuple[str, int]], model_id: str) -> Promotion:
    with hot_paths.open_dir(root, model_rel, create=True):
        pass  # the model directory is a real directory beneath the root (or now exists)
    tier_copy.sweep_temp_files(root, older_than_s=0, rel=model_rel)  # we hold the lock
    files = downloaded = weak = total = 0
    aside: list[str] = []
    for key, size in objects:
        name = safe_relpath(key[len(prefix):])
        if not name or hot_paths.is_temp_name(name.rsplit("/", 1)[-1]):
            raise UnsafePathError(f"cold object {tier_copy.s3_url(bucket, key)} cannot be a "
                                  "file of the model (empty or temp-file name); rename it")
        rel = f"{model_rel}/{name}"
        total += size
        if _matches_cold(client, bucket, key, root, rel, size):
            continue  # a leftover of a failed delete that is still right
        result = tier_copy.download_verified(client, bucket, key, root, rel,
                                             require_checksum=False, replace=False)
        files += 1
        downloaded += result.digest.size
        weak += result.verified_by == "size-only"
        if result.moved_aside:
            aside.append(result.moved_aside)
    return Promotion(model_id, False, files, downloaded, total, weak, tuple(aside))


def _matches_cold(client: Any, bucket: str, key: str, root: Path, rel: str, size: int) -> bool:
    st = hot_paths.lstat(root, rel)
    if st is None or not stat.S_ISREG(st.st_mode) or st.st_size != size:
        return False
    try:
        tier_copy.verify_object(client, bucket, key, tier_copy.digest_beneath(root, rel)[0])
        return True
    except (tier_copy.CopyError, hot_paths.NotRegularFileError):
        return False


def list_objects(client: Any, bucket: str, prefix: str) -> list[tuple[str, int]]:
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith("/"):
                out.append((obj["Key"], int(obj["Size"])))
    return out
