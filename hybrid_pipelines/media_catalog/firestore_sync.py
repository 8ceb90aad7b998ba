"""Incremental copy of the SQLite catalog to Firestore.

Collections (readable ids, see rules.firestore_ids and firestore_paths):

    catalogs/{catalog name}                          catalogs/WSOP
    catalogs/{catalog}/series/{series name}          .../series/WSOP 2024
    .../series/{series}/contents/{content title}     .../contents/Main Event%2FDay1~<hash>
    files/{hash of the path}
    players/{player key}                             players/phil ivey
    _sync_metadata/{partition doc}   cursor of each partition, and `players`; `id_scheme`

A metadata document without `id_scheme` was written by the old code with slug+hash ids: the
sync then stops and names the one-off job (firestore_id_migration) that moves those documents,
instead of writing a second copy of every document beside them.

Every row change in SQLite carries a change number (seq). A partition's sync sends the
changes after its cursor in seq order, at most 500 writes per commit, several commits in
flight once the first few went through (firestore_bulk; 30 ms from Firestore one at a time
would mostly wait). Each commit also writes the partition's `_sync_metadata` document with a
cursor that every earlier commit reached, and the SQLite cursor moves, in send order, only
over acknowledged commits. An outage therefore loses nothing: the next run resends from the
last change before which everything landed (sets and deletes are idempotent). Deleted
files, and catalog entities left without files, are deleted from Firestore.

The emulator keeps data in memory: when `_sync_metadata` has no document for a partition
that SQLite says was synced (emulator restarted, new project), the partition is resent in
full.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hybrid_pipelines.media_catalog.catalog_store import (
    PROBE_FIELDS,
    CatalogStore,
    ChangeRow,
    json_list,
)
from hybrid_pipelines.media_catalog.firestore_bulk import BulkCommitter, CommitFailed
from hybrid_pipelines.media_catalog.firestore_paths import LegacyIds, ReadableIds
from hybrid_pipelines.media_catalog.rules.commit_window import CommitWindow
from hybrid_pipelines.resources import BackendError, FirestoreResource
from hybrid_pipelines.resources.firestore import ENV_VARS, explain_firestore_error

Log = Callable[[str], None]
META = "_sync_metadata"
PLAYERS_STREAM = "firestore:players"


def meta_doc_id(partition_key: str) -> str:
    return "partition-" + hashlib.sha256(partition_key.encode()).hexdigest()[:24]


@dataclass
class SyncReport:
    synced: int = 0
    deleted: int = 0
    batches: int = 0
    full_resync: int = 0
    strays_deleted: int = 0
    players_synced: int = 0
    cursor: int = 0
    peak_in_flight: int = 0
    commit_retries: int = 0
    elapsed_s: float = 0.0

    def metadata(self) -> dict[str, int | float]:
        out: dict[str, int | float] = dict(self.__dict__)
        out["docs_per_s"] = round((self.synced + self.deleted) / self.elapsed_s, 1) \
            if self.elapsed_s else 0.0
        return out


def _ts(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value else None


class FirestoreSync:
    def __init__(self, store: CatalogStore, firestore: FirestoreResource, *,
                 batch_size: int = 500, timeout_s: float | None = None,
                 log: Log = lambda m: None,
                 on_commit: Callable[[int, int], None] | None = None,
                 ids: LegacyIds | ReadableIds | None = None, max_in_flight: int = 8):
        from google.api_core.retry import Retry

        self.store, self.firestore, self.log = store, firestore, log
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight  # commits in flight at most (firestore_bulk)
        self.timeout_s = timeout_s or firestore.timeout_s
        try:
            self.client = firestore.client()
        except Exception as exc:  # missing credentials, bad project: say which and how
            raise BackendError("Firestore", firestore.address, explain_firestore_error(exc),
                               ENV_VARS) from exc
        self.retry = Retry(initial=0.2, maximum=2.0, multiplier=2.0, timeout=self.timeout_s)
        self.on_commit = on_commit  # (batch number, cursor) after each commit, for tests
        # LegacyIds only to write documents the old way (the migration's tests).
        self.ids = ids if ids is not None else ReadableIds(store)

    # ------------------------------------------------------------------ errors

    def _fail(self, what: str, exc: BaseException, cursor: int) -> BackendError:
        return BackendError(
            "Firestore", self.firestore.address,
            f"{explain_firestore_error(exc)} while {what}; the sync cursor stays at change "
            f"{cursor} (the last committed one), so the next run resends the rest", ENV_VARS)

    # ------------------------------------------------------------------ refs and documents

    def _ref(self, kind: str, row: dict[str, Any]) -> Any:
        return self.client.document(*self.ids.parts(kind, row))

    def _doc(self, kind: str, row: dict[str, Any], partition_key: str) -> dict[str, Any] | None:
        """The document for a row, or None when it must be deleted."""
        doc = self._fields(kind, row, partition_key)
        return None if doc is None else self.ids.remap(kind, doc)

    def _fields(self, kind: str, row: dict[str, Any],
                partition_key: str) -> dict[str, Any] | None:
        common = {"updated_at": _ts(row["updated_at"]), "seq": row["seq"]}
        if kind == "file":
            if row["status"] == "deleted":
                return None
            doc = {k: row[k] for k in ("path", "name", "dir", "catalog_id", "series_id",
                                       "content_id", "size", "status", "probe_error",
                                       "bytes_read", *PROBE_FIELDS)}
            return {**doc, "partition": partition_key, "mtime": _ts(row["mtime"]),
                    "probed_at": _ts(row["probed_at"]), **common}
        if row["deleted"]:
            return None
        if kind == "player":
            return {"name": row["name"], "content_count": row["content_count"], **common}
        if kind == "catalog":
            keys = ("name", "series_count", "content_count", "file_count", "total_bytes")
        elif kind == "series":
            keys = ("name", "catalog_id", "content_count", "file_count")
        else:
            keys = ("title", "catalog_id", "series_id", "file_count", "duration")
        doc = {k: row[k] for k in keys}
        if kind == "content":
            doc["player_ids"] = json_list(row["player_ids"])
        return {**doc, "partition": partition_key, **common}

    # ------------------------------------------------------------------ cursors

    def _start_cursor(self, stream: str, meta_id: str, full: bool) -> tuple[int, bool]:
        cursor, _ = self.store.get_state(stream)
        try:
            snap = self.client.collection(META).document(meta_id).get(
                retry=self.retry, timeout=self.timeout_s)
        except Exception as exc:
            raise self._fail(f"reading {META}/{meta_id}", exc, cursor) from exc
        if snap.exists and self.ids.scheme is not None:
            data = snap.to_dict() or {}
            if data.get("cursor") and data.get("id_scheme") != self.ids.scheme:
                raise BackendError(
                    "Firestore", self.firestore.address,
                    f"{META}/{meta_id} says documents up to change {data.get('cursor')} were "
                    "written with the old slug+hash document ids; syncing now would leave a "
                    "second copy of each beside them. Run the one-off Dagster job "
                    "firestore_id_migration (it moves them to readable ids, written and "
                    "deleted in the same batch), then this sync again", ENV_VARS)
        if full:
            return 0, True
        if not snap.exists:
            if cursor:
                self.log(f"{META}/{meta_id} is missing while SQLite says changes up to {cursor} "
                         "were synced (emulator restarted or new project): full resync")
                return 0, True
            return 0, False
        remote = int((snap.to_dict() or {}).get("cursor", 0))
        return min(cursor, remote), False

    # ------------------------------------------------------------------ sync

    def _build(self, changes: list[ChangeRow], partition_key: str
               ) -> tuple[Any, frozenset[str], int, int]:
        """A write batch for `changes` (without the cursor document), the document paths it
        writes, and its sets and deletes."""
        by_kind: dict[str, list[str]] = {}
        for ch in changes:
            by_kind.setdefault(ch.kind, []).append(ch.doc_id)
        rows = {kind: self.store.rows_by_id(kind, ids) for kind, ids in by_kind.items()}
        batch = self.client.batch()
        paths: set[str] = set()
        sets = deletes = 0
        for ch in changes:
            row = rows[ch.kind].get(ch.doc_id)
            if row is None or row["seq"] != ch.seq:
                continue  # changed again since the query; sent with its newer seq
            ref = self._ref(ch.kind, row)
            paths.add(ref.path)
            doc = self._doc(ch.kind, row, partition_key)
            if doc is None:
                batch.delete(ref)
                deletes += 1
            else:
                batch.set(ref, doc)
                sets += 1
        return batch, frozenset(paths), sets, deletes

    def _send(self, stream: str, meta_id: str, meta: dict[str, Any], partition_key: str,
              fetch: Callable[[int, int], list[ChangeRow]], cursor: int,
              report: SyncReport) -> int:
        """Send the changes after `cursor`, several commits in flight (firestore_bulk). Each
        commit also writes the cursor document with a cursor every earlier commit reached:
        its own last change when nothing else is in flight, else the acknowledged prefix;
        the SQLite cursor moves in send order over acknowledged commits only. When the last
        commit could not claim its own cursor, one more write sets the final one."""
        per_batch = max(1, self.batch_size - 1)  # one write is the metadata document
        meta_ref = self.client.collection(META).document(meta_id)
        committed = cursor

        def meta_doc(at: int) -> dict[str, Any]:
            doc = {**meta, "cursor": at, "synced_at": datetime.now(UTC)}
            if self.ids.scheme is not None:
                doc["id_scheme"] = self.ids.scheme
            return doc

        def acknowledged(info: tuple[int, int, int]) -> None:
            nonlocal committed
            last, sets, deletes = info
            self.store.set_state(stream, last)
            committed = last
            report.batches += 1
            report.synced += sets
            report.deleted += deletes
            if stream == PLAYERS_STREAM:
                report.players_synced += sets + deletes
            if self.on_commit is not None:
                self.on_commit(report.batches, committed)

        window = CommitWindow(max_in_flight=self.max_in_flight)
        fetched, claimed = cursor, cursor
        with BulkCommitter(timeout_s=self.timeout_s, window=window,
                           on_done=acknowledged) as committer:
            try:
                while changes := fetch(fetched, per_batch):
                    batch, paths, sets, deletes = self._build(changes, partition_key)
                    fetched = changes[-1].seq
                    idle = committer.make_room(paths)
                    claimed = fetched if idle else committed
                    batch.set(meta_ref, meta_doc(claimed))
                    committer.submit(batch, paths, (fetched, sets, deletes))
                committer.drain()
                if claimed != committed:
                    final = self.client.batch()
                    final.set(meta_ref, meta_doc(committed))
                    committer.commit_now(final)
            except CommitFailed as failed:
                raise self._fail(f"committing batches of up to {per_batch + 1} writes for "
                                 f"{stream}", failed.cause, committed) from failed.cause
            finally:
                report.commit_retries += committer.retries
        report.peak_in_flight = max(report.peak_in_flight, committer.peak)
        return committed

    def sync_partition(self, partition_key: str, *, full: bool = False) -> SyncReport:
        t0 = time.monotonic()
        report = SyncReport()
        stream = f"firestore:{partition_key}"
        meta_id = meta_doc_id(partition_key)
        cursor, resync = self._start_cursor(stream, meta_id, full)
        report.full_resync = int(resync)
        if resync:
            self.store.set_state(stream, 0)
        meta = {"partition": partition_key, "kind": "partition"}
        cursor = self._send(stream, meta_id, meta, partition_key,
                            lambda after, n: self.store.partition_changes(partition_key, after, n),
                            cursor, report)
        if full:
            report.strays_deleted = self._delete_strays(partition_key, cursor)
        # Players belong to no partition: every partition's run carries their changes.
        p_cursor, p_resync = self._start_cursor(PLAYERS_STREAM, "players", full)
        if p_resync:
            self.store.set_state(PLAYERS_STREAM, 0)
        self._send(PLAYERS_STREAM, "players", {"kind": "players"}, partition_key,
                   self.store.player_changes, p_cursor, report)
        report.cursor = cursor
        report.elapsed_s = round(time.monotonic() - t0, 3)
        return report

    def _delete_strays(self, partition_key: str, cursor: int) -> int:
        """Full reconcile: file documents of this partition that SQLite does not hold live
        (written under other rules, or by hand) are deleted."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        live = self.store.live_file_ids(partition_key)
        query = self.client.collection("files").where(
            filter=FieldFilter("partition", "==", partition_key)).select([])
        try:
            strays = [snap.reference for snap in query.stream(retry=self.retry,
                                                               timeout=self.timeout_s * 6)
                      if snap.id not in live]
            for start in range(0, len(strays), self.batch_size):
                batch = self.client.batch()
                for ref in strays[start:start + self.batch_size]:
                    batch.delete(ref)
                batch.commit(retry=self.retry, timeout=self.timeout_s)
        except Exception as exc:
            raise self._fail("deleting stray file documents", exc, cursor) from exc
        if strays:
            self.log(f"deleted {len(strays)} stray file document(s) of {partition_key!r}")
        return len(strays)

    # ------------------------------------------------------------------ check

    def firestore_counts(self, partition_key: str) -> dict[str, int]:
        """Documents of the partition. No collection-group query: those need indexes that
        Firestore does not keep by default, so contents are counted series by series."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        def count(query: Any) -> int:
            result = query.count().get(retry=self.retry, timeout=self.timeout_s)
            return int(result[0][0].value)

        flt = FieldFilter("partition", "==", partition_key)
        series = self.client.collection("catalogs").document(
            self.ids.catalog_of_partition(self.store, partition_key)).collection("series")
        try:
            # list_documents also finds series documents already deleted whose contents
            # are still there: those contents must count.
            contents = sum(count(ref.collection("contents"))
                           for ref in series.list_documents(retry=self.retry,
                                                            timeout=self.timeout_s))
            return {
                "files": count(self.client.collection("files").where(filter=flt)),
                "contents": contents,
                "series": count(series),
            }
        except Exception as exc:
            raise self._fail("counting documents", exc,
                             self.store.get_state(f"firestore:{partition_key}")[0]) from exc
