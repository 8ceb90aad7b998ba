"""HP_PROBE_MAX_READ_BYTES through the chain: over a real Samba share, a file that would need
more than the budget is recorded invalid with the reason (and the setting to raise), after
reading no more than the budget; a sound file next to it is still probed."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from hybrid_pipelines.defs.media_catalog.assets import media_probes, nas_media_files
from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.media_catalog.settings import CatalogSettings, SettingsError
from hybrid_pipelines.resources import NASResource, SQLiteCatalogResource

from .conftest import chain_resources, instance_with, metadata_of, put, unique

MiB = 1024 * 1024


def test_file_over_the_read_budget_is_recorded_invalid_with_the_setting(
        samba_server: SambaServer, nas_resource: NASResource, media: dict[str, Path],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HP_PROBE_MAX_READ_BYTES", str(2 * MiB))
    folder = unique("budget")
    put(samba_server.share_dir, f"{folder}/good.mkv", media["mkv"])
    garbage = put(samba_server.share_dir, f"{folder}/garbage.flac",
                  b"fLaC" + os.urandom(128 * 1024))
    with open(garbage, "r+b") as fh:
        fh.truncate(512 * MiB)  # sparse on the server: a big file that costs no disk
    old = garbage.stat().st_mtime - 3600
    os.utime(garbage, (old, old))
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    result = dg.materialize([nas_media_files, media_probes], partition_key=folder,
                            instance=instance_with(folder),
                            resources=chain_resources(nas_resource, catalog))
    assert result.success
    meta = metadata_of(result, "media_probes")
    assert (meta["valid"], meta["invalid"]) == (1, 1)
    with sqlite3.connect(catalog.path) as conn:
        rows = {name.rsplit("/", 1)[1]: (status, error, bytes_read) for name, status, error,
                bytes_read in conn.execute(
                    "SELECT path, status, probe_error, bytes_read FROM files")}
    status, error, bytes_read = rows["garbage.flac"]
    assert status == "invalid"
    assert error.startswith("probe would read more than 2 MiB"), error
    assert f"raise HP_PROBE_MAX_READ_BYTES (now {2 * MiB}) to at least" in error
    assert "partial read" in error  # why the attempts within the budget failed
    assert bytes_read <= 2 * MiB
    assert rows["good.mkv"][0] == "valid"


def test_probe_limits_come_from_the_environment() -> None:
    settings = CatalogSettings.from_env({"HP_PROBE_MAX_READ_BYTES": "33554432",
                                         "HP_PROBE_MEMORY_LIMIT_BYTES": "2147483648"})
    assert (settings.probe_max_read_bytes, settings.probe_memory_limit_bytes) == \
        (32 * MiB, 2048 * MiB)
    defaults = CatalogSettings.from_env({})
    assert defaults.probe_max_read_bytes == 64 * MiB
    assert defaults.probe_memory_limit_bytes == 1024 * MiB
    with pytest.raises(SettingsError, match="HP_PROBE_MAX_READ_BYTES=1000 is below"):
        CatalogSettings.from_env({"HP_PROBE_MAX_READ_BYTES": "1000"})
    with pytest.raises(SettingsError, match="HP_PROBE_MEMORY_LIMIT_BYTES=.* too little"):
        CatalogSettings.from_env({"HP_PROBE_MEMORY_LIMIT_BYTES": str(64 * MiB)})
