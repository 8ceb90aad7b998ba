"""Where each SQLite catalog row lives in Firestore, under the two id schemes.

SQLite keys its entities by slug+hash ids (rules.catalog_paths.stable_id: `wsop-1f2e3d4c5b`),
unique across the whole catalog; they stay the SQLite keys. Firestore used them as document ids
too (LegacyIds, kept so that the one-off migration finds those documents and tests can write
them the old way). The web app looks documents up by name, so Firestore now uses readable ids
(ReadableIds, rules.firestore_ids.doc_id): `catalogs/WSOP/series/WSOP 2024/contents/...`.
The reference fields of a document (`catalog_id`, `series_id`, `content_id`, `player_ids`)
hold the ids of the documents they point at, under the same scheme.

files/{id} keeps its id, a hash of the share-relative path, under both schemes: file names
repeat in every folder and a path always holds '/', so a readable id would be escaped every
time. The web app reaches a content's files with the query
`files where catalog_id == C and series_id == S and content_id == T` (or `path == P`).
"""

from __future__ import annotations

import os
from typing import Any

from hybrid_pipelines.media_catalog.catalog_store import CatalogStore
from hybrid_pipelines.media_catalog.rules.catalog_paths import catalog_id, folder_for
from hybrid_pipelines.media_catalog.rules.firestore_ids import doc_id, player_doc_id

# Written into every `_sync_metadata` document by a sync (or the migration) using readable
# ids; a metadata document without it was written by the old code, with slug+hash ids.
ID_SCHEME = "readable-1"
REF_FIELDS = ("catalog_id", "series_id", "content_id")
Parts = tuple[str, ...]


class LegacyIds:
    """The slug+hash document ids written before readable ids: the SQLite keys."""

    scheme: str | None = None

    def parts(self, kind: str, row: dict[str, Any]) -> Parts:
        if kind == "file":
            return ("files", row["file_id"])
        if kind == "player":
            return ("players", row["player_id"])
        cat: Parts = ("catalogs", row["catalog_id"])
        if kind == "catalog":
            return cat
        ser = (*cat, "series", row["series_id"])
        return ser if kind == "series" else (*ser, "contents", row["content_id"])

    def catalog_of_partition(self, store: CatalogStore, partition_key: str) -> str:
        return catalog_id(_catalog_name(store, partition_key))

    def remap(self, kind: str, doc: dict[str, Any]) -> dict[str, Any]:
        return doc


def _catalog_name(store: CatalogStore, partition_key: str) -> str:
    folder = store.folder_of(partition_key) or folder_for(partition_key)
    return os.path.basename(folder) or folder


class ReadableIds:
    """Readable document ids, resolved from the names SQLite holds (rows are never deleted:
    an entity without files stays as a tombstone, so its name is there to delete it by)."""

    scheme: str | None = ID_SCHEME

    def __init__(self, store: CatalogStore) -> None:
        self.store = store
        self._cache: dict[tuple[str, str], str] = {}

    # ------------------------------------------------------------------ one id each

    def _lookup(self, table: str, key: str, value: str, field: str) -> str | None:
        hit = self._cache.get((table, value))
        if hit is None:
            row = self.store.row(table, key, value)
            if row is None:
                return None
            hit = player_doc_id(row[field]) if table == "players" else doc_id(row[field])
            self._cache[(table, value)] = hit
        return hit

    def catalog(self, key: str, partition_key: str | None = None) -> str:
        found = self._lookup("catalogs", "catalog_id", key, "name")
        if found is None and partition_key is not None:
            # The catalog row is written last in a build; its name is the partition folder.
            return doc_id(_catalog_name(self.store, partition_key))
        return found if found is not None else key

    def series(self, series_id: str) -> str:
        return self._lookup("series", "series_id", series_id, "name") or series_id

    def content(self, content_id: str) -> str:
        return self._lookup("contents", "content_id", content_id, "title") or content_id

    def player(self, player_id: str) -> str:
        return self._lookup("players", "player_id", player_id, "name") or player_id

    def catalog_of_partition(self, store: CatalogStore, partition_key: str) -> str:
        return doc_id(_catalog_name(store, partition_key))

    # ------------------------------------------------------------------ paths and fields

    def parts(self, kind: str, row: dict[str, Any]) -> Parts:
        if kind == "file":
            return ("files", row["file_id"])
        if kind == "player":
            return ("players", player_doc_id(row["name"]))
        if kind == "catalog":
            return ("catalogs", doc_id(row["name"]))
        cat: Parts = ("catalogs", self.catalog(row["catalog_id"], row.get("partition_key")))
        if kind == "series":
            return (*cat, "series", doc_id(row["name"]))
        return (*cat, "series", self.series(row["series_id"]), "contents",
                doc_id(row["title"]))

    def remap(self, kind: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Reference fields from SQLite keys to the ids of the documents they name."""
        out = dict(doc)
        if out.get("catalog_id"):
            out["catalog_id"] = self.catalog(out["catalog_id"], out.get("partition"))
        if out.get("series_id"):
            out["series_id"] = self.series(out["series_id"])
        if out.get("content_id"):
            out["content_id"] = self.content(out["content_id"])
        if "player_ids" in out:
            out["player_ids"] = [self.player(p) for p in out["player_ids"] or []]
        return out
