"""The pending sensor's first look from change notifications, and one run per upload, against
the real Samba (uploads over SMB, CHANGE_NOTIFY) and catalog: the sensor lists only what a
notification names, hands its first look to the run, and the run's scan accepts the file as
stable only if it is unchanged since (two looks, min_stable_s apart). Idle ticks do no NAS
I/O."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from hybrid_pipelines.defs.media_catalog.sensors import media_catalog_pending_sensor
from hybrid_pipelines.defs.pools import TRIGGER_TAG
from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.media_catalog.change_notify import close_all, watcher_of
from hybrid_pipelines.resources import FirestoreResource, NASResource, SQLiteCatalogResource

from .conftest import CHAIN, chain_resources, metadata_of, put, tick, unique
from .test_change_notify import smb_upload  # noqa: F401 - fixture

UPLOAD = "Show/S1/new.mp4"


@pytest.fixture()
def setup(samba_server: SambaServer, nas_resource: NASResource,
          firestore_resource: FirestoreResource, tmp_path: Path, media: dict[str, Path],
          monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    root = unique("mc-first")
    monkeypatch.setenv("HP_CATALOG_NAS_ROOT", root)
    monkeypatch.setenv("HP_CATALOG_MIN_STABLE_S", "2")
    monkeypatch.setenv("HP_CATALOG_RETRY_DELAYS", "0.05")
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    share = samba_server.share_dir / root
    put(share, "Show/S1/old.mp4", media["mp4"])  # catalogued before the upload
    with dg.instance_for_test() as instance:
        s = {"share": share, "root": root, "instance": instance, "catalog": catalog,
             "resources": chain_resources(nas_resource, catalog, firestore_resource),
             "nas": nas_resource}
        tick(instance, None, s["resources"])
        _run(s, None)
        assert _status(s, "Show/S1/old.mp4") == "valid"
        watcher = watcher_of(nas_resource, root)
        assert watcher is not None
        _pending_tick(s, None)  # starts the watcher
        deadline = time.monotonic() + 10
        while not watcher.armed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watcher.armed, watcher.error
        s["watcher"] = watcher
        yield s
    close_all()


def _pending_tick(s: dict, cursor: str | None
                  ) -> tuple[list[dg.RunRequest], str | None, str | None]:
    with dg.build_sensor_context(instance=s["instance"], cursor=cursor, resources={
            "nas": s["nas"], "sqlite_catalog": s["catalog"]}) as context:
        result = media_catalog_pending_sensor(context)
        if isinstance(result, dg.SkipReason):
            return [], context.cursor, result.skip_message
    assert isinstance(result, dg.SensorResult)
    return list(result.run_requests or []), result.cursor, None


def _ticks_until_request(s: dict, cursor: str | None, timeout: float = 15.0
                         ) -> tuple[dg.RunRequest, str | None]:
    deadline = time.monotonic() + timeout
    skip = None
    while time.monotonic() < deadline:
        reqs, cursor, skip = _pending_tick(s, cursor)
        if reqs:
            assert len(reqs) == 1
            return reqs[0], cursor
        time.sleep(0.3)
    raise AssertionError(f"no run requested; last tick: {skip}")


def _run(s: dict, request: dg.RunRequest | None) -> dict:
    result = dg.materialize(CHAIN, partition_key="Show", instance=s["instance"],
                            resources=s["resources"],
                            run_config=request.run_config if request else None)
    assert result.success
    return metadata_of(result, "nas_media_files")


def _status(s: dict, rel: str) -> str | None:
    with sqlite3.connect(s["catalog"].path) as conn:
        row = conn.execute("SELECT status FROM files WHERE path = ?",
                           (f"{s['root']}/{rel}",)).fetchone()
    return row[0] if row else None


def test_an_upload_is_valid_after_one_run(setup: dict, media: dict[str, Path],
                                          smb_upload) -> None:  # noqa: F811
    s = setup
    smb_upload(f"{s['root']}/{UPLOAD}", media["mp4"].read_bytes())
    t0 = time.time()
    req, _cursor = _ticks_until_request(s, None)
    assert req.partition_key == "Show" and req.tags[TRIGGER_TAG] == "pending_sensor"
    vouched = req.run_config["ops"]["nas_media_files"]["config"]["vouched"]
    assert list(vouched) == [f"{s['root']}/{UPLOAD}"]
    size, _mtime, first_at = vouched[f"{s['root']}/{UPLOAD}"]
    assert size == media["mp4"].stat().st_size and first_at >= t0 - 1
    assert _status(s, UPLOAD) is None  # no run before: the first look was the sensor's
    meta = _run(s, req)  # the scan waits until the look is 2 s old, then looks itself
    assert time.time() - first_at >= 2
    assert meta["vouched_stable"] == 1
    assert _status(s, UPLOAD) == "valid"  # one run: stable, probed, catalogued


@pytest.mark.fault("the file changes between the sensor's look and the run -> the run does "
                   "not take it as stable; it is pending, probed only after its own looks",
                   kind="state edited")
def test_a_file_changed_after_the_sensor_looked_is_not_accepted(
        setup: dict, media: dict[str, Path], smb_upload) -> None:  # noqa: F811
    s = setup
    smb_upload(f"{s['root']}/{UPLOAD}", media["mp4"].read_bytes())
    req, cursor = _ticks_until_request(s, None)
    with (s["share"] / UPLOAD).open("ab") as fh:  # the upload goes on after the look
        fh.write(b"\0" * 4096)
    meta = _run(s, req)
    assert meta["vouched_stable"] == 0
    assert _status(s, UPLOAD) == "pending"
    # Its own clock now: the pending rows' second look, then one more run, then probed.
    time.sleep(2.2)
    req2, _cursor = _ticks_until_request(s, cursor)
    assert req2.run_key != req.run_key
    _run(s, req2)
    assert _status(s, UPLOAD) in ("valid", "invalid")


def test_nothing_changed_means_no_nas_io(setup: dict, media: dict[str, Path],
                                         smb_upload) -> None:  # noqa: F811
    s = setup
    sent = s["watcher"].requests
    for _ in range(3):
        reqs, _c, skip = _pending_tick(s, None)
        assert reqs == [] and skip == "no file is being written"  # no listing: no NAS call
        time.sleep(0.3)
    assert s["watcher"].requests == sent  # and the watcher's one request still waits
    # A file the catalog already holds as it is: notified, listed once, nothing to do.
    smb_upload(f"{s['root']}/Show/S1/other.txt.part", b"partial")  # ignored by the rules
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        reqs, _c, skip = _pending_tick(s, None)
        assert reqs == []
        if skip and "listed" in skip:
            break
        time.sleep(0.3)
    assert skip is not None and "in 1 folder(s) listed" in skip and "0 first look" in skip


def test_the_nas_sensor_leaves_notified_uploads_to_the_pending_sensor(
        setup: dict, media: dict[str, Path], smb_upload,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    from hybrid_pipelines.media_catalog import change_notify

    s = setup
    smb_upload(f"{s['root']}/{UPLOAD}", media["mp4"].read_bytes())
    req, _cursor = _ticks_until_request(s, None)
    nas_reqs, _c = tick(s["instance"], None, s["resources"])
    assert nas_reqs == []  # one run per upload: the pending sensor's
    # Nobody drains the notifications any more (the pending sensor stopped): the poll is in
    # charge again and asks for the run itself.
    monkeypatch.setattr(change_notify, "CONSUMED_WITHIN_S", 0.5)
    time.sleep(0.6)
    nas_reqs, _c = tick(s["instance"], None, s["resources"])
    assert [r.partition_key for r in nas_reqs] == ["Show"]
    assert s["watcher"].recent_dirs(600) is None


def test_an_upload_behind_another_keeps_the_sensors_clock(
        setup: dict, media: dict[str, Path], smb_upload,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Uploads in a row into one folder: the run for the first also lists the second, not
    due yet. It is recorded pending from the sensor's first look (handed along), not from
    that scan; its run is then requested ahead of its second look (the lead) and its scan
    takes that look when due: valid one stability window after the sensor saw it."""
    from hybrid_pipelines.defs.media_catalog import sensors

    s = setup
    monkeypatch.setenv("HP_CATALOG_MIN_STABLE_S", "4")
    monkeypatch.setattr(sensors, "RUN_LEAD_S", 1.0)
    second = "Show/S1/second.mp4"
    smb_upload(f"{s['root']}/{UPLOAD}", media["mp4"].read_bytes())
    cursor, deadline = None, time.monotonic() + 15
    while f"{s['root']}/{UPLOAD}" not in (cursor or ""):  # the first look at the upload
        assert time.monotonic() < deadline, "the sensor never looked at the upload"
        _reqs, cursor, _skip = _pending_tick(s, cursor)
        time.sleep(0.2)
    time.sleep(1.0)
    smb_upload(f"{s['root']}/{second}", media["mp4"].read_bytes())
    req, cursor = _ticks_until_request(s, cursor)
    scan = req.run_config["ops"]["nas_media_files"]["config"]
    assert list(scan["vouched"]) == [f"{s['root']}/{UPLOAD}"]
    assert list(scan["first_looks"]) == [f"{s['root']}/{second}"]
    looked_at = scan["first_looks"][f"{s['root']}/{second}"][2]
    _run(s, req)
    assert _status(s, UPLOAD) == "valid" and _status(s, second) == "pending"
    with sqlite3.connect(s["catalog"].path) as conn:
        seen_at = conn.execute("SELECT seen_at FROM files WHERE path = ?",
                               (f"{s['root']}/{second}",)).fetchone()[0]
    assert seen_at == looked_at  # the sensor's look, before this scan
    req2, _cursor = _ticks_until_request(s, cursor)
    assert time.time() < looked_at + 4  # requested ahead of the second look ...
    ahead = req2.run_config["ops"]["nas_media_files"]["config"]["vouched"]
    assert ahead[f"{s['root']}/{second}"][2] == looked_at  # ... which the run waits for
    _run(s, req2)
    assert time.time() >= looked_at + 4
    assert _status(s, second) == "valid"
