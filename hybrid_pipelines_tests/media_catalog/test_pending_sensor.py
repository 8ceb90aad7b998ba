"""The pending sensor (second look at files being written) against a real share and catalog:
no NAS I/O until a file is due, a run as soon as one became stable, one run per state, and
a changed file asked for only once it settled."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from hybrid_pipelines.defs.media_catalog.sensors import media_catalog_pending_sensor
from hybrid_pipelines.defs.pools import TRIGGER_TAG
from hybrid_pipelines.dev.stack.process import free_port
from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.resources import NASResource, SQLiteCatalogResource

from .conftest import CHAIN, chain_resources, put, tick, unique


@pytest.fixture()
def setup(samba_server: SambaServer, nas_resource: NASResource, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    root = unique("mc-pending")
    monkeypatch.setenv("HP_CATALOG_NAS_ROOT", root)
    monkeypatch.setenv("HP_CATALOG_MIN_STABLE_S", "1")
    monkeypatch.setenv("HP_CATALOG_RETRY_DELAYS", "0.05")
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    with dg.instance_for_test() as instance:
        yield {"share": samba_server.share_dir / root, "root": root, "instance": instance,
               "resources": chain_resources(nas_resource, catalog), "catalog": catalog}


def _pending_tick(s: dict, cursor: str | None, nas: NASResource | None = None
                  ) -> tuple[list[dg.RunRequest], str | None, str | None]:
    """(run requests, cursor, skip message) of one evaluation, as the daemon runs it."""
    with dg.build_sensor_context(instance=s["instance"], cursor=cursor, resources={
            "nas": nas or s["resources"]["nas"],
            "sqlite_catalog": s["catalog"]}) as context:
        result = media_catalog_pending_sensor(context)
        if isinstance(result, dg.SkipReason):
            return [], context.cursor, result.skip_message
    assert isinstance(result, dg.SensorResult)
    return list(result.run_requests or []), result.cursor, None


def _status(s: dict, rel: str) -> str:
    with sqlite3.connect(s["catalog"].path) as conn:
        return conn.execute("SELECT status FROM files WHERE path = ?",
                            (f"{s['root']}/{rel}",)).fetchone()[0]


def _run(s: dict, key: str) -> None:
    # Scan, probe, catalog: the Firestore step plays no part in the second look.
    assert dg.materialize(CHAIN[:3], partition_key=key, instance=s["instance"],
                          resources=s["resources"]).success


def _unreachable_nas() -> NASResource:
    """A NAS nobody answers on: any NAS call of the tick would fail it."""
    return NASResource(protocol="smb", host="127.0.0.1", port=free_port(), share="none",
                       username="nobody", password="x")


def test_second_look_runs_as_soon_as_the_upload_is_stable(setup: dict, media: dict[str, Path],
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    s = setup
    _reqs, _c, skip = _pending_tick(s, None)
    assert skip == "no catalog folders yet"
    put(s["share"], "Show/S1/E1.mp4", media["mp4"], age_s=0)  # just uploaded
    requests, _ = tick(s["instance"], None, s["resources"])
    assert [r.partition_key for r in requests] == ["Show"]
    _run(s, "Show")
    assert _status(s, "Show/S1/E1.mp4") == "pending"

    # Not due yet: the tick decides from the catalog alone and never touches the NAS.
    monkeypatch.setenv("HP_CATALOG_MIN_STABLE_S", "600")
    reqs, cursor, skip = _pending_tick(s, None, nas=_unreachable_nas())
    assert reqs == [] and skip is not None and "none due (next due in" in skip

    monkeypatch.setenv("HP_CATALOG_MIN_STABLE_S", "1")
    time.sleep(1.2)
    reqs, cursor, skip = _pending_tick(s, cursor)
    assert skip is None and [r.partition_key for r in reqs] == ["Show"]
    assert reqs[0].tags[TRIGGER_TAG] == "pending_sensor"
    again, _c, _skip = _pending_tick(s, cursor)
    assert [r.run_key for r in again] == [reqs[0].run_key]  # idempotent: one run per state
    _run(s, "Show")
    assert _status(s, "Show/S1/E1.mp4") == "valid"
    reqs, _c, skip = _pending_tick(s, cursor, nas=_unreachable_nas())
    assert reqs == [] and skip == "no file is being written"


def test_a_file_still_growing_is_asked_for_only_once_it_settled(setup: dict,
                                                                media: dict[str, Path]) -> None:
    s = setup
    target = put(s["share"], "Show/S1/E2.mp4", media["mp4"], age_s=0)
    tick(s["instance"], None, s["resources"])
    _run(s, "Show")
    assert _status(s, "Show/S1/E2.mp4") == "pending"
    with target.open("ab") as fh:  # the upload goes on after the scan recorded it
        fh.write(b"\0" * 4096)
    time.sleep(1.2)
    reqs, cursor, skip = _pending_tick(s, None)
    assert reqs == [] and skip is not None and "1 still changing" in skip
    reqs, cursor, skip = _pending_tick(s, cursor)  # same size and mtime: settled
    assert [r.partition_key for r in reqs] == ["Show"]
    _run(s, "Show")  # records the final size; its stability clock starts again
    assert _status(s, "Show/S1/E2.mp4") == "pending"
    time.sleep(1.2)
    reqs, cursor, skip = _pending_tick(s, cursor)
    assert [r.partition_key for r in reqs] == ["Show"]
    _run(s, "Show")
    assert _status(s, "Show/S1/E2.mp4") in ("valid", "invalid")  # probed (bytes appended)


def test_a_new_upload_beside_a_due_file_is_seen_without_waiting_for_the_nas_sensor(
        setup: dict, media: dict[str, Path]) -> None:
    s = setup
    put(s["share"], "Show/S1/E1.mp4", media["mp4"], age_s=0)
    tick(s["instance"], None, s["resources"])
    _run(s, "Show")
    put(s["share"], "Show/S1/E2.mp4", media["mp4"], age_s=0)  # the next file of the batch
    put(s["share"], "Show/S1/E3.mp4.part", b"partial")  # ignored by the catalog rules
    time.sleep(1.2)
    reqs, _cursor, _skip = _pending_tick(s, None)
    assert [r.partition_key for r in reqs] == ["Show"]
    _run(s, "Show")
    assert _status(s, "Show/S1/E1.mp4") == "valid"
    assert _status(s, "Show/S1/E2.mp4") == "pending"  # its first look: stable after its own
