"""The chain's first half on a NAS mounted as a path (protocol=local): names as stored
(NFD folders included), a symlink out of the share refused with a reason, hidden files
ignored."""

from __future__ import annotations

import os
import sqlite3
import unicodedata
from pathlib import Path

import dagster as dg

from hybrid_pipelines.defs.media_catalog.assets import (
    catalog_db_asset,
    media_probes,
    nas_media_files,
)
from hybrid_pipelines.resources import NASResource, SQLiteCatalogResource

from .conftest import chain_resources, instance_with, metadata_of, put


def test_mounted_share(local_nas_resource: NASResource, media: dict[str, Path],
                       tmp_path: Path) -> None:
    root = Path(local_nas_resource.local_root)
    nfd_dir = unicodedata.normalize("NFD", "결승 모음")
    put(root, "HCL/HCL 2025/Episode 01 - Ivey vs Dwan.mkv", media["mkv"])
    put(root, f"HCL/{nfd_dir}/final.mp4", media["mp4"])
    put(root, "HCL/HCL 2025/.hidden.mp4", media["mp4"])
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(media["mp4"].read_bytes())
    link = root / "HCL" / "HCL 2025" / "escape.mp4"
    os.symlink(outside, link)
    os.utime(link, (1e9, 1e9), follow_symlinks=False)  # an old link: stable at first sight
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    result = dg.materialize([nas_media_files, media_probes, catalog_db_asset],
                            partition_key="HCL", instance=instance_with("HCL"),
                            resources=chain_resources(local_nas_resource, catalog))
    assert result.success
    scan = metadata_of(result, "nas_media_files")
    assert (scan["found"], scan["ignored"]) == (3, 1)
    with sqlite3.connect(catalog.path) as conn:
        rows = dict(conn.execute("SELECT path, COALESCE(probe_error, status) FROM files"))
    assert rows["HCL/HCL 2025/Episode 01 - Ivey vs Dwan.mkv"] == "valid"
    assert rows[f"HCL/{nfd_dir}/final.mp4"] == "valid"  # probed under its stored NFD name
    assert rows["HCL/HCL 2025/escape.mp4"].startswith("refused: ")
    assert metadata_of(result, "catalog_db")["players"] == 2
