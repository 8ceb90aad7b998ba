"""Derive catalogs, series, contents and players from the files of one partition.

Incremental: only files changed since the last build (by change number) are placed again,
and only the contents, series and players they touch are recomputed. A change of rules
(HP_CATALOG_RULES or the catalogued root) rebuilds the whole partition. An entity left with
no live file is kept as a tombstone (deleted = 1) so the Firestore sync deletes its document.

Players: found in file names by the rules' player patterns ("... - A vs B.mp4" by default),
linked to contents, and global across catalogs (one player, one document)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from hybrid_pipelines.media_catalog.catalog_store import CatalogStore
from hybrid_pipelines.media_catalog.rules.catalog_paths import catalog_id, folder_for, place
from hybrid_pipelines.media_catalog.settings import CatalogSettings

Log = Callable[[str], None]
CHUNK = 100


@dataclass
class CatalogReport:
    files_placed: int = 0
    contents_changed: int = 0
    series_changed: int = 0
    players_changed: int = 0
    tombstoned: int = 0
    rebuilt: int = 0
    catalogs: int = 0
    series: int = 0
    contents: int = 0
    players: int = 0
    files: int = 0
    total_bytes: int = 0

    def metadata(self) -> dict[str, int]:
        return dict(self.__dict__)


def _rules_fingerprint(settings: CatalogSettings) -> str:
    return hashlib.sha256(f"{settings.rules.fingerprint()}|{settings.nas_root}".encode()
                          ).hexdigest()[:16]


def build_catalog(store: CatalogStore, settings: CatalogSettings, partition_key: str, *,
                  full: bool = False, log: Log = lambda m: None) -> CatalogReport:
    report = CatalogReport()
    stream = f"catalog:{partition_key}"
    cursor, fingerprint = store.get_state(stream)
    wanted = _rules_fingerprint(settings)
    if full or fingerprint != wanted:
        if cursor:
            log(f"catalog rules changed or full rebuild: placing every file of "
                f"{partition_key!r} again")
        cursor, report.rebuilt = 0, 1
    rules, rel = settings.rules, settings.relative
    rows = store.files_since(partition_key, cursor)
    contents: set[str] = set()
    series: set[str] = set()
    for start in range(0, len(rows), CHUNK):
        with store.transaction():
            for row in rows[start:start + CHUNK]:
                where = place(rel(row["path"]), rules)
                ids = (where.catalog_id, where.series_id, where.content_id)
                contents.update(x for x in (row["content_id"], where.content_id) if x)
                series.update(x for x in (row["series_id"], where.series_id) if x)
                if (row["catalog_id"], row["series_id"], row["content_id"]) != ids:
                    store.set_file_place(row["path"], *ids, bump=row["status"] != "deleted")
                    report.files_placed += 1
    players: set[str] = set()
    ordered = sorted(contents)
    for start in range(0, len(ordered), CHUNK):
        with store.transaction():
            for cid in ordered[start:start + CHUNK]:
                _refresh_content(store, settings, partition_key, cid, players, report)
    ordered = sorted(series)
    for start in range(0, len(ordered), CHUNK):
        with store.transaction():
            for sid in ordered[start:start + CHUNK]:
                _refresh_series(store, settings, partition_key, sid, report)
    ordered = sorted(players)
    for start in range(0, len(ordered), CHUNK):
        with store.transaction():
            for pid in ordered[start:start + CHUNK]:
                _refresh_player(store, pid, report)
    with store.transaction():
        _refresh_catalog(store, partition_key, report)
    store.set_state(stream, store.current_seq(), wanted)
    counts = store.live_counts(partition_key)
    report.series, report.contents, report.files = \
        counts["series"], counts["contents"], counts["files"]
    report.players = store.partition_player_count(partition_key)
    return report


def _refresh_content(store: CatalogStore, settings: CatalogSettings, partition_key: str,
                     cid: str, players: set[str], report: CatalogReport) -> None:
    files = store.live_files_of("content_id", cid)
    old_links = store.content_links(cid)
    existing = store.row("contents", "content_id", cid)
    if not files:
        store.set_content_links(cid, partition_key, set(), old_links)
        players.update(old_links)
        if existing is not None and not existing["deleted"]:
            store.upsert_entity("contents", "content_id",
                                {"content_id": cid, "file_count": 0, "deleted": 1})
            report.tombstoned += 1
        return
    first = place(settings.relative(files[0]["path"]), settings.rules)
    names: dict[str, str] = {}
    for f in files:
        where = place(settings.relative(f["path"]), settings.rules)
        for name, pid in zip(where.players, where.player_ids, strict=True):
            names.setdefault(pid, name)
    durations = [f["duration"] for f in files if f["duration"]]
    values = {
        "content_id": cid, "series_id": first.series_id, "catalog_id": first.catalog_id,
        "partition_key": partition_key, "title": first.content, "file_count": len(files),
        # Several files of one content are versions or parts; the longest tells the length.
        "duration": max(durations) if durations else None,
        "player_ids": json.dumps(list(names), ensure_ascii=False), "deleted": 0,
    }
    if store.upsert_entity("contents", "content_id", values):
        report.contents_changed += 1
    for pid, name in names.items():
        if store.row("players", "player_id", pid) is None:
            store.upsert_entity("players", "player_id",
                                {"player_id": pid, "name": name, "content_count": 0,
                                 "deleted": 0})
    store.set_content_links(cid, partition_key, set(names), old_links)
    players.update(old_links | set(names))


def _refresh_series(store: CatalogStore, settings: CatalogSettings, partition_key: str,
                    sid: str, report: CatalogReport) -> None:
    n_contents, n_files = store.series_counts(sid)
    existing = store.row("series", "series_id", sid)
    if n_files == 0:
        if existing is not None and not existing["deleted"]:
            store.upsert_entity("series", "series_id", {"series_id": sid, "content_count": 0,
                                                        "file_count": 0, "deleted": 1})
            report.tombstoned += 1
        return
    sample = store.live_files_of("series_id", sid)[0]
    where = place(settings.relative(sample["path"]), settings.rules)
    if store.upsert_entity("series", "series_id", {
            "series_id": sid, "catalog_id": where.catalog_id, "partition_key": partition_key,
            "name": where.series, "content_count": n_contents, "file_count": n_files,
            "deleted": 0}):
        report.series_changed += 1


def _refresh_player(store: CatalogStore, pid: str, report: CatalogReport) -> None:
    count = store.player_content_count(pid)
    existing = store.row("players", "player_id", pid)
    if existing is None:
        return
    values = {"player_id": pid, "content_count": count, "deleted": int(count == 0)}
    if store.upsert_entity("players", "player_id", values):
        report.players_changed += 1


def _refresh_catalog(store: CatalogStore, partition_key: str, report: CatalogReport) -> None:
    folder = store.folder_of(partition_key) or folder_for(partition_key)
    name = os.path.basename(folder) or folder
    counts = store.catalog_counts(partition_key)
    values = {"catalog_id": catalog_id(name), "partition_key": partition_key, "name": name,
              **counts, "deleted": int(counts["file_count"] == 0)}
    existing = store.row("catalogs", "catalog_id", values["catalog_id"])
    if existing is None and counts["file_count"] == 0:
        return
    store.upsert_entity("catalogs", "catalog_id", values)
    report.catalogs = int(counts["file_count"] > 0)
    report.total_bytes = counts["total_bytes"]
