"""One-off move of Firestore documents from slug+hash ids to readable ids.

The SQLite catalog says where every document was (firestore_paths.LegacyIds: the SQLite keys)
and where it belongs now (ReadableIds). For each entity row whose two paths differ, the old
document, when it exists, is written at its new path and deleted IN THE SAME BATCH (a
Firestore batch commits atomically, so a crash leaves each document at exactly one of its two
ids). The fields are copied as they are, except the reference fields (`catalog_id`,
`series_id`, `content_id`, `player_ids`), which name the new ids, exactly as a sync with
readable ids writes them. files/{id} keep their ids; their reference fields are updated in
place.

Order: per partition, contents, then series, then the catalog (children before parents), then
the partition's `_sync_metadata` document gets `id_scheme`; players last, then
`_sync_metadata/players`. A rerun after a crash finds the documents not yet moved at their old
ids and moves them; documents already moved are no longer at their old ids, so nothing is
written twice. The cursors in `_sync_metadata` are unchanged: the moved documents are the
ones the sync had written up to them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hybrid_pipelines.media_catalog.catalog_store import CatalogStore
from hybrid_pipelines.media_catalog.firestore_paths import (
    ID_SCHEME,
    REF_FIELDS,
    LegacyIds,
    ReadableIds,
)
from hybrid_pipelines.media_catalog.firestore_sync import META, meta_doc_id
from hybrid_pipelines.resources import BackendError, FirestoreResource
from hybrid_pipelines.resources.firestore import ENV_VARS, explain_firestore_error

Log = Callable[[str], None]
READ_CHUNK = 300


@dataclass
class MigrationReport:
    catalogs_moved: int = 0
    series_moved: int = 0
    contents_moved: int = 0
    players_moved: int = 0
    files_relinked: int = 0
    not_at_old_id: int = 0  # already moved by an earlier run, or never synced
    meta_marked: int = 0
    partitions: int = 0
    batches: int = 0
    elapsed_s: float = 0.0

    def metadata(self) -> dict[str, int | float]:
        return dict(self.__dict__)

    @property
    def moved(self) -> int:
        return self.catalogs_moved + self.series_moved + self.contents_moved + self.players_moved


class _Writer:
    """Batches of at most `limit` writes; a move is its set and its delete in one batch."""

    def __init__(self, client: Any, limit: int, commit: Callable[[Any], None]) -> None:
        self.client, self.limit, self._commit = client, max(2, limit), commit
        self.batch: Any = None
        self.writes = 0

    def room(self, writes: int) -> Any:
        if self.batch is not None and self.writes + writes > self.limit:
            self.flush()
        if self.batch is None:
            self.batch = self.client.batch()
        self.writes += writes
        return self.batch

    def flush(self) -> None:
        if self.batch is not None and self.writes:
            self._commit(self.batch)
        self.batch, self.writes = None, 0


class FirestoreIdMigration:
    def __init__(self, store: CatalogStore, firestore: FirestoreResource, *,
                 batch_size: int = 500, log: Log = lambda m: None,
                 on_commit: Callable[[int], None] | None = None) -> None:
        from google.api_core.retry import Retry

        self.store, self.firestore, self.log = store, firestore, log
        self.client = firestore.client()
        self.timeout_s = firestore.timeout_s
        self.retry = Retry(initial=0.2, maximum=2.0, multiplier=2.0, timeout=self.timeout_s)
        self.old, self.new = LegacyIds(), ReadableIds(store)
        self.report = MigrationReport()
        self.on_commit = on_commit  # (batch number) after each commit, for tests
        self.writer = _Writer(self.client, batch_size, self._commit)

    # ------------------------------------------------------------------ plumbing

    def _fail(self, what: str, exc: BaseException) -> BackendError:
        return BackendError(
            "Firestore", self.firestore.address,
            f"{explain_firestore_error(exc)} while {what}; every committed batch moved whole "
            "documents, so run firestore_id_migration again to move the rest", ENV_VARS)

    def _commit(self, batch: Any) -> None:
        try:
            batch.commit(retry=self.retry, timeout=self.timeout_s)
        except Exception as exc:
            raise self._fail("committing a batch of moves", exc) from exc
        self.report.batches += 1
        if self.on_commit is not None:
            self.on_commit(self.report.batches)

    def _snapshots(self, refs: Sequence[Any], fields: Sequence[str] | None = None) -> list[Any]:
        out: list[Any] = []
        for start in range(0, len(refs), READ_CHUNK):
            try:
                out.extend(self.client.get_all(refs[start:start + READ_CHUNK],
                                                field_paths=fields, retry=self.retry,
                                                timeout=self.timeout_s * 3))
            except Exception as exc:
                raise self._fail("reading documents at their old ids", exc) from exc
        return [s for s in out if s.exists]

    # ------------------------------------------------------------------ moves

    def _move(self, kind: str, rows: Sequence[dict[str, Any]]) -> int:
        pairs = {}
        for row in rows:
            old, new = self.old.parts(kind, row), self.new.parts(kind, row)
            if old != new:
                pairs[self.client.document(*old).path] = self.client.document(*new)
        found = self._snapshots([self.client.document(p) for p in pairs])
        self.report.not_at_old_id += len(pairs) - len(found)
        for snap in found:
            batch = self.writer.room(2)
            batch.set(pairs[snap.reference.path], self.new.remap(kind, snap.to_dict() or {}))
            batch.delete(snap.reference)
        return len(found)

    def _relink_files(self, rows: Sequence[dict[str, Any]]) -> None:
        refs = [self.client.document("files", r["file_id"]) for r in rows]
        for snap in self._snapshots(refs, [*REF_FIELDS, "partition"]):
            doc = snap.to_dict() or {}
            wanted = self.new.remap("file", doc)
            changed = {k: wanted[k] for k in REF_FIELDS if k in doc and wanted[k] != doc[k]}
            if changed:
                self.writer.room(1).update(snap.reference, changed)
                self.report.files_relinked += 1

    def _mark_meta(self, meta_id: str) -> None:
        """The partition's (or players') documents are all at readable ids now."""
        ref = self.client.collection(META).document(meta_id)
        try:
            snap = ref.get(retry=self.retry, timeout=self.timeout_s)
        except Exception as exc:
            raise self._fail(f"reading {META}/{meta_id}", exc) from exc
        if snap.exists and (snap.to_dict() or {}).get("id_scheme") != ID_SCHEME:
            self.writer.room(1).update(ref, {"id_scheme": ID_SCHEME})
            self.report.meta_marked += 1
        self.writer.flush()

    # ------------------------------------------------------------------ run

    def run(self) -> MigrationReport:
        t0 = time.monotonic()
        r = self.report
        for pk in sorted(self.store.folders()):
            r.partitions += 1
            rows = self.store.partition_entity_rows(pk)
            r.contents_moved += self._move("content", rows["contents"])
            r.series_moved += self._move("series", rows["series"])
            r.catalogs_moved += self._move("catalog", rows["catalogs"])
            self._relink_files(rows["files"])
            self._mark_meta(meta_doc_id(pk))
            self.log(f"{pk!r}: documents at readable ids")
        r.players_moved += self._move("player", self.store.all_player_rows())
        self._mark_meta("players")
        r.elapsed_s = round(time.monotonic() - t0, 3)
        return r
