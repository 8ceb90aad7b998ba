"""Hostile trees on the hot tier (the real JuiceFS mount, SeaweedFS, PostgreSQL): symlinks
and special files planted under the model directories. Nothing outside the tier is read,
uploaded, written or deleted, and what is left alone is reported. Also: a promotion never
overwrites a newer hot file, it keeps it under a `.hot-conflict-` name (issue #12, items 2
and 6). Everything goes through the Dagster asset and job, as the schedules run them."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from hybrid_pipelines.ai_tiers import hot_paths, tier_copy
from hybrid_pipelines.defs.ai_tiers.assets import model_locations
from hybrid_pipelines.defs.ai_tiers.jobs import model_promotion_job
from hybrid_pipelines.resources import PostgresResource

from .conftest import NOW, Space, days_ago, model_row, seed_model

FILES = {"config.json": b'{"layers": 2}', "weights/part-0.safetensors": os.urandom(20_000)}
OUTSIDE = {"secret.txt": b"bytes that are not the tier's", "sub/keep.bin": os.urandom(3_000)}


def _outside(tmp_path: Path) -> Path:
    root = tmp_path / "outside"
    for rel, body in OUTSIDE.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(body)
    return root


def _tree(root: Path) -> dict[str, bytes]:
    """Regular files under root, links not followed."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if stat.S_ISREG(os.lstat(path).st_mode):
                out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def _models_dir(sp: Space) -> Path:
    """The models folder, built by hand: the resource refuses paths through links."""
    path = Path(sp.hot.mount_path) / sp.models
    path.mkdir(parents=True, exist_ok=True)
    return path


def _demote(pg: PostgresResource, sp: Space) -> dg.ExecuteInProcessResult:
    cfg = {"now": NOW.isoformat(), "hot_prefix": sp.models, "cold_prefix": sp.models}
    return dg.materialize([model_locations],
                          resources={"ai_postgres": pg, "object_store": sp.store,
                                     "hot_tier": sp.hot},
                          run_config={"ops": {"model_locations": {"config": cfg}}},
                          raise_on_error=False)


def _promote(pg: PostgresResource, sp: Space, request_id: int | None = None
             ) -> dg.ExecuteInProcessResult:
    cfg: dict[str, Any] = {"model_id": "m", "now": NOW.isoformat(), "hot_prefix": sp.models,
                           "cold_prefix": sp.models}
    if request_id is not None:
        cfg["request_id"] = request_id
    return model_promotion_job.execute_in_process(
        run_config={"ops": {"promote_model": {"config": cfg}}},
        resources={"ai_postgres": pg, "object_store": sp.store, "hot_tier": sp.hot},
        raise_on_error=False)


def _failure(result: dg.ExecuteInProcessResult, node: str) -> str:
    assert not result.success
    data = result.failure_data_for_node(node)
    return str(data.user_failure_data.description if data.user_failure_data else data.error)


def _meta(result: dg.ExecuteInProcessResult, node: str) -> dict[str, Any]:
    mats = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in mats[-1].metadata.items()}


def _cold(sp: Space) -> dict[str, bytes]:
    prefix = f"{sp.models}/m/"
    return {k[len(prefix):]: v for k, v in sp.keys("models/m/").items()}


def _cold_model(pg: PostgresResource, sp: Space, files: dict[str, bytes]) -> None:
    """Model m, cold: its verified objects in the bucket, its row, nothing on the hot tier."""
    for rel, body in files.items():
        sp.put_cold(f"{sp.models}/m/{rel}", body,
                    {"sha256": tier_copy.digest_chunks([body]).sha256})
    seed_model(pg, sp, "m", files, days_ago(45), tier="cold")


@pytest.mark.fault("ai_tiers: models/<id> is a symlink out of the tier -> demotion refused, "
                   "nothing outside uploaded or deleted", kind="state edited")
