"""nas_path as the file server stores it (relative to NAS_ROOT_PATH, UNC, smb://, absolute
under the root's mount) resolves to one path beneath the NAS root, never outside it
(rules/nas_location, pure)."""

from __future__ import annotations

import pytest

from hybrid_pipelines.hybrid_cache.rules.nas_location import NASPathOutsideRoot, root_relative
from hybrid_pipelines.shared.nas_paths import UnsafePathError
from hybrid_pipelines.shared.nas_root import NASRoot

ROOT = NASRoot("smb", host="nas01", share="Web", root_dir="storage",
               mount_path="/mnt/nas/storage")


@pytest.mark.parametrize("stored", [
    "2024/a.mp4",
    "2024\\a.mp4",
    "\\\\nas01\\Web\\storage\\2024\\a.mp4",
    "\\\\NAS01\\web\\storage\\2024\\a.mp4",   # host and share compare case-insensitively
    "//nas01/Web/storage/2024/a.mp4",
    "smb://nas01/Web/storage/2024/a.mp4",
    "smb://nas01/Web/storage/2024/a%2Emp4",
    "/mnt/nas/storage/2024/a.mp4",
    "/mnt/nas/storage//./2024/a.mp4",
])
def test_every_stored_form_resolves_to_one_path_beneath_the_root(stored: str) -> None:
    assert root_relative(stored, ROOT) == "2024/a.mp4"


@pytest.mark.parametrize("stored, why", [
    ("\\\\nas01\\Web\\other\\a.mp4", "outside the NAS root"),
    ("\\\\nas01\\Other\\storage\\a.mp4", "another share"),
    ("\\\\nas02\\Web\\storage\\a.mp4", "another share"),
    ("smb://nas01/Web/elsewhere/a.mp4", "outside the NAS root"),
    ("/mnt/other/storage/a.mp4", "not under the mount"),
    ("/mnt/nas/storage/../../etc/passwd", ".."),
    ("../etc/passwd", ".."),
    ("\\\\nas01\\Web\\storage\\..\\..\\x", ".."),
    ("/mnt/nas/storage", "NAS root itself"),
    ("\\\\nas01\\Web\\storage", "NAS root itself"),
    ("", "empty"),
])
def test_paths_outside_the_root_are_refused_naming_the_cause(stored: str, why: str) -> None:
    with pytest.raises(UnsafePathError) as err:
        root_relative(stored, ROOT)
    assert why in str(err.value)


def test_forms_the_root_cannot_place_are_refused_with_the_setting_to_fix() -> None:
    with pytest.raises(NASPathOutsideRoot, match="NAS_ROOT_PATH"):
        root_relative("\\\\nas01\\Web\\a.mp4")
    with pytest.raises(NASPathOutsideRoot, match="HP_NAS_MOUNT_PATH"):
        root_relative("/mnt/nas/a.mp4")
    assert root_relative("a/b.mp4") == "a/b.mp4"  # relative: beneath the root as stored


def test_a_root_that_is_the_whole_share_takes_every_path_in_it() -> None:
    share = NASRoot("smb", host="nas01", share="Web")
    assert root_relative("\\\\nas01\\Web\\x\\a.mp4", share) == "x/a.mp4"
