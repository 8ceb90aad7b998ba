"""Hostile file names against the NAS, over SMB and a mount path: each is refused with a clear
error or stored inside the share, never written outside it."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest

from hybrid_pipelines.resources import NASResource
from hybrid_pipelines.shared.nas_paths import UnsafePathError, safe_relpath

REFUSED = {
    "parent escape": "../escape.mp4",
    "deep escape": "WSOP/../../escape.mp4",
    "backslash escape": "WSOP\\..\\..\\escape.mp4",
    "absolute posix": "/etc/passwd",
    "absolute windows": "C:\\Windows\\evil.mp4",
    "NUL byte": "WSOP/evil\x00.mp4",
    "newline": "WSOP/evil\nname.mp4",
    "escape sequence": "WSOP/\x1b[31mred.mp4",
    "256-byte name": "WSOP/" + "가" * 85 + "x.mp4",
}

STORED = {
    "SQL-looking": "WSOP/Robert'); DROP TABLE files;--.mp4",
    "quotes and percent": "HCL/50% it's final.mkv",
    "255-byte name": "WSOP/" + "가" * 83 + "abcd.mp4"[:6],
    "Korean with spaces": "WSOP/WSOP 2024/메인 이벤트/1일차 결승.mp4",
    "emoji": "HCL/🃏 high stakes ♠.ts",
    "dots inside": "HCL/..hidden../a..b.mp4",
}

# Fine on a Linux mount, impossible over SMB: refused there with a clear error.
SMB_REFUSED = {"double quote": 'HCL/say "hi".mkv', "colon": "HCL/a:b.mp4",
               "pipe": "HCL/a|b.mp4", "question mark": "HCL/why?.mp4"}


@pytest.mark.parametrize("name", REFUSED.values(), ids=REFUSED.keys())
def test_refused_names_have_clear_errors(name: str) -> None:
    with pytest.raises(UnsafePathError) as info:
        safe_relpath(name)
    assert repr(name)[:20].strip("'\"")[:8] in str(info.value) or "name" in str(info.value)
    assert any(word in str(info.value) for word in ("rename", "relative", "share", "shorten"))


def _snapshot(path: Path) -> set[str]:
    return {str(p) for p in path.rglob("*")}


def _exercise(nas: NASResource, share_dir: Path) -> None:
    outside_before = _snapshot(share_dir.parent)
    fs = nas.fs()
    smb = nas.protocol == "smb"
    for name in SMB_REFUSED.values():
        if smb:
            with pytest.raises(UnsafePathError, match="SMB cannot store"):
                fs.open_write(name)
    for name in [*REFUSED.values()]:
        with pytest.raises(UnsafePathError):
            fs.open_write(name)
        with pytest.raises(UnsafePathError):
            fs.create_new(name)
        with pytest.raises(UnsafePathError):
            fs.put_new(name, b"x")
        with pytest.raises(UnsafePathError):
            fs.stat(name)
    for name in [*STORED.values(), *([] if smb else SMB_REFUSED.values())]:
        clean = safe_relpath(name)
        parent = clean.rsplit("/", 1)[0]
        fs.makedirs(parent)
        with fs.open_write(clean) as fh:
            fh.write(clean.encode())
        with nas.open_reader(clean) as reader:
            assert reader.read_at(0, 10_000) == clean.encode()
        assert (share_dir / clean).read_bytes() == clean.encode()
    # Samba's own lock/log/state files appear beside the share while it serves us.
    server_state = tuple(str(share_dir.parent / d) + os.sep for d in
                         ("lock", "logs", "state", "cache", "private", "pid", "ncalrpc"))
    new_outside = {p for p in _snapshot(share_dir.parent) - outside_before
                   if not p.startswith(str(share_dir) + os.sep) and not p.startswith(server_state)}
    assert not new_outside, f"written outside the share: {new_outside}"
    for top in ("WSOP", "HCL"):
        fs.remove(top)


def test_hostile_names_over_smb(nas_resource: NASResource, samba_server) -> None:
    _exercise(nas_resource, samba_server.share_dir)


def test_hostile_names_on_mount_path(local_nas_resource: NASResource) -> None:
    _exercise(local_nas_resource, Path(local_nas_resource.local_root))


@pytest.mark.parametrize("form", ["NFD", "NFC"])
def test_unicode_normalisation_variants_keep_the_stored_name(nas_resource: NASResource,
                                                             form: str) -> None:
    """A Linux NAS stores names byte for byte: a name written decomposed (macOS) is listed,
    opened and read back under exactly that name, over SMB."""
    fs = nas_resource.fs()
    name = unicodedata.normalize(form, f"norm-{form}/Café 결승.mp4")
    fs.makedirs(name.split("/")[0])
    with fs.open_write(name) as fh:
        fh.write(form.encode())
    assert [e.path for e in fs.list_dir(name.split("/")[0])] == [name]
    with nas_resource.open_reader(name) as reader:
        assert reader.read_at(0, 10) == form.encode()
    fs.remove(name.split("/")[0])


def test_symlink_out_of_mount_share_is_refused(local_nas_resource: NASResource,
                                               tmp_path: Path) -> None:
    root = Path(local_nas_resource.local_root)
    (tmp_path / "secret").mkdir()
    (root / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(UnsafePathError, match="outside the share"):
        local_nas_resource.fs().open_write("link/pwned.txt")
    assert not (tmp_path / "secret" / "pwned.txt").exists()