def test_demotion_refuses_a_symlinked_model_dir(ai_pg: PostgresResource, space: Space,
                                                tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    (_models_dir(space) / "m").symlink_to(outside, target_is_directory=True)
    with ai_pg.connect() as conn:
        conn.execute("INSERT INTO model_locations (model_id, tier, size_bytes, last_access) "
                     "VALUES ('m', 'hot', 100, %s)", (days_ago(45),))
    result = _demote(ai_pg, space)
    assert _tree(outside) == OUTSIDE  # before the fix: uploaded, then unlinked
    assert _cold(space) == {}
    text = _failure(result, "model_locations")
    assert "model m: demotion refused, nothing uploaded or deleted" in text
    assert "is a symbolic link" in text
    assert model_row(ai_pg, "m")[0] == "hot"


@pytest.mark.fault("ai_tiers: a symlinked file inside a model dir -> left alone and reported, "
                   "its target neither uploaded nor deleted", kind="state edited")
def test_symlinked_file_inside_a_model_is_left_alone(ai_pg: PostgresResource, space: Space,
                                                     tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    seed_model(ai_pg, space, "m", FILES, days_ago(45))
    link = space.hot_model_dir("m") / "weights" / "secret.bin"
    link.symlink_to(outside / "secret.txt")
    result = _demote(ai_pg, space)
    assert link.is_symlink() and _tree(outside) == OUTSIDE
    assert _cold(space) == FILES  # before the fix: the outside file's bytes were uploaded
    assert result.success
    meta = _meta(result, "model_locations")
    assert (meta["models_demoted"], meta["skipped_symlinks"], meta["skipped_special"]) == \
        (1, 1, 0)
    assert f"{space.models}/m/weights/secret.bin" in meta["skipped_examples"]
    assert model_row(ai_pg, "m")[0] == "cold"
    assert _tree(Path(space.hot.mount_path) / space.models / "m") == {}  # copied files gone


def test_special_files_in_a_model_are_left_alone(ai_pg: PostgresResource,
                                                 space: Space) -> None:
    # Before the fix, reading a FIFO as a model file blocked the demotion forever.
    seed_model(ai_pg, space, "m", FILES, days_ago(45))
    fifo = space.hot_model_dir("m") / "weights" / "pipe"
    try:
        os.mkfifo(fifo)
    except OSError as exc:
        pytest.skip(f"the hot tier cannot hold a FIFO here: {exc}")
    result = _demote(ai_pg, space)
    assert result.success
    meta = _meta(result, "model_locations")
    assert (meta["models_demoted"], meta["skipped_special"]) == (1, 1)
    assert _cold(space) == FILES
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.fault("ai_tiers: models/<id> is a symlink out of the tier -> promotion refused, "
                   "nothing written outside", kind="state edited")
def test_promotion_refuses_a_symlinked_model_dir(ai_pg: PostgresResource, space: Space,
                                                 tmp_path: Path) -> None:
    _cold_model(ai_pg, space, FILES)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (_models_dir(space) / "m").symlink_to(target, target_is_directory=True)
    result = _promote(ai_pg, space)
    assert list(target.iterdir()) == []  # before the fix: the model was written there
    text = _failure(result, "promote_model")
    assert "model m: promotion refused, the row stays cold" in text
    assert "is a symbolic link" in text
    assert model_row(ai_pg, "m")[0] == "cold"


@pytest.mark.fault("ai_tiers: a directory inside a model dir is a symlink to site-packages -> "
                   "promotion refused, no sitecustomize.py written", kind="state edited")
def test_promotion_never_writes_through_a_link_inside_the_model(
        ai_pg: PostgresResource, space: Space, tmp_path: Path) -> None:
    _cold_model(ai_pg, space, {**FILES, "lib/sitecustomize.py": b"import os  # runs at start"})
    site_packages = tmp_path / "site-packages"
    site_packages.mkdir()
    model_dir = _models_dir(space) / "m"
    model_dir.mkdir()
    (model_dir / "lib").symlink_to(site_packages, target_is_directory=True)
    result = _promote(ai_pg, space)
    assert not (site_packages / "sitecustomize.py").exists()
    text = _failure(result, "promote_model")
    assert "promotion refused" in text and "lib is a symbolic link" in text
    assert model_row(ai_pg, "m")[0] == "cold"


def test_promotion_keeps_a_newer_hot_file_under_a_conflict_name(
        ai_pg: PostgresResource, space: Space) -> None:
    seed_model(ai_pg, space, "m", FILES, days_ago(45))
    assert _demote(ai_pg, space).success
    assert model_row(ai_pg, "m")[0] == "cold" and _cold(space) == FILES
    # Someone writes the model directory again after the demotion, with other bytes.
    newer = b'{"layers": 3, "written": "after the demotion"}'
    config = space.hot_model_dir("m") / "config.json"
    config.parent.mkdir(parents=True)
    config.write_bytes(newer)
    # The leftover sweep keeps it: it has no matching cold copy.
    assert "leftover" in _failure(_demote(ai_pg, space), "model_locations")
    assert config.read_bytes() == newer
    with ai_pg.connect() as conn:
        rid = conn.execute("INSERT INTO model_promotion_requests (model_id) VALUES ('m') "
                           "RETURNING id").fetchone()[0]
    result = _promote(ai_pg, space, rid)
    # Before the fix: overwritten by the cold copy, the newer bytes were nowhere any more.
    assert newer in [p.read_bytes() for p in config.parent.iterdir() if p.is_file()]
    assert result.success
    assert model_row(ai_pg, "m")[0] == "hot"
    assert config.read_bytes() == FILES["config.json"]  # the model the row describes
    (aside,) = config.parent.glob("config.json.hot-conflict-*")
    assert aside.read_bytes() == newer
    meta = _meta(result, "promote_model")
    assert meta["hot_files_moved_aside"] == 1 and aside.name in meta["moved_aside_examples"]
    with ai_pg.connect() as conn:
        status, detail = conn.execute("SELECT status, detail FROM model_promotion_requests "
                                      "WHERE id = %s", (rid,)).fetchone()
    assert status == "done" and aside.name in detail and "kept under new names" in detail


@pytest.mark.fault("ai_tiers: a writer recreates a hot file while a promotion installs the cold "
                   "copy -> both sets of hot bytes kept aside, none overwritten",
                   kind="state edited")
def test_bytes_written_during_the_install_are_moved_aside_too(
        space: Space, monkeypatch: pytest.MonkeyPatch) -> None:
    body = b"the cold copy"
    key = f"{space.name}/race/config.json"
    space.put_cold(key, body, {"sha256": tier_copy.digest_chunks([body]).sha256})
    folder = Path(space.hot.mount_path) / space.name / "race"
    folder.mkdir(parents=True)
    (folder / "config.json").write_bytes(b"edited before the promotion")
    real_move = hot_paths._move_aside

    def move_then_writer(dir_fd: int, name: str) -> str | None:
        # Timing injection: a writer recreates the file right after it was moved aside and
        # before the cold copy is linked in (a real race we cannot schedule on demand).
        aside = real_move(dir_fd, name)
        if len(list(folder.glob("config.json.hot-conflict-*"))) == 1:
            (folder / "config.json").write_bytes(b"written during the promotion")
        return aside

    monkeypatch.setattr(hot_paths, "_move_aside", move_then_writer)
    got = tier_copy.download_verified(space.client(), space.store.bucket, key,
                                      Path(space.hot.mount_path), f"{space.name}/race/config.json",
                                      replace=False)
    assert (folder / "config.json").read_bytes() == body
    kept = sorted(p.read_bytes() for p in folder.glob("config.json.hot-conflict-*"))
    assert kept == [b"edited before the promotion", b"written during the promotion"]
    assert got.moved_aside and got.moved_aside.startswith(f"{space.name}/race/config.json.")
    assert not [p for p in folder.iterdir() if hot_paths.is_temp_name(p.name)]
