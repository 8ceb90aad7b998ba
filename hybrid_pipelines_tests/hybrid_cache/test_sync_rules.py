"""The pure rules behind NAS name reservations (rules/nas_keys.py): which paths are one file to
the NAS, and what lies inside the sync's folder. No servers: milliseconds."""

from __future__ import annotations

import unicodedata

import pytest

from hybrid_pipelines.hybrid_cache.rules.nas_keys import canonical_key, is_within
from hybrid_pipelines.shared.nas_paths import UnsafePathError


@pytest.mark.parametrize("a,b", [
    ("Uploads/A.PDF", "uploads/a.pdf"),
    ("a\\b\\c.bin", "a/b/c.bin"),
    ("a//b/c.bin", "a/b/c.bin"),
    ("./a/./b", "a/b"),
    (unicodedata.normalize("NFD", "결승/Café.mp4"), unicodedata.normalize("NFC", "결승/café.MP4")),
    ("Straße.txt", "STRASSE.TXT"),  # full case folding, coarser than Samba's: refuse, not lose
])
def test_names_the_nas_treats_as_one_share_a_key(a: str, b: str) -> None:
    assert canonical_key(a) == canonical_key(b)


@pytest.mark.parametrize("a,b", [
    ("a/b.bin", "a/b.bin."),   # Samba keeps trailing dots
    ("a/b.bin", "a/b.bin "),   # and trailing spaces
    ("a/b1.bin", "a/b2.bin"),
    ("a/b/c", "a/bc"),
])
def test_distinct_names_keep_distinct_keys(a: str, b: str) -> None:
    assert canonical_key(a) != canonical_key(b)


@pytest.mark.parametrize("bad", ["../etc/passwd", "/abs/path", "a/\x00b"])
def test_a_path_outside_the_share_has_no_key(bad: str) -> None:
    with pytest.raises(UnsafePathError):
        canonical_key(bad)


@pytest.mark.parametrize("path,root,inside", [
    ("uploads/2025/x.bin", "uploads", True),
    ("Uploads/x.bin", "uploads", True),
    ("uploads\\x.bin", "uploads", True),
    ("uploadsX/x.bin", "uploads", False),   # a sibling sharing the prefix string
    ("uploads", "uploads", False),          # the folder itself is not a file inside it
    ("Shows/x.bin", "uploads", False),
    ("x.bin", "", True),                    # '' is the whole share
    ("", "", False),                        # but not the share root itself
])
def test_is_within(path: str, root: str, inside: bool) -> None:
    assert is_within(path, root) is inside
