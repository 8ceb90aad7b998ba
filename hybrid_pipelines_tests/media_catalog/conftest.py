"""Fixtures of the media catalog tests: small real media made once by ffmpeg, resources for
the chain, and an instance holding the partitions."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from hybrid_pipelines.defs.media_catalog.assets import (
    catalog_db_asset,
    firestore_catalog,
    media_probes,
    nas_media_files,
)
from hybrid_pipelines.dev import media_fixtures as mf
from hybrid_pipelines.media_catalog.rules.catalog_paths import partition_key_for
from hybrid_pipelines.media_catalog.settings import PARTITIONS_NAME
from hybrid_pipelines.resources import (
    FFprobeResource,
    FirestoreResource,
    NASResource,
    SQLiteCatalogResource,
)

# The catalog chain in dependency order, for dg.materialize in tests.
CHAIN = [nas_media_files, media_probes, catalog_db_asset, firestore_catalog]

HOUR_AGO = 3600.0


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """kind -> a small real media file (or a broken one)."""
    if not mf.ffmpeg_available() or not shutil.which("ffprobe"):
        pytest.skip("the media catalog tests need ffmpeg and ffprobe (apt-get install ffmpeg)")
    out = tmp_path_factory.mktemp("catalog-media")
    return {
        "mp4": mf.make_video(out, "mp4_faststart", duration_s=1.0, width=160, height=120),
        "mp4_moov_end": mf.make_video(out, "mp4_moov_end", duration_s=1.0, width=160,
                                      height=120),
        "mkv": mf.make_video(out, "mkv", duration_s=1.0, width=160, height=120),
        # About 1 MB of noise: big enough that a partial read is visibly partial.
        "bulky": mf.make_video(out, "mp4_moov_end", duration_s=1.0, width=320, height=240,
                               bulky=True),
        "random": mf.make_corrupt(out, "random_bytes"),
        "truncated": mf.make_corrupt(out, "truncated_mp4"),
        "zero": mf.make_corrupt(out, "zero_byte"),
        "text": mf.make_corrupt(out, "text_as_mp4"),
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def put(share_dir: Path, rel: str, src: Path | bytes, *, age_s: float = HOUR_AGO) -> Path:
    """Place a file on the share (server side, as a NAS client's finished copy would be)."""
    target = share_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(src, bytes):
        target.write_bytes(src)
    else:
        shutil.copyfile(src, target)
    if age_s:
        old = time.time() - age_s
        os.utime(target, (old, old))
    return target


def chain_resources(nas: NASResource, catalog: SQLiteCatalogResource,
                    firestore: FirestoreResource | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {"nas": nas, "sqlite_catalog": catalog, "ffprobe": FFprobeResource()}
    if firestore is not None:
        res["firestore"] = firestore
    return res


def instance_with(*folders: str) -> dg.DagsterInstance:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(PARTITIONS_NAME, [partition_key_for(f) for f in folders])
    return instance


def metadata_of(result: dg.ExecuteInJobResult, asset: str) -> dict[str, Any]:
    for ev in result.get_asset_materialization_events():
        mat = ev.materialization
        if mat.asset_key.to_user_string() == asset:
            return {k: v.value for k, v in mat.metadata.items()}
    raise AssertionError(f"no materialization of {asset}")


@pytest.fixture()
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny reconnect delays for tests that take the NAS down (the default is 1, 2, 4 s)."""
    monkeypatch.setenv("HP_CATALOG_RETRY_DELAYS", "0.05,0.05,0.05")


def tick(instance: dg.DagsterInstance, cursor: str | None,
         resources: dict[str, Any]) -> tuple[list[dg.RunRequest], str | None]:
    """One evaluation of the NAS sensor, applying its partition requests like the daemon."""
    from hybrid_pipelines.defs.media_catalog.sensors import media_catalog_nas_sensor

    # A context manager, as the daemon uses it: the resources are set up and torn down
    # (the NAS resource closes the SMB sessions of the tick).
    with dg.build_sensor_context(instance=instance, cursor=cursor,
                                 resources={"nas": resources["nas"],
                                            "sqlite_catalog": resources["sqlite_catalog"]}
                                 ) as context:
        result = media_catalog_nas_sensor(context)
    assert isinstance(result, dg.SensorResult)
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return list(result.run_requests or []), result.cursor
