"""Re-probing's parts: failure classes of real probe verdicts, the retry backoff, the ffprobe
version, the catalog upgrade that adds the columns, and the NAS sensor's view of files due."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from hybrid_pipelines.media_catalog.catalog_store import CatalogStore
from hybrid_pipelines.media_catalog.catalog_store.probe_results import ReprobeSelection
from hybrid_pipelines.media_catalog.catalog_store.schema_upgrade import ADD_COLUMNS, needs_upgrade
from hybrid_pipelines.media_catalog.change_detection import detect_changes
from hybrid_pipelines.media_catalog.nas_access import NASAccess
from hybrid_pipelines.media_catalog.probe import probe_path
from hybrid_pipelines.media_catalog.probe.driver import budget_reason
from hybrid_pipelines.media_catalog.probe.ffprobe_run import ffprobe_version
from hybrid_pipelines.media_catalog.probing import probe_partition
from hybrid_pipelines.media_catalog.rules.reprobe import (
    classify_failure,
    next_retry_at,
    parse_ffprobe_version,
    parse_nightly_reprobe,
)
from hybrid_pipelines.media_catalog.scan import Scanner
from hybrid_pipelines.media_catalog.settings import CatalogSettings
from hybrid_pipelines.resources import NASResource, SQLiteCatalogResource
from hybrid_pipelines.resources.sqlite_catalog import open_catalog

from .conftest import put
from .reprobe_support import ffprobe_wrapper


def test_real_verdicts_are_classified(media: dict[str, Path], tmp_path: Path) -> None:
    def cls(kind: str, **kw: object) -> str:
        res = probe_path(media[kind], **kw)
        assert not res.ok, res
        return classify_failure(res.error)

    assert cls("random") == "unsupported"
    assert cls("text") == "unsupported"
    assert cls("truncated") == "corrupt"
    assert cls("zero") == "corrupt"
    slow = tmp_path / "slow"
    slow.touch()
    hung = ffprobe_wrapper(tmp_path, "6.1-test", slow_flag=slow)
    assert cls("mkv", ffprobe_path=str(hung), timeout_s=0.5) == "timeout"
    assert classify_failure(budget_reason(2 << 20, 5 << 20, 9 << 20)) == "budget"
    assert classify_failure("refused: 'a/b.mp4' leads out of the share") == "refused"
    assert classify_failure("truncated: file shrank while being read: 10 < 20") == "transient"


def test_retry_backoff_doubles_and_runs_out() -> None:
    at = [next_retry_at("timeout", n, 1000.0, backoff_s=60, max_attempts=4) for n in (1, 2, 3)]
    assert at == [1060.0, 1120.0, 1240.0]
    assert next_retry_at("timeout", 4, 1000.0, backoff_s=60, max_attempts=4) is None
    assert next_retry_at("transient", 1, 1000.0, backoff_s=0, max_attempts=4) == 1000.0
    for final in ("corrupt", "unsupported", "budget", "memory", "refused", None):
        assert next_retry_at(final, 1, 1000.0, backoff_s=60, max_attempts=4) is None


def test_ffprobe_version_of_the_real_binary_and_a_wrapper(tmp_path: Path) -> None:
    real = shutil.which("ffprobe")
    if real is None:
        pytest.skip("ffprobe is not installed")
    version = ffprobe_version(real)
    assert version and " " not in version and version != "unknown"
    assert ffprobe_version(str(ffprobe_wrapper(tmp_path, "9.9-x"))) == "9.9-x"
    assert parse_ffprobe_version("ffprobe version n7.1 Copyright (c) 2007") == "n7.1"
    assert parse_ffprobe_version("") == "unknown"


def test_nightly_option_values() -> None:
    assert parse_nightly_reprobe(None) is None and parse_nightly_reprobe("off") is None
    assert parse_nightly_reprobe("invalid") == (True, None)
    assert parse_nightly_reprobe("error: timed out") == (True, "timed out")
    with pytest.raises(ValueError, match="'invalid' or 'error:TEXT'"):
        parse_nightly_reprobe("error:")


def test_catalog_of_the_earlier_version_gets_the_columns_keeping_its_rows(
        tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    SQLiteCatalogResource(path=str(path)).apply_schema("catalog", force=True)
    with sqlite3.connect(path) as conn:  # the files table as the earlier version made it
        for _table, column, _decl in ADD_COLUMNS:
            conn.execute(f"ALTER TABLE files DROP COLUMN {column}")
        conn.execute("INSERT INTO files (path, file_id, partition_key, dir, name, size, mtime, "
                     "status, seen_at, probe_error, updated_at, seq) VALUES ('A/x.mp4', 'f1', "
                     "'A', 'A', 'x.mp4', 1, 1, 'invalid', 1, 'ffprobe timed out after 30s', 1, 1)")
    conn = open_catalog(path)
    try:
        assert needs_upgrade(conn)
        store = CatalogStore(conn)  # upgrades
        assert not needs_upgrade(conn)
        row = dict(conn.execute("SELECT * FROM files").fetchone())
        assert (row["probe_error"], row["probe_attempts"], row["probe_tool_version"]) == \
            ("ffprobe timed out after 30s", 0, None)
        # Judged by an unknown ffprobe: the running one probes it again.
        assert [t.path for t in store.probe_tasks("A", "5.1")] == ["A/x.mp4"]
    finally:
        conn.close()


def test_sensor_sees_files_due_for_a_reprobe(local_nas_resource: NASResource,
                                             media: dict[str, Path], tmp_path: Path) -> None:
    root = Path(local_nas_resource.local_root)
    put(root, "HCL/a.mkv", media["mkv"])
    put(root, "HCL/b.mp4", media["random"])
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    catalog.apply_schema("catalog", force=True)
    settings = CatalogSettings()
    with catalog.connect() as conn:
        store = CatalogStore(conn)
        nas = NASAccess(local_nas_resource, (0.05,))
        Scanner(store, nas, settings).scan("HCL", "HCL")
        probe_partition(store, nas, "HCL", ffprobe_path="ffprobe", timeout_s=30)
        top = nas.stat("HCL")

        def reasons() -> list[str]:
            return [r for r in detect_changes(store, nas, settings, "HCL", "HCL",
                                              top.mtime if top else None).reasons
                    if "re-probe" in r]

        assert reasons() == []
        assert store.mark_for_reprobe(ReprobeSelection(invalid_only=True)) == {"HCL": 1}
        assert reasons() == ["1 file(s) due for a re-probe"]
