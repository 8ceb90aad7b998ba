"""nas_path as the file server stores it (relative, UNC, smb://, absolute under the mount)
resolves under the NAS root, never outside it (rules/nas_location, pure)."""

from __future__ import annotations

import pytest

from hybrid_pipelines.hybrid_cache.rules.nas_location import (
    NASPathOutsideRoot,
    NASRoot,
    share_relative,
)
from hybrid_pipelines.shared.nas_paths import UnsafePathError

ROOT = NASRoot(host="nas01", share="Web", root_dir="storage", mount_path="/mnt/nas")


@pytest.mark.parametrize("stored", [
    "storage/2024/a.mp4",
    "storage\\2024\\a.mp4",
    "\\\\nas01\\Web\\storage\\2024\\a.mp4",
    "\\\\NAS01\\web\\storage\\2024\\a.mp4",   # host and share compare case-insensitively
    "//nas01/Web/storage/2024/a.mp4",
    "smb://nas01/Web/storage/2024/a.mp4",
    "smb://nas01/Web/storage/2024/a%2Emp4",
    "/mnt/nas/storage/2024/a.mp4",
    "/mnt/nas//storage/./2024/a.mp4",
])
def test_every_stored_form_resolves_to_one_share_path(stored: str) -> None:
    assert share_relative(stored, ROOT) == "storage/2024/a.mp4"


@pytest.mark.parametrize("stored, why", [
    ("other/a.mp4", "outside the NAS root"),
    ("\\\\nas01\\Other\\storage\\a.mp4", "another share"),
    ("\\\\nas02\\Web\\storage\\a.mp4", "another share"),
    ("smb://nas01/Web/elsewhere/a.mp4", "outside the NAS root"),
    ("/mnt/other/storage/a.mp4", "not under the mount"),
    ("/mnt/nas/storage/../../etc/passwd", ".."),
    ("storage/../etc/passwd", ".."),
    ("\\\\nas01\\Web\\storage\\..\\..\\x", ".."),
    ("/mnt/nas", "share root"),
    ("\\\\nas01\\Web", "share root"),
    ("", "empty"),
])
def test_paths_outside_the_root_are_refused_naming_the_cause(stored: str, why: str) -> None:
    with pytest.raises(UnsafePathError) as err:
        share_relative(stored, ROOT)
    assert why in str(err.value)


def test_forms_the_root_cannot_place_are_refused_with_the_setting_to_fix() -> None:
    bare = NASRoot()
    with pytest.raises(NASPathOutsideRoot, match="NAS_ROOT_PATH"):
        share_relative("\\\\nas01\\Web\\a.mp4", bare)
    with pytest.raises(NASPathOutsideRoot, match="mount path"):
        share_relative("/mnt/nas/a.mp4", bare)
    assert share_relative("a/b.mp4", bare) == "a/b.mp4"  # the whole share is the root
