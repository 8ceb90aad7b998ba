"""Re-probing through the chain, over the real Samba share with the real ffprobe behind a
wrapper script (it reports a chosen version, and hangs while a flag file exists, so that
the pipeline's ffprobe timeout of 1 s fires): a timeout is recorded as such and retried
on the next run, which succeeds once the cause is gone, and Firestore gets the file's
metadata; a corrupt file stays invalid and is not retried; attempts run out; a new ffprobe
version re-probes the invalid files."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from hybrid_pipelines.defs.media_catalog.assets import media_probes, nas_media_files
from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.resources import FirestoreResource, NASResource, SQLiteCatalogResource

from .conftest import CHAIN, chain_resources, instance_with, metadata_of, put, unique
from .reprobe_support import ffprobe_at, ffprobe_wrapper, file_doc, rows


@pytest.fixture()
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HP_PROBE_RETRY_BACKOFF_S", "0")  # a retry is due at once


def test_timeout_is_retried_next_run_and_reaches_firestore_when_it_succeeds(
        samba_server: SambaServer, nas_resource: NASResource,
        firestore_resource: FirestoreResource, media: dict[str, Path], tmp_path: Path,
        no_backoff: None) -> None:
    folder = unique("Timeout")
    put(samba_server.share_dir, f"{folder}/clip.mkv", media["mkv"])
    put(samba_server.share_dir, f"{folder}/cut.mp4", media["truncated"])
    slow = tmp_path / "slow"
    slow.touch()
    wrapper = ffprobe_wrapper(tmp_path, "6.1-test", slow_flag=slow)
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    resources = {**chain_resources(nas_resource, catalog, firestore_resource),
                 "ffprobe": ffprobe_at(wrapper, timeout_s=1.0)}
    instance = instance_with(folder)

    first = dg.materialize(CHAIN, partition_key=folder, instance=instance, resources=resources)
    assert first.success
    before = rows(catalog.path)
    clip, cut = before["clip.mkv"], before["cut.mp4"]
    assert (clip["status"], clip["probe_failure_class"]) == ("invalid", "timeout")
    assert clip["probe_error"].startswith("ffprobe timed out after 1s")
    assert clip["probe_attempts"] == 1 and clip["probe_retry_after"] is not None
    assert clip["probe_tool_version"] == "6.1-test"
    assert (cut["status"], cut["probe_failure_class"]) == ("invalid", "corrupt")
    assert cut["probe_retry_after"] is None and cut["probe_attempts"] == 0  # final
    fs_doc = file_doc(firestore_resource, folder, f"{folder}/clip.mkv")
    assert fs_doc["status"] == "invalid" and fs_doc["duration"] is None

    slow.unlink()  # the cause is gone
    second = dg.materialize(CHAIN, partition_key=folder, instance=instance, resources=resources)
    assert second.success
    meta = metadata_of(second, "media_probes")
    assert (meta["probed"], meta["reprobed"], meta["valid"]) == (1, 1, 1)  # cut.mp4 not retried
    after = rows(catalog.path)
    clip = after["clip.mkv"]
    assert clip["status"] == "valid" and clip["duration"] > 0
    assert (clip["probe_failure_class"], clip["probe_attempts"], clip["probe_retry_after"],
            clip["probe_error"]) == (None, 0, None, None)
    assert after["cut.mp4"]["probed_at"] == cut["probed_at"]  # untouched
    fs_doc = file_doc(firestore_resource, folder, f"{folder}/clip.mkv")
    assert fs_doc["status"] == "valid"
    assert fs_doc["duration"] == pytest.approx(clip["duration"])
    assert fs_doc["video_codec"] == clip["video_codec"] and fs_doc["probe_error"] is None

    third = dg.materialize([nas_media_files, media_probes], partition_key=folder,
                           instance=instance, resources=resources)
    assert metadata_of(third, "media_probes")["probed"] == 0  # nothing left to retry


def test_timeouts_stop_being_retried_after_the_last_attempt(
        samba_server: SambaServer, nas_resource: NASResource, media: dict[str, Path],
        tmp_path: Path, no_backoff: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HP_PROBE_MAX_ATTEMPTS", "2")
    folder = unique("Attempts")
    put(samba_server.share_dir, f"{folder}/clip.mkv", media["mkv"])
    slow = tmp_path / "slow"
    slow.touch()
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    resources = {**chain_resources(nas_resource, catalog),
                 "ffprobe": ffprobe_at(ffprobe_wrapper(tmp_path, "6.1-test", slow_flag=slow),
                                       timeout_s=0.5)}
    instance = instance_with(folder)
    probed = []
    for _ in range(3):
        result = dg.materialize([nas_media_files, media_probes], partition_key=folder,
                                instance=instance, resources=resources)
        probed.append(metadata_of(result, "media_probes")["probed"])
        row = rows(catalog.path)["clip.mkv"]
    assert probed == [1, 1, 0]  # two attempts, then final
    assert (row["status"], row["probe_failure_class"]) == ("invalid", "timeout")
    assert (row["probe_attempts"], row["probe_retry_after"]) == (0, None)


def test_new_ffprobe_version_reprobes_invalid_files_only(
        samba_server: SambaServer, nas_resource: NASResource, media: dict[str, Path],
        tmp_path: Path) -> None:
    folder = unique("Version")
    put(samba_server.share_dir, f"{folder}/good.mp4", media["mp4"])
    put(samba_server.share_dir, f"{folder}/noise.mp4", media["random"])
    put(samba_server.share_dir, f"{folder}/cut.mp4", media["truncated"])
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    instance = instance_with(folder)

    def run(version: str) -> dict:
        resources = {**chain_resources(nas_resource, catalog),
                     "ffprobe": ffprobe_at(ffprobe_wrapper(tmp_path, version))}
        result = dg.materialize([nas_media_files, media_probes], partition_key=folder,
                                instance=instance, resources=resources)
        assert result.success
        return metadata_of(result, "media_probes")

    assert run("6.0-old")["probed"] == 3
    first = rows(catalog.path)
    assert {n: (r["status"], r["probe_failure_class"], r["probe_tool_version"])
            for n, r in first.items()} == {
        "good.mp4": ("valid", None, "6.0-old"),
        "noise.mp4": ("invalid", "unsupported", "6.0-old"),
        "cut.mp4": ("invalid", "corrupt", "6.0-old")}
    assert run("6.0-old")["probed"] == 0  # same ffprobe: invalid stays final
    meta = run("7.0-new")
    assert (meta["probed"], meta["reprobed"]) == (2, 2)
    second = rows(catalog.path)
    assert second["good.mp4"]["probed_at"] == first["good.mp4"]["probed_at"]
    assert second["good.mp4"]["probe_tool_version"] == "6.0-old"
    for name in ("noise.mp4", "cut.mp4"):
        assert second[name]["probe_tool_version"] == "7.0-new"
        assert second[name]["probed_at"] > first[name]["probed_at"]
        assert second[name]["probe_failure_class"] == first[name]["probe_failure_class"]
    assert run("7.0-new")["probed"] == 0
