"""smbd stopped while a partition is being probed: the file whose read meets the dead NAS is
recorded invalid as 'transient' with a retry time (not as broken media), the files not
reached stay 'stable', the run fails naming the NAS; with smbd back, the next run probes
them all and the transient one becomes valid."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from hybrid_pipelines.defs.media_catalog.assets import ProbeConfig, media_probes, nas_media_files
from hybrid_pipelines_tests.conftest import ServerFactory, nas_resource_for

from .conftest import chain_resources, instance_with, metadata_of, put
from .reprobe_support import ffprobe_at, ffprobe_wrapper, rows

NAMES = [f"clip{i}.mkv" for i in range(4)]


@pytest.mark.fault("media catalog: smbd stopped during the probe of a partition -> the file "
                   "read is 'transient' with a retry time, the rest stay stable, the next run "
                   "probes them all", kind="server stopped")
def test_nas_stopped_mid_probe_is_transient_and_retried(
        server_factory: ServerFactory, media: dict[str, Path], tmp_path: Path,
        quick_retries: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HP_PROBE_RETRY_BACKOFF_S", "0")
    server = server_factory("samba")  # private: this test stops it
    folder = "Outage"
    for name in NAMES:
        put(server.share_dir, f"{folder}/{name}", media["mkv"])
    catalog = tmp_path / "catalog.db"
    from hybrid_pipelines.resources import SQLiteCatalogResource

    resources = chain_resources(nas_resource_for(server), SQLiteCatalogResource(path=str(catalog)))
    instance = instance_with(folder)
    scan = dg.materialize([nas_media_files], partition_key=folder, instance=instance,
                          resources=resources)
    assert metadata_of(scan, "nas_media_files")["found"] == len(NAMES)

    # The wrapper marks the first ffprobe call and holds it 2 s; smbd is stopped meanwhile,
    # so the next file's reads meet a dead NAS.
    started = tmp_path / "started"
    wrapper = ffprobe_wrapper(tmp_path, "6.1-test", started_flag=started, delay_s=2)

    def stop_when_probing() -> None:
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        server.stop()

    stopper = threading.Thread(target=stop_when_probing)
    stopper.start()
    config = dg.RunConfig(ops={"media_probes": ProbeConfig(workers=1)})
    try:
        result = dg.materialize([media_probes], partition_key=folder, instance=instance,
                                resources={**resources, "ffprobe": ffprobe_at(wrapper)},
                                run_config=config, raise_on_error=False)
    finally:
        stopper.join()
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error.to_string()
    assert f"127.0.0.1:{server.port}" in failure and "gave up after 4 attempts" in failure
    after = rows(str(catalog))
    transient = {n: r for n, r in after.items() if r["probe_failure_class"] == "transient"}
    # The file whose ffprobe call was held, and the one queued behind it (one worker, two
    # in flight), meet the dead NAS; none is called broken.
    assert 1 <= len(transient) <= 2, {n: (r["status"], r["probe_failure_class"])
                                      for n, r in after.items()}
    for row in transient.values():
        assert row["status"] == "invalid" and row["probe_attempts"] == 1
        assert row["probe_retry_after"] is not None
        assert row["probe_error"].startswith(
            f"NAS at smb://127.0.0.1:{server.port}/{server.share} unavailable while probing")
    assert not any(r["probe_failure_class"] == "corrupt" for r in after.values())
    assert {r["status"] for n, r in after.items() if n not in transient} <= {"valid", "stable"}
    assert any(r["status"] == "stable" for r in after.values())  # not reached: left as is

    server.start()  # same port, same share
    again = dg.materialize([media_probes], partition_key=folder, instance=instance,
                           resources=resources)
    assert again.success
    meta = metadata_of(again, "media_probes")
    assert meta["reprobed"] == len(transient) and meta["invalid"] == 0
    final = rows(str(catalog))
    assert {r["status"] for r in final.values()} == {"valid"}
    assert all(r["probe_failure_class"] is None and r["probe_retry_after"] is None
               for r in final.values())
