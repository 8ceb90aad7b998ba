"""Model weights between the hot tier (JuiceFS) and the cold tier (object store).

Layout: a model is a directory `<hot_prefix>/<model_id>/` on the hot tier and the objects
`<cold_prefix>/<model_id>/<file>` in the cold bucket. The cold tier keeps every model; hot is
an extra copy.

Demotion of one model, under the model's advisory lock:
  1. copy: upload each hot file whose verified cold copy is not already there;
  2. verify: size + sha256 metadata + MD5 ETag or read-back (core.tier_copy.verify_object);
  3. update the row to cold (committed);
  4. delete the hot files.
The row flips before the delete so it never names a tier without the data: a failure at 4
leaves leftovers in the hot path, which the next run re-verifies and removes. A failure at any
earlier step leaves the hot files and the row as they were. Connections must be autocommit
(locks span several transactions).

Nothing is followed out of the hot tier (hot_paths): a model directory that is a symlink is
refused whole (nothing uploaded, nothing deleted); symlinks and special files inside one are
left alone and reported (`DemotionReport.left_alone`). Promotion: model_promotion.py."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from hybrid_pipelines.ai_tiers import hot_paths, tier_copy
from hybrid_pipelines.ai_tiers.db import NS_MODEL, PosixTier, advisory_lock
from hybrid_pipelines.ai_tiers.hot_paths import Skipped
from hybrid_pipelines.ai_tiers.rules.tier_policy import (
    COLD,
    HOT,
    Demotion,
    ModelState,
    as_utc,
    naive_utc,
    select_demotions,
    still_eligible,
)
from hybrid_pipelines.shared.nas_paths import UnsafePathError, safe_relpath
from hybrid_pipelines.shared.nas_paths import join as join_rel


class ModelTierError(RuntimeError):
    """One model could not change tier; its copies and its row are as they were."""


@dataclass(frozen=True)
class ModelLayout:
    hot_prefix: str = "models"
    cold_prefix: str = "models"
    storage_class: str | None = None
    upload_missing: bool = True
    transfer_config: Any = None

    def hot_rel(self, model_id: str) -> str:
        return join_rel(self.hot_prefix, model_segment(model_id))

    def cold_prefix_for(self, model_id: str) -> str:
        return join_rel(self.cold_prefix, model_segment(model_id)) + "/"


def model_segment(model_id: str) -> str:
    """A model id is one path segment: with 'org/name' allowed, model 'org' would own the
    files of 'org/name' and demoting it would upload and delete them."""
    try:
        clean = safe_relpath(model_id)
    except UnsafePathError:
        clean = ""
    if not model_id or "/" in model_id or "\\" in model_id or clean != model_id:
        raise ModelTierError(f"model id {model_id!r} must be one path segment (no '/', no "
                             "'..'); name it e.g. 'org--name'")
    return model_id


@dataclass
class DemotionReport:
    demoted: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    bytes_uploaded: int = 0
    files_uploaded: int = 0
    already_in_cold: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    leftovers_removed: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    left_alone: Skipped = field(default_factory=Skipped)  # links / special files met


def load_models(conn: psycopg.Connection) -> list[ModelState]:
    rows = conn.execute(
        "SELECT model_id, tier, size_bytes, last_access FROM model_locations").fetchall()
    return [ModelState(r[0], r[1], int(r[2]), as_utc(r[3])) for r in rows]


def load_model(conn: psycopg.Connection, model_id: str, lock: bool = False
               ) -> ModelState | None:
    """The row (last_access as aware UTC); `lock` takes its row lock (FOR UPDATE) for the
    rest of the caller's transaction, so the platform's upsert waits for our decision."""
    sql = ("SELECT model_id, tier, size_bytes, last_access FROM model_locations "
           "WHERE model_id = %s FOR UPDATE" if lock else
           "SELECT model_id, tier, size_bytes, last_access FROM model_locations "
           "WHERE model_id = %s")
    row = conn.execute(sql, (model_id,)).fetchone()
    return ModelState(row[0], row[1], int(row[2]), as_utc(row[3])) if row else None


def tier_sizes(conn: psycopg.Connection) -> dict[str, int]:
    out = {"hot_models": 0, "hot_tier_bytes": 0, "cold_models": 0, "cold_only_bytes": 0,
           "cold_tier_bytes": 0}
    for tier, count, size in conn.execute(
            "SELECT tier, count(*), coalesce(sum(size_bytes), 0) FROM model_locations "
            "GROUP BY tier"):
        if tier == HOT:
            out["hot_models"], out["hot_tier_bytes"] = int(count), int(size)
        else:
            out["cold_models"], out["cold_only_bytes"] = int(count), int(size)
    # The cold tier holds every model.
    out["cold_tier_bytes"] = out["hot_tier_bytes"] + out["cold_only_bytes"]
    return out


def hot_volume_used(hot: PosixTier) -> int:
    """Bytes used on the hot volume as its file system reports them (JuiceFS: the volume)."""
    return int(shutil.disk_usage(hot.root()).used)


def hot_volume_usage(hot: PosixTier) -> tuple[int, int]:
    """(capacity, used) bytes of the hot volume from statvfs of the mount (JuiceFS reports
    the volume's quota or its --capacity as the size, and its used space)."""
    st = os.statvfs(hot.root())
    total = st.f_blocks * st.f_frsize
    return int(total), int(total - st.f_bfree * st.f_frsize)


def hot_model_bytes(hot: PosixTier, layout: ModelLayout, model_id: str) -> int:
    """Bytes of the model's regular files on the hot tier (0 when none or unreachable)."""
    try:
        return sum(f[2] for f in hot_files(hot.root(), layout.hot_rel(model_id)))
    except (ModelTierError, UnsafePathError, OSError):
        return 0


HotFile = tuple[str, Path, int, int]  # (name in the model dir, path, size, mtime_ns)


def hot_files(root: Path, model_rel: str, skipped: Skipped | None = None) -> list[HotFile]:
    """The regular files of the model directory root/model_rel, without our temp files and
    without following links (PathEscapeError when the directory itself is reached through
    one); links and special files inside go to `skipped`."""
    base = root / model_rel
    return [(e.rel, base / e.rel, e.size, e.mtime_ns)
            for e in hot_paths.walk_files(root, model_rel, skipped)]


def _remove_hot_files(files: list[HotFile], root: Path, model_rel: str) -> None:
    """Delete the files that were copied, unless one changed since (then it stays, and the
    next run's sweep keeps it for lack of a matching cold copy). Unlinks go through
    descriptors opened without following links; empty directories only are removed."""
    for rel, _path, size, mtime_ns in files:
        hot_paths.unlink_file(root, f"{model_rel}/{rel}", size, mtime_ns)
    hot_paths.remove_empty_dirs(root, model_rel)


def _ensure_cold_copy(client: Any, bucket: str, key: str, path: Path, layout: ModelLayout,
                      model_id: str, digest: tier_copy.Digest) -> bool:
    """Returns whether it uploaded. Raises when the copy cannot be proven."""
    try:
        tier_copy.verify_object(client, bucket, key, digest)
        return False
    except tier_copy.CopyError as exc:
        if not layout.upload_missing:
            raise ModelTierError(
                f"model {model_id}: {exc}. Demotion is blocked until the cold copy exists "
                "(upload it, or set upload_missing: true to let the job copy it)") from exc
    tier_copy.upload_file(client, bucket, key, path, digest, storage_class=layout.storage_class,
                          transfer_config=layout.transfer_config)
    try:
        tier_copy.verify_object(client, bucket, key, digest)
    except tier_copy.CopyError as exc:
        raise ModelTierError(f"model {model_id}: uploaded {tier_copy.s3_url(bucket, key)} but "
                             f"could not verify it ({exc}); the hot copy is kept") from exc
    return True


def _flip_cold(conn: psycopg.Connection, model_id: str, seen: ModelState, size: int,
               now: datetime) -> bool:
    """Row -> cold under its row lock, only if the platform has not used the model since we
    looked (`seen.last_access`): its upsert of last_access waits on the lock, and one that
    committed before it makes us keep the hot copy. False: in use, nothing changed."""
    with conn.transaction():
        current = load_model(conn, model_id, lock=True)
        if current is None or current.tier != HOT or current.last_access != seen.last_access:
            return False
        conn.execute("UPDATE model_locations SET tier = 'cold', size_bytes = %s, "
                     "tier_changed_at = %s WHERE model_id = %s",
                     (size, naive_utc(now), model_id))
    return True


def demote_model(conn: psycopg.Connection, client: Any, bucket: str, hot: PosixTier,
                 demotion: Demotion, now: datetime, idle_days: int, layout: ModelLayout,
                 report: DemotionReport) -> None:
    model_id = demotion.model_id
    with advisory_lock(conn, NS_MODEL, model_id):
        current = load_model(conn, model_id)
        if current is None or not still_eligible(demotion, current, now, idle_days):
            report.skipped[model_id] = "used or moved since selection"
            return
        hot.require_healthy()  # a vanished mount looks like missing files: stop first
        root, model_rel = hot.root(), layout.hot_rel(model_id)
        skipped = Skipped()
        try:
            files = hot_files(root, model_rel, skipped)
        except UnsafePathError as exc:
            raise ModelTierError(f"model {model_id}: demotion refused, nothing uploaded or "
                                 f"deleted: {exc}") from exc
        report.left_alone.extend(skipped)
        if not files:
            _demote_without_files(conn, client, bucket, root, model_rel, current, now, layout,
                                  report, skipped)
            return
        prefix = layout.cold_prefix_for(model_id)
        total = 0
        copied: list[HotFile] = []
        for rel, path, _size, _mtime in files:
            try:
                digest, before = tier_copy.digest_beneath(root, f"{model_rel}/{rel}")
            except UnsafePathError as exc:  # swapped for a link since the walk
                raise ModelTierError(f"model {model_id}: demotion refused, nothing deleted: "
                                     f"{exc}") from exc
            uploaded = _ensure_cold_copy(client, bucket, prefix + rel, path, layout, model_id,
                                         digest)
            copied.append((rel, path, before.st_size, before.st_mtime_ns))
            total += digest.size
            if uploaded:
                report.files_uploaded += 1
                report.bytes_uploaded += digest.size
            else:
                report.already_in_cold += 1
        if not _flip_cold(conn, model_id, current, total, now):
            report.skipped[model_id] = "used by the platform during the demotion; hot copy kept"
            return
        hot.require_healthy()
        # The platform may have used it between our commit and here (it flips the row back
        # to hot): then the files stay. A use after this look finds the row hot and the
        # files gone; the promotion sensor restores them from the verified cold copy.
        after = load_model(conn, model_id)
        if after is None or after.tier != COLD:
            report.skipped[model_id] = "used again right after the flip; hot copy kept"
            return
        _remove_hot_files(copied, root, model_rel)
        report.demoted.append(model_id)
        report.bytes_freed += total


def _demote_without_files(conn: psycopg.Connection, client: Any, bucket: str, root: Path,
                          model_rel: str, current: ModelState, now: datetime,
                          layout: ModelLayout, report: DemotionReport,
                          skipped: Skipped) -> None:
    """A hot row without hot files: the platform flipped it to hot on a use while its files
    stayed cold. If the cold copy is there the row is simply told the truth (cold); with
    no copy anywhere it is an error naming both places."""
    from hybrid_pipelines.ai_tiers.model_promotion import list_objects

    model_id = current.model_id
    objects = list_objects(client, bucket, layout.cold_prefix_for(model_id))
    if not objects:
        raise ModelTierError(
            f"model {model_id}: the row says hot but {root / model_rel} holds no regular "
            f"files and {tier_copy.s3_url(bucket, layout.cold_prefix_for(model_id))} holds no "
            "objects; put the model's files in one of them"
            + (f" ({skipped.describe()})" if skipped else ""))
    if _flip_cold(conn, model_id, current, sum(size for _key, size in objects), now):
        report.demoted.append(model_id)
    else:
        report.skipped[model_id] = "used by the platform during the demotion"


def sweep_leftovers(conn: psycopg.Connection, client: Any, bucket: str, hot: PosixTier,
                    layout: ModelLayout, report: DemotionReport) -> None:
    """Hot files of cold models (a delete that failed after the row flipped): each is removed
    only after its cold copy verifies again."""
    hot.require_healthy()
    root = hot.root()
    for model_id, in conn.execute(
            "SELECT model_id FROM model_locations WHERE tier = 'cold' ORDER BY model_id"
            ).fetchall():
        try:
            model_rel = layout.hot_rel(model_id)
            if not hot_paths.check_dir(root, model_rel):
                continue
            with advisory_lock(conn, NS_MODEL, model_id):
                current = load_model(conn, model_id)
                if current is None or current.tier != COLD:
                    continue
                _sweep_model(client, bucket, root, model_id, model_rel, layout, report)
        except (ModelTierError, UnsafePathError) as exc:
            report.errors[model_id] = f"leftovers of cold model {model_id} not swept: {exc}"


def _sweep_model(client: Any, bucket: str, root: Path, model_id: str, model_rel: str,
                 layout: ModelLayout, report: DemotionReport) -> None:
    prefix = layout.cold_prefix_for(model_id)
    tier_copy.sweep_temp_files(root, older_than_s=0, rel=model_rel)  # we hold the lock
    for rel, path, _size, _mtime in hot_files(root, model_rel, report.left_alone):
        try:
            digest, st = tier_copy.digest_beneath(root, f"{model_rel}/{rel}")
            tier_copy.verify_object(client, bucket, prefix + rel, digest)
        except tier_copy.CopyError as exc:
            report.errors[model_id] = (f"leftover {path} kept: its cold copy does not "
                                       f"verify ({exc})")
            continue
        if hot_paths.unlink_file(root, f"{model_rel}/{rel}", st.st_size, st.st_mtime_ns):
            report.leftovers_removed += 1
    hot_paths.remove_empty_dirs(root, model_rel)


def run_demotion(conn: psycopg.Connection, client: Any, bucket: str, hot: PosixTier,
                 now: datetime, idle_days: int, capacity_bytes: int | None,
                 layout: ModelLayout, log: Callable[[str], None] = print,
                 free_bytes: int = 0) -> DemotionReport:
    """`free_bytes`: what the hot volume's usage asks to free (least recently used first);
    sizes are then measured on the hot tier, since the platform registers a model with
    size_bytes 0."""
    report = DemotionReport()
    hot.require_healthy()
    sweep_leftovers(conn, client, bucket, hot, layout, report)
    states = load_models(conn)
    if free_bytes or capacity_bytes:
        states = [ModelState(m.model_id, m.tier, hot_model_bytes(hot, layout, m.model_id)
                             if m.tier == HOT else m.size_bytes, m.last_access)
                  for m in states]
    for demotion in select_demotions(states, now, idle_days, capacity_bytes, free_bytes):
        try:
            demote_model(conn, client, bucket, hot, demotion, now, idle_days, layout, report)
        except (ModelTierError, tier_copy.CopyError) as exc:
            report.errors[demotion.model_id] = str(exc)
            log(f"demotion of {demotion.model_id} failed, hot copy kept: {exc}")
        else:
            if demotion.model_id in report.demoted:
                log(f"demoted {demotion.model_id} ({demotion.reason}, "
                    f"{demotion.size_bytes} bytes)")
    return report


def hot_rows_missing_files(conn: psycopg.Connection, hot: PosixTier,
                           layout: ModelLayout) -> list[str]:
    """Hot rows whose directory is empty or missing on the hot tier."""
    missing = []
    for model_id, in conn.execute(
            "SELECT model_id FROM model_locations WHERE tier = 'hot' ORDER BY model_id"):
        try:
            files = hot_files(hot.root(), layout.hot_rel(model_id))
        except (ModelTierError, UnsafePathError):
            files = []  # reached through a link: not usable as the hot copy
        if not files:
            missing.append(model_id)
    return missing
