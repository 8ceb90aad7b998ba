"""The lean SMB listing gives exactly what smbclient.scandir gives (names in any script,
sizes, directory flags, mtimes), falls back for directories too big for one compound
request, and reports a missing directory as missing."""

from __future__ import annotations

import struct

from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.media_catalog.nas_access import NASAccess
from hybrid_pipelines.media_catalog.smb_listing import (
    FILETIME_EPOCH,
    filetime_to_epoch,
    parse_directory_information,
)
from hybrid_pipelines.resources import NASResource

from .conftest import put, unique


def _record(name: str, *, is_dir: bool, size: int, mtime: int, last: bool) -> bytes:
    raw = name.encode("utf-16-le")
    length = 64 + len(raw)
    padded = length + (-length % 8)
    head = struct.pack("<IIqqqqqqII", 0 if last else padded, 0, 0, 0, mtime, 0, size, 0,
                       0x10 if is_dir else 0x20, len(raw))
    return (head + raw).ljust(padded, b"\0")


def test_parse_directory_information() -> None:
    t = FILETIME_EPOCH + 17_000_000_001_234_567
    buf = (_record(".", is_dir=True, size=0, mtime=t, last=False)
           + _record("포커 2025", is_dir=True, size=4096, mtime=t, last=False)
           + _record("Day 1.mp4", is_dir=False, size=1234, mtime=t, last=True))
    entries = parse_directory_information(buf, "WSOP")
    assert [(e.path, e.is_dir, e.size) for e in entries] == \
        [("WSOP/포커 2025", True, 0), ("WSOP/Day 1.mp4", False, 1234)]
    assert entries[0].mtime == filetime_to_epoch(t) == 1_700_000_000.123456


def test_lean_listing_matches_scandir(samba_server: SambaServer,
                                      nas_resource: NASResource) -> None:
    folder = unique("lean")
    names = ["a.mp4", "한글 파일.mkv", "emoji 🎬.ts", "x" * 200 + ".mp4", "sp ace", "#%&.mp4"]
    for i, name in enumerate(names):
        put(samba_server.share_dir, f"{folder}/small/{name}", b"z" * i)
    (samba_server.share_dir / folder / "small" / "sub dir").mkdir()
    (samba_server.share_dir / folder / "empty").mkdir()
    for i in range(2500):  # more than two 64 KiB answers hold
        put(samba_server.share_dir, f"{folder}/big/{i:05d} {'long name ' * 4}.mp4", b"")
    lean, generic = NASAccess(nas_resource), NASAccess(nas_resource, lean_smb=False)
    for sub in ("small", "empty", "big", ""):
        path = f"{folder}/{sub}".rstrip("/")
        got, want = lean.list_dir(path), generic.list_dir(path)
        assert got is not None and want is not None
        assert sorted(got, key=lambda e: e.path) == sorted(want, key=lambda e: e.path), sub
    assert lean.lean_fallbacks == 1  # only the big one
    assert lean.list_dir(f"{folder}/missing") is None
    assert lean.listings == 4
