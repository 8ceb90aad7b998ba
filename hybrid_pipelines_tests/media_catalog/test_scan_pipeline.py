"""The pipelined SMB listing (several compound listings in flight on a lean signed
connection) gives exactly what smbprotocol's listing gives, under the share root and below a
root folder, keeps its memory bound by dropping listings the walk is not near yet, refuses
an answer whose signature does not verify, and carries a whole scan and its rescan."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.media_catalog.catalog_store import CatalogStore
from hybrid_pipelines.media_catalog.nas_access import NASAccess
from hybrid_pipelines.media_catalog.rules.scan_diff import Entry
from hybrid_pipelines.media_catalog.scan import Scanner
from hybrid_pipelines.media_catalog.settings import CatalogSettings
from hybrid_pipelines.media_catalog.smb_pipeline import PipelinedLister
from hybrid_pipelines.resources import NASResource, SQLiteCatalogResource
from hybrid_pipelines.resources.smb_auth import ntlm_credentials
from hybrid_pipelines.resources.smb_wire import (
    CREATE,
    WireConnection,
    WireError,
    WireUnsupported,
)

from .conftest import put, unique


def _walk(access: NASAccess, top: str) -> list[Entry]:
    """Depth first in name order, announcing every subfolder as the scan does."""
    out: list[Entry] = []
    entries = sorted(access.list_dir(top) or [], key=lambda e: e.path)
    access.announce(e.path for e in entries if e.is_dir)
    for e in entries:
        out.append(e)
        if e.is_dir:
            out.extend(_walk(access, e.path))
    return out


@pytest.fixture(scope="module")
def tree(samba_server: SambaServer) -> str:
    folder = unique("pipe")
    names = ["a.mp4", "한글 파일.mkv", "emoji 🎬.ts", "x" * 200 + ".mp4", "sp ace", "#%&.mp4"]
    for d in range(12):
        for i, name in enumerate(names):
            for sub in ("E0", "E1"):
                put(samba_server.share_dir, f"{folder}/S{d:02d}/{sub}/{name}", b"z" * (i + d))
    (samba_server.share_dir / folder / "empty").mkdir()
    for i in range(3000):  # more than two answers of 256 KiB hold: listed through smbprotocol
        put(samba_server.share_dir, f"{folder}/big/{i:05d} {'long name ' * 9}.mp4", b"")
    return folder


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[CatalogStore]:
    """A fresh SQLite catalog of the test's own."""
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    catalog.apply_schema("catalog")
    with catalog.connect() as conn:
        yield CatalogStore(conn)


def test_pipelined_walk_equals_the_smbprotocol_listing(tree: str,
                                                       nas_resource: NASResource) -> None:
    generic = NASAccess(nas_resource, lean_smb=False)
    lean = NASAccess(nas_resource)
    with lean.pipelined(window=4, ahead=6):
        got = _walk(lean, tree)
        stats = lean.pipeline_stats()
        assert lean.list_dir(f"{tree}/missing") is None
    want = _walk(generic, tree)
    assert got == want and len(got) > 3000
    assert stats["unsupported"] is None and stats["signing"] in ("GMAC", "CMAC")
    assert stats["fallbacks"] == 1  # the big folder only
    assert stats["dropped"] > 0  # six held at most: listings far ahead were let go
    assert lean.listings == 12 * 3 + 3  # every folder once (a missing one is not counted)


def test_root_dir_is_honoured(tree: str, nas_resource: NASResource) -> None:
    below = nas_resource.model_copy(update={"root_dir": tree})
    lean, generic = NASAccess(below), NASAccess(below, lean_smb=False)
    with lean.pipelined():
        got = _walk(lean, "S03")
    assert got == _walk(generic, "S03") and [e.path for e in got][0] == "S03/E0"
    assert NASAccess(below).list_dir("S03") == generic.list_dir("S03")  # the compound lister


