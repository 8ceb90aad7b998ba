"""Generated outputs (images, audio): hot for a week, then cold unless people keep opening them.

The platform's `generated_outputs` rows (output_id, user_id, filename, output_type, ...) say
where an output is in its own columns `hot_storage` / `cold_storage`; we keep them true:
a demotion sets hot_storage false (cold_storage true) only after the cold copy is verified,
a promotion sets hot_storage true. `filename` and `output_type` are only read. Files live at
the platform's layout `user_id/YYYY/MM/DD/<output_id>.<ext of filename>` (day of created_at,
UTC) under the hot prefix and under the cold prefix of the outputs bucket, unless our own
`path` column names another relative path.

Every change to one output runs under that output's advisory lock, so a deletion request
and the daily tiering never interleave (a tiering step cannot re-upload an output a deletion
just removed). Connections must be autocommit.

Hot files are reached without following links (hot_paths): an output that is a symlink or a
special file, or that sits under a linked folder, is left alone with the reason; a promotion
never overwrites a hot file with other bytes (it is kept under a `.hot-conflict-` name)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from hybrid_pipelines.ai_tiers import hot_paths, output_cold, tier_copy
from hybrid_pipelines.ai_tiers.db import NS_OUTPUT, PosixTier, advisory_lock
from hybrid_pipelines.ai_tiers.rules.tier_policy import (
    COLD,
    HOT,
    OutputState,
    as_utc,
    cutoff,
    naive_utc,
    output_action,
    output_path,
    parse_output_path,
)
from hybrid_pipelines.shared.nas_paths import join as join_rel


class OutputTierError(RuntimeError):
    """One output could not change tier; its copies and its row are as they were."""


@dataclass(frozen=True)
class OutputLayout:
    hot_prefix: str = "outputs"
    cold_prefix: str = "outputs"
    storage_class: str | None = None

    def hot_path(self, hot: PosixTier, rel: str) -> Path:
        parse_output_path(rel)
        return hot.path(join_rel(self.hot_prefix, rel))

    def hot_rel(self, rel: str) -> str:
        parse_output_path(rel)
        return join_rel(self.hot_prefix, rel)

    def cold_key(self, rel: str) -> str:
        parse_output_path(rel)
        return join_rel(self.cold_prefix, rel)


@dataclass
class OutputsReport:
    demoted: int = 0
    promoted: int = 0
    bytes_freed: int = 0
    bytes_promoted: int = 0
    bytes_uploaded: int = 0
    deleted: int = 0
    requests_done: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    moved_aside: list[str] = field(default_factory=list)  # hot files kept beside promotions
    cold_kept_aside: list[str] = field(default_factory=list)  # differing cold objects kept


_ROW = ("output_id::text, user_id, filename, path, hot_storage, size_bytes, access_count, "
        "created_at")


def output_rel(row: tuple[Any, ...]) -> str:
    """The output's relative path: our `path` column, else the platform's layout built from
    user_id, created_at, output_id and the extension of filename."""
    if row[3]:
        return str(row[3])
    filename = str(row[2])
    ext = filename.rsplit(".", 1)[1] if "." in filename else ""
    if not ext:
        raise OutputTierError(f"output {row[0]}: filename {filename!r} has no extension, so its "
                              "file under user_id/YYYY/MM/DD/uuid.ext cannot be named; set "
                              "generated_outputs.path to the file's relative path")
    return output_path(str(row[1]), row[7], str(row[0]), ext)


def _load(conn: psycopg.Connection, output_id: str) -> tuple[Any, ...] | None:
    return conn.execute(f"SELECT {_ROW} FROM generated_outputs "  # noqa: S608 - fixed columns
                        "WHERE output_id = %s", (output_id,)).fetchone()


def _state(row: tuple[Any, ...]) -> OutputState:
    return OutputState(row[0], HOT if row[4] else COLD, as_utc(row[7]), int(row[6] or 0))


def candidates(conn: psycopg.Connection, now: datetime, hot_days: int,
               keep_access_count: int) -> list[tuple[Any, ...]]:
    """Hot, old and rarely read; or cold and read often. hot_storage NULL (written so by
    hand) is not a place: left alone."""
    return conn.execute(
        f"SELECT {_ROW} FROM generated_outputs "  # noqa: S608 - fixed columns
        "WHERE (hot_storage IS TRUE AND created_at <= %s AND coalesce(access_count, 0) < %s) "
        "   OR (hot_storage IS FALSE AND access_count >= %s) ORDER BY created_at, output_id",
        (naive_utc(cutoff(now, hot_days)), keep_access_count, keep_access_count)).fetchall()


def _demote(conn: psycopg.Connection, client: Any, bucket: str, hot: PosixTier,
            row: tuple[Any, ...], now: datetime, layout: OutputLayout,
            report: OutputsReport) -> None:
    output_id, path_rel = row[0], output_rel(row)
    src = layout.hot_path(hot, path_rel)
    root, hot_rel = hot.root(), layout.hot_rel(path_rel)
    key = layout.cold_key(path_rel)
    hot.require_healthy()
    try:
        # The same proof as the hourly fresh-output copy: a differing cold object is kept
        # aside, never overwritten blind; the hot file goes only after this returned.
        copy = output_cold.ensure_cold_copy(client, bucket, key, root, hot_rel,
                                            layout.storage_class)
    except FileNotFoundError:
        raise OutputTierError(f"output {output_id}: the row says hot but {src} is missing; "
                              "check the hot tier mount") from None
    except hot_paths.UnsafePathError as exc:
        raise OutputTierError(f"output {output_id}: not demoted, nothing uploaded or "
                              f"deleted: {exc}") from exc
    digest, before = copy.digest, copy.hot_stat
    if copy.uploaded:
        report.bytes_uploaded += digest.size
    if copy.kept_aside:
        report.cold_kept_aside.append(copy.kept_aside)
    with conn.transaction():
        # size_bytes is the platform's: filled only where it left it empty.
        cur = conn.execute(
            "UPDATE generated_outputs SET hot_storage = false, cold_storage = true, "
            "size_bytes = coalesce(size_bytes, %s), sha256 = %s, cold_verified_at = %s, "
            "tier_changed_at = %s WHERE output_id = %s AND hot_storage IS TRUE",
            (digest.size, digest.sha256, naive_utc(now), naive_utc(now), output_id))
        if cur.rowcount != 1:
            raise OutputTierError(f"output {output_id}: row changed during demotion")
    hot.require_healthy()
    # Only the bytes that were copied: a file rewritten since stays for someone to look at.
    hot_paths.unlink_file(root, hot_rel, before.st_size, before.st_mtime_ns)
    report.demoted += 1
    report.bytes_freed += digest.size


def _promote(conn: psycopg.Connection, client: Any, bucket: str, hot: PosixTier,
             row: tuple[Any, ...], now: datetime, layout: OutputLayout,
             report: OutputsReport) -> None:
    output_id, path_rel = row[0], output_rel(row)
    hot.require_healthy()
    result = tier_copy.download_verified(client, bucket, layout.cold_key(path_rel), hot.root(),
                                         layout.hot_rel(path_rel), replace=False)
    if result.moved_aside:
        report.moved_aside.append(result.moved_aside)
    with conn.transaction():
        conn.execute("UPDATE generated_outputs SET hot_storage = true, cold_storage = true, "
                     "size_bytes = coalesce(size_bytes, %s), sha256 = %s, tier_changed_at = %s "
                     "WHERE output_id = %s", (result.digest.size, result.digest.sha256,
                                              naive_utc(now), output_id))
    report.promoted += 1
    report.bytes_promoted += result.digest.size


def run_output_tiering(conn: psycopg.Connection, client: Any, bucket: str, hot: PosixTier,
                       now: datetime, hot_days: int, keep_access_count: int,
                       layout: OutputLayout, log: Callable[[str], None] = print
                       ) -> OutputsReport:
    report = OutputsReport()
    hot.require_healthy()
    process_deletion_requests(conn, client, bucket, hot, now, layout, report)
    for row in candidates(conn, now, hot_days, keep_access_count):
        output_id = row[0]
        try:
            with advisory_lock(conn, NS_OUTPUT, output_id):
                current = _load(conn, output_id)
                action = current and output_action(_state(current), now, hot_days,
                                                   keep_access_count)
                if action == "demote":
                    _demote(conn, client, bucket, hot, current, now, layout, report)
                elif action == "promote":
                    _promote(conn, client, bucket, hot, current, now, layout, report)
        except (OutputTierError, tier_copy.CopyError, ValueError, OSError) as exc:
            report.errors[output_id] = str(exc)
            log(f"output {output_id} left as it was: {exc}")
    return report


def delete_outputs(conn: psycopg.Connection, client: Any, bucket: str, hot: PosixTier,
                   user_id: str, output_id: str | None, layout: OutputLayout) -> tuple[int, int]:
    """Remove a user's output (or all of them) from the hot tier, the cold tier and the table,
    in that order: a failure part-way leaves the row, so a retry finds what is left.
    Returns (outputs deleted, bytes)."""
    if output_id is None:
        ids = [r[0] for r in conn.execute(
            "SELECT output_id::text FROM generated_outputs WHERE user_id = %s ORDER BY 1",
            (user_id,))]
    else:
        ids = [output_id]
    count = size = 0
    for oid in ids:
        with advisory_lock(conn, NS_OUTPUT, oid):
            row = _load(conn, oid)
            if row is None:
                continue
            if row[1] != user_id:
                raise OutputTierError(f"output {oid} belongs to another user than {user_id!r}; "
                                      "the deletion request names the wrong user")
            rel = output_rel(row)
            hot.require_healthy()
            try:
                hot_paths.unlink_entry(hot.root(), layout.hot_rel(rel))  # a link, not its target
            except hot_paths.PathEscapeError as exc:
                raise OutputTierError(f"output {oid}: hot copy not deleted, the row is kept for "
                                      f"a retry: {exc}") from exc
            key = layout.cold_key(rel)
            client.delete_object(Bucket=bucket, Key=key)
            # Differing cold objects a verification kept aside are the user's bytes too.
            for aside, _size in list_keys(client, bucket, key + output_cold.CONFLICT_MARKER):
                client.delete_object(Bucket=bucket, Key=aside)
            if tier_copy.head_object(client, bucket, key) is not None:
                raise OutputTierError(f"output {oid}: {tier_copy.s3_url(bucket, key)} still "
                                      "exists after delete; the row is kept for a retry")
            with conn.transaction():
                conn.execute("DELETE FROM generated_outputs WHERE output_id = %s", (oid,))
            count += 1
            size += int(row[5] or 0)
    return count, size


def list_keys(client: Any, bucket: str, prefix: str) -> list[tuple[str, int]]:
    from hybrid_pipelines.ai_tiers.model_promotion import list_objects

    return list_objects(client, bucket, prefix)


def process_deletion_requests(conn: psycopg.Connection, client: Any, bucket: str,
                              hot: PosixTier, now: datetime, layout: OutputLayout,
                              report: OutputsReport, request_id: int | None = None) -> None:
    where = "status = 'pending'" + (" AND id = %s" if request_id is not None else "")
    params = (request_id,) if request_id is not None else ()
    requests = conn.execute(
        f"SELECT id, user_id, output_id::text FROM output_deletion_requests "  # noqa: S608
        f"WHERE {where} ORDER BY id", params).fetchall()
    for rid, user_id, output_id in requests:
        try:
            count, _size = delete_outputs(conn, client, bucket, hot, user_id, output_id, layout)
        except Exception as exc:  # noqa: BLE001 - recorded on the request, then re-raised below
            with conn.transaction():
                conn.execute("UPDATE output_deletion_requests SET status = 'failed', "
                             "processed_at = %s, detail = %s WHERE id = %s",
                             (now, str(exc)[:1000], rid))
            report.errors[f"deletion-request-{rid}"] = str(exc)
            continue
        with conn.transaction():
            conn.execute("UPDATE output_deletion_requests SET status = 'done', processed_at = %s,"
                         " detail = %s WHERE id = %s", (now, f"{count} output(s) removed", rid))
        report.deleted += count
        report.requests_done += 1


def output_sizes(conn: psycopg.Connection) -> dict[str, int]:
    out = {"hot_outputs": 0, "hot_bytes": 0, "cold_outputs": 0, "cold_only_bytes": 0}
    for on_hot, count, size in conn.execute(
            "SELECT hot_storage IS TRUE, count(*), coalesce(sum(size_bytes), 0) "
            "FROM generated_outputs GROUP BY 1"):
        if on_hot:
            out["hot_outputs"], out["hot_bytes"] = int(count), int(size)
        else:
            out["cold_outputs"], out["cold_only_bytes"] = int(count), int(size)
    return out


def bad_paths(conn: psycopg.Connection, limit: int = 20) -> list[str]:
    """Outputs whose file cannot be placed at user_id/YYYY/MM/DD/uuid.ext for their own user
    and id (a filename without extension, or a path of ours naming another user/id)."""
    bad = []
    for row in conn.execute(f"SELECT {_ROW} FROM generated_outputs"):  # noqa: S608
        try:
            puser, _day, puuid, _ext = parse_output_path(output_rel(row))
        except (ValueError, OutputTierError):
            bad.append(str(row[3] or f"{row[1]}/.../{row[0]} ({row[2]})"))
        else:
            if puser != row[1] or puuid != row[0]:
                bad.append(str(row[3]))
        if len(bad) >= limit:
            break
    return bad
