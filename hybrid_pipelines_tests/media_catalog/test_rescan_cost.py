"""A rescan of an unchanged tree lists far fewer directories than the first scan (counted,
not timed); a new file is found by listing only its directory; in-place growth, which no
directory timestamp shows, is caught by the full reconcile."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.media_catalog.catalog_store import CatalogStore
from hybrid_pipelines.media_catalog.nas_access import NASAccess
from hybrid_pipelines.media_catalog.scan import Scanner, ScanReport
from hybrid_pipelines.media_catalog.settings import CatalogSettings
from hybrid_pipelines.resources import NASResource, SQLiteCatalogResource

from .conftest import put, unique

SEASONS, EPISODES, FILES = 3, 8, 3
LEAVES = SEASONS * EPISODES
ALL_DIRS = 1 + SEASONS + LEAVES  # the folder, its seasons, their episodes


@pytest.fixture()
def tree(samba_server: SambaServer) -> tuple[str, Path]:
    folder = unique("Rescan")
    for s in range(SEASONS):
        for e in range(EPISODES):
            for f in range(FILES):
                put(samba_server.share_dir, f"{folder}/S{s}/E{e:02d}/part {f}.mp4",
                    bytes([f]) * (100 + f))
    return folder, samba_server.share_dir


def _scan(nas: NASResource, catalog: SQLiteCatalogResource, folder: str,
          full: bool = False) -> tuple[ScanReport, int]:
    settings = CatalogSettings()
    with catalog.connect() as conn:
        access = NASAccess(nas, (0.05,))
        report = Scanner(CatalogStore(conn), access, settings).scan(folder, folder, full=full)
    return report, access.listings


def test_rescan_lists_only_inner_and_changed_directories(
        tree: tuple[str, Path], nas_resource: NASResource, tmp_path: Path) -> None:
    folder, share = tree
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    catalog.apply_schema("catalog")

    first, listed_first = _scan(nas_resource, catalog, folder)
    assert first.new == first.found == LEAVES * FILES
    assert listed_first == ALL_DIRS  # the folder's timestamp comes with its own listing

    again, listed_again = _scan(nas_resource, catalog, folder)
    assert (again.new, again.changed, again.deleted) == (0, 0, 0)
    assert listed_again == 1 + SEASONS  # the folder and its seasons: no episode directory
    assert again.dirs_skipped == LEAVES
    assert listed_again * 5 < listed_first

    put(share, f"{folder}/S1/E03/part 9.mp4", b"new")
    added, listed_added = _scan(nas_resource, catalog, folder)
    assert (added.new, added.found) == (1, LEAVES * FILES + 1)
    assert listed_added == listed_again + 1  # the one directory whose timestamp moved

    target = share / folder / "S2" / "E05" / "part 1.mp4"
    stamp = os.stat(target.parent).st_mtime_ns
    with target.open("ab") as f:
        f.write(b"appended in place")
    assert os.stat(target.parent).st_mtime_ns == stamp
    missed, _ = _scan(nas_resource, catalog, folder)
    assert missed.changed == 0  # by design: the nightly full reconcile is there for this
    full, listed_full = _scan(nas_resource, catalog, folder, full=True)
    assert full.changed == 1
    assert listed_full == ALL_DIRS


def test_an_unchanged_rescan_reads_no_file_rows_for_its_report(
        tree: tuple[str, Path], nas_resource: NASResource, tmp_path: Path) -> None:
    """The report's counts and bytes are kept with the partition's newest change number
    (scan_state.partition_summary): a rescan that changed nothing reuses them; a scan
    change or a probe verdict moves the change number, so the figures follow."""
    folder, share = tree
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    catalog.apply_schema("catalog")
    first, _ = _scan(nas_resource, catalog, folder)
    statements: list[str] = []
    with catalog.connect() as conn:
        conn.set_trace_callback(statements.append)
        again = Scanner(CatalogStore(conn), NASAccess(nas_resource, (0.05,)),
                        CatalogSettings()).scan(folder, folder)
    assert (again.found, again.bytes, again.to_probe) == \
        (first.found, first.bytes, first.to_probe) == (LEAVES * FILES, 7272, LEAVES * FILES)
    sums = [s for s in statements if "GROUP BY status" in s or "SUM(size)" in s]
    assert statements and not sums

    put(share, f"{folder}/S0/E00/part 7.mp4", b"x" * 1000)
    (share / folder / "S1" / "E01" / "part 2.mp4").unlink()
    changed, _ = _scan(nas_resource, catalog, folder)
    assert (changed.found, changed.bytes, changed.new, changed.deleted) == \
        (LEAVES * FILES, 7272 + 1000 - 102, 1, 1)
    with catalog.connect() as conn:
        store = CatalogStore(conn)
        path, size, mtime = conn.execute(
            "SELECT path, size, mtime FROM files WHERE status = 'stable' LIMIT 1").fetchone()
        assert store.write_probe_results([(path, size, mtime, {"ok": True})]) == 1
        counts, total = store.partition_summary(folder)
        assert counts == store.status_counts(folder) and counts["valid"] == 1
        assert total == store.live_bytes(folder)


def test_a_rescan_puts_what_it_will_list_on_the_wire_at_once(
        tree: tuple[str, Path], nas_resource: NASResource, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The directories a rescan lists are known from the catalog: they are announced to the
    pipeline before the first listing, not a level per round trip."""
    folder, _ = tree
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    catalog.apply_schema("catalog")
    _scan(nas_resource, catalog, folder)
    announced: list[list[str]] = []
    listed: list[str] = []
    announced_first: list[bool] = []
    sizes: list[dict[str, tuple[int, int]]] = []
    real_announce, real_list = NASAccess.announce, NASAccess.list_dir
    real_list_top = NASAccess.list_dir_and_mtime

    def announce(self: NASAccess, paths: Any, expected: Any = None) -> None:
        announced.append(list(paths))
        sizes.append(dict(expected or {}))
        if not listed:
            announced_first.append(True)
        real_announce(self, announced[-1], expected)

    def list_dir(self: NASAccess, path: str) -> Any:
        listed.append(path)
        return real_list(self, path)

    def list_dir_and_mtime(self: NASAccess, path: str) -> Any:
        listed.append(path)
        return real_list_top(self, path)

    monkeypatch.setattr(NASAccess, "announce", announce)
    monkeypatch.setattr(NASAccess, "list_dir", list_dir)
    monkeypatch.setattr(NASAccess, "list_dir_and_mtime", list_dir_and_mtime)
    again, listings = _scan(nas_resource, catalog, folder)
    assert (again.new, again.changed, again.deleted) == (0, 0, 0)
    seasons = {f"{folder}/S{s}" for s in range(SEASONS)}
    assert announced_first and set(announced[0]) == {folder, *seasons}  # before listing
    # with what the catalog knows each holds, which sizes its listing's buffer
    assert sizes[0] == {folder: (SEASONS, SEASONS * len("/S0")),
                        **{s: (EPISODES, EPISODES * len("/E00")) for s in seasons}}
    # Not the share's root: the folder's own listing answers with its timestamp.
    assert set(listed) == {folder, *seasons} and listings == len(listed)