def test_an_answer_with_a_bad_signature_is_refused(tree: str, nas_resource: NASResource,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    n = nas_resource
    conn = WireConnection(n.host, n.port, n.share, n.username, n.password, n.timeout_s)
    conn.connect()
    real_fill = conn._fill

    def tamper() -> None:  # flips one byte of a directory answer on its way in
        real_fill()
        buf = conn._buf
        if len(buf) > 4 + 70 and int.from_bytes(buf[16:18], "little") == CREATE:
            buf[-1] ^= 0x01  # a listing's compound answer: its last message is hit

    monkeypatch.setattr(conn, "_fill", tamper)
    lister = PipelinedLister(lambda: conn, lambda p: pytest.fail("no fallback expected"))
    try:
        with pytest.raises(WireError, match="bad signature"):
            lister.list_dir(f"{tree}/S01/E1")
    finally:
        lister.close()


def test_the_lean_session_logs_on_with_the_nt_hash_and_refuses_a_wrong_password(
        nas_resource: NASResource) -> None:
    n = nas_resource
    (given,) = ntlm_credentials(n.username, n.password)  # NTLM from the hash, no LM hash
    assert [type(c).__name__ for c in given] == ["NTLMHash", "Password"]
    conn = WireConnection(n.host, n.port, n.share, n.username, n.password, n.timeout_s)
    conn.connect()
    try:
        assert conn.signer is not None and conn.tree_id
    finally:
        conn.close()
    wrong = WireConnection(n.host, n.port, n.share, n.username, n.password + "x", n.timeout_s)
    with pytest.raises(WireUnsupported, match="session setup refused"):
        wrong.connect()
    assert wrong.sock is None  # closed


def test_scan_and_rescan_through_the_pipeline(samba_server: SambaServer,
                                              nas_resource: NASResource,
                                              store: CatalogStore) -> None:
    folder = unique("pipescan")
    for d in range(30):
        for i in range(7):
            put(samba_server.share_dir, f"{folder}/Season {d:02d}/Ep {i}.ts", b"x" * (i + 1))
    first = Scanner(store, NASAccess(nas_resource), CatalogSettings(),
                    lookahead=5).scan(folder, folder)
    # 31 folders; not the share's root above them: the folder's own listing answers
    # with its timestamp
    assert (first.new, first.found, first.dirs_listed) == (210, 210, 31)
    assert first.bytes == 30 * sum(range(1, 8))
    again = Scanner(store, NASAccess(nas_resource), CatalogSettings()).scan(folder, folder)
    assert (again.new, again.changed, again.deleted, again.found) == (0, 0, 0, 210)
    assert again.dirs_listed == 1 and again.bytes == first.bytes  # the inner folder
    grown = samba_server.share_dir / folder / "Season 07" / "Ep 3.ts"
    grown.write_bytes(b"y" * 100)  # rewritten in place: only a full reconcile sees it
    old = time.time() - 3600
    os.utime(grown, (old, old))
    full = Scanner(store, NASAccess(nas_resource), CatalogSettings()).scan(
        folder, folder, full=True)
    assert (full.changed, full.found) == (1, 210)
    assert full.bytes == first.bytes - 4 + 100  # the kept sum is not reused once stale


def test_a_folders_own_listing_answers_with_the_timestamp_its_parent_lists(
        samba_server: SambaServer, nas_resource: NASResource, store: CatalogStore) -> None:
    """The scan reads its folder's timestamp from the folder's own open (no listing of the
    share's root, which holds every catalog folder): it is the timestamp the root's listing
    shows, it moves when a file is added, and a missing folder still reads as gone."""
    folder = unique("owntime")
    put(samba_server.share_dir, f"{folder}/a.ts", b"a")
    root = {e.path: e for e in NASAccess(nas_resource).list_dir("") or []}
    access = NASAccess(nas_resource)
    with access.pipelined():
        got = access.list_dir_and_mtime(folder)
        assert access.list_dir_and_mtime(f"{folder}-missing") == (None, None)
    assert got is not None
    entries, own = got
    assert own == root[folder].mtime and [e.path for e in entries] == [f"{folder}/a.ts"]
    plain = NASAccess(nas_resource)  # outside the pipeline: nothing listed for it
    assert plain.list_dir_and_mtime(folder) is None and plain.listings == 0

    def scan() -> Any:
        return Scanner(store, NASAccess(nas_resource), CatalogSettings()).scan(folder, folder)

    assert (scan().new, scan().new) == (1, 0)
    old = time.time() - 3600  # an older timestamp than the one catalogued
    os.utime(samba_server.share_dir / folder, (old, old))
    put(samba_server.share_dir, f"{folder}/b.ts", b"b")  # moves it to now
    assert scan().new == 1
    for p in (samba_server.share_dir / folder).iterdir():
        p.unlink()
    (samba_server.share_dir / folder).rmdir()
    gone = scan()
    assert gone.folder_missing and gone.deleted == 2


def test_a_folder_grown_past_what_the_catalog_knew_is_listed_again_whole(
        samba_server: SambaServer, nas_resource: NASResource, store: CatalogStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the catalog knows a folder holds sizes its listing's buffer (16 KiB when small);
    a folder that has outgrown it since is listed again with the full buffer on the same
    connection, not handed to smbprotocol, and nothing in it is missed."""
    folder = unique("grown")
    put(samba_server.share_dir, f"{folder}/inner/sub/x.ts", b"x")
    put(samba_server.share_dir, f"{folder}/inner/a.ts", b"a")
    seen: list[dict[str, Any]] = []
    real_close = PipelinedLister.close

    def close(self: PipelinedLister) -> None:  # a spy: the pipeline's counters at its end
        seen.append(self.describe())
        real_close(self)

    monkeypatch.setattr(PipelinedLister, "close", close)
    assert Scanner(store, NASAccess(nas_resource), CatalogSettings()).scan(
        folder, folder).new == 2
    # 400 names of 60 characters: ~75 KB of listing where the catalog knew of two entries
    for i in range(400):
        put(samba_server.share_dir, f"{folder}/inner/{'n' * 52}{i:05d}.ts", b"y")
    grown = Scanner(store, NASAccess(nas_resource), CatalogSettings()).scan(folder, folder)
    assert (grown.new, grown.found) == (400, 402)
    assert seen[-1]["resent"] == 1 and seen[-1]["fallbacks"] == 0
