"""One folder with a bad name must not stop cataloguing.

Over real Samba: Samba mangles names holding characters Windows forbids (control characters
below 0x20 come back as 8.3 names like `_JATHG~F`), but DEL (0x7f) is legal in Windows names
and reaches the client as it is, where no path check accepts it. On a share mounted as a path
(protocol=local) every control character, newline included, comes through. Either way the
sensor must still request runs for the good folders, and a scan must skip the bad subtree,
count it (`skipped_names`) and complete, on its first run and on every run after."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from hybrid_pipelines.defs.media_catalog.assets import media_probes, nas_media_files
from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.media_catalog.catalog_store import CatalogStore
from hybrid_pipelines.media_catalog.change_detection import detect_changes
from hybrid_pipelines.media_catalog.nas_access import NASAccess
from hybrid_pipelines.media_catalog.rules.catalog_paths import name_problem, partition_key_for
from hybrid_pipelines.media_catalog.settings import PARTITIONS_NAME, CatalogSettings
from hybrid_pipelines.resources import NASResource, SQLiteCatalogResource

from .conftest import chain_resources, instance_with, metadata_of, put, tick, unique

SMB_BAD = "\x7fbad"  # passes through Samba unmangled
MOUNT_BAD = ("\x01bad", "new\nline")


@pytest.mark.parametrize("name", ["\x01bad", "new\nline", "\x7fbad", "tab\there", "a\\b",
                                  "가" * 86])
def test_name_problem_names_the_cause_and_fix(name: str) -> None:
    why = name_problem(name)
    assert why is not None and ("rename" in why or "shorten" in why or "plain name" in why)


@pytest.mark.parametrize("name", ["WSOP 2024", "Wait... 포커 100%", "c1\x85x", "..hidden.."])
def test_ordinary_names_have_no_problem(name: str) -> None:
    assert name_problem(name) is None


def _share(kind: str, samba_server: SambaServer | None, nas: NASResource,
           monkeypatch: pytest.MonkeyPatch) -> tuple[Path, tuple[str, ...]]:
    if kind == "smb":
        assert samba_server is not None
        root = unique("mc-badnames")
        monkeypatch.setenv("HP_CATALOG_NAS_ROOT", root)
        return samba_server.share_dir / root, (SMB_BAD,)
    return Path(nas.local_root), MOUNT_BAD


@pytest.fixture(params=["smb", "mount"])
def share(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
          tmp_path: Path) -> tuple[Path, tuple[str, ...], NASResource]:
    if request.param == "smb":
        samba = request.getfixturevalue("samba_server")
        nas = request.getfixturevalue("nas_resource")
        base, bad = _share("smb", samba, nas, monkeypatch)
    else:
        nas = request.getfixturevalue("local_nas_resource")
        base, bad = _share("mount", None, nas, monkeypatch)
    return base, bad, nas


def test_sensor_skips_a_badly_named_top_level_folder(
        share: tuple[Path, tuple[str, ...], NASResource], media: dict[str, Path],
        tmp_path: Path) -> None:
    base, bad_names, nas = share
    put(base, "WSOP/2024/Day1.mp4", media["mp4"])
    for bad in bad_names:
        put(base, f"{bad}/clip.mp4", media["mp4"])
    resources = chain_resources(nas, SQLiteCatalogResource(path=str(tmp_path / "catalog.db")))
    instance = dg.DagsterInstance.ephemeral()
    requests, cursor = tick(instance, None, resources)  # used to raise on every tick
    assert [r.partition_key for r in requests] == ["WSOP"]
    assert instance.get_dynamic_partitions(PARTITIONS_NAME) == ["WSOP"]
    again, _ = tick(instance, cursor, resources)
    assert again == []  # the skipped folder is not a change either


def test_scan_skips_a_badly_named_subfolder_and_completes(
        share: tuple[Path, tuple[str, ...], NASResource], media: dict[str, Path],
        tmp_path: Path) -> None:
    base, bad_names, nas = share
    folder = "Show"
    put(base, f"{folder}/S1/good.mp4", media["mp4"])
    for i, bad in enumerate(bad_names):
        put(base, f"{folder}/S1/{bad}/hidden{i}.mp4", media["mp4"])
        put(base, f"{folder}/{bad}/deeper/other{i}.mp4", media["mp4"])
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    resources = chain_resources(nas, catalog)
    instance = instance_with(folder)
    for attempt in range(2):  # the first run, and the one after: neither stalls on the name
        result = dg.materialize([nas_media_files, media_probes],
                                partition_key=partition_key_for(folder), instance=instance,
                                resources=resources, raise_on_error=False)
        assert result.success, f"run {attempt + 1} failed on the bad name"
        scan = metadata_of(result, "nas_media_files")
        if attempt == 0:  # later runs list only what changed, so they meet fewer of them
            assert scan["skipped_names"] == 2 * len(bad_names)
        assert scan["found"] == 1
    with sqlite3.connect(catalog.path) as conn:
        rows = {p.split(f"{folder}/", 1)[1]: status
                for p, status in conn.execute("SELECT path, status FROM files")}
        unfinished = conn.execute(
            "SELECT count(*) FROM scan_checkpoints WHERE status != 'completed'").fetchone()[0]
    assert rows == {"S1/good.mp4": "valid"}
    assert unfinished == 0
    # The sensor's cheap look sees nothing to do either: the bad names are not "changes".
    settings = CatalogSettings.from_env()
    access = NASAccess(nas, settings.retry_delays_s)
    top = settings.folder_path(folder)
    top_entry = next(e for e in access.list_dir(settings.nas_root) or [] if e.path == top)
    with catalog.connect() as conn:
        changes = detect_changes(CatalogStore(conn), access, settings,
                                 partition_key_for(folder), top, top_entry.mtime)
    assert not [r for r in changes.reasons if "directory" in r], changes.reasons
