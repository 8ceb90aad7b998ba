"""Fresh outputs safe at birth: the hourly cold-copy run proves (or makes) the cold copy of
every hot output the platform wrote, keeps the platform's cold_storage truthful, and the
daily demotion then only removes the hot copy. Rows and files are written by the AI backend
simulator exactly as the platform writes them (cold_storage true at generation)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from hybrid_pipelines.ai_tiers import output_cold, tier_copy
from hybrid_pipelines.defs.ai_tiers.assets import generated_output_cold_copies, generated_outputs
from hybrid_pipelines.defs.ai_tiers.checks import fresh_outputs_have_cold_copies
from hybrid_pipelines.defs.ai_tiers.fresh_outputs import output_cold_copy_schedule
from hybrid_pipelines.defs.ai_tiers.jobs import output_deletion_job
from hybrid_pipelines.dev.platform_sim.ai_backend import AIBackend
from hybrid_pipelines.resources import PostgresResource

from .conftest import NOW, Space, days_ago, platform_running, seed_output_row


def _backend(pg: PostgresResource, sp: Space, with_s3: bool, **kw: Any) -> AIBackend:
    """The platform's AI backend writing outputs into this test's corner of the hot tier and
    (with_s3) of the outputs bucket."""
    return AIBackend(pg.conninfo(), s3=sp.client() if with_s3 else None,
                     outputs_bucket=sp.store.outputs_bucket, hot_root=str(sp.hot.root()),
                     outputs_hot_prefix=sp.outputs, outputs_cold_prefix=sp.outputs, **kw)


def _row(pg: PostgresResource, oid: str) -> tuple[Any, ...]:
    with pg.connect() as conn:
        row = conn.execute("SELECT user_id, filename, created_at, hot_storage, cold_storage, "
                           "sha256, cold_verified_at FROM generated_outputs "
                           "WHERE output_id = %s", (oid,)).fetchone()
    assert row is not None
    return row


def _rel(pg: PostgresResource, oid: str) -> str:
    user, filename, created, *_ = _row(pg, oid)
    return f"{user}/{created:%Y/%m/%d}/{oid}.{filename.rsplit('.', 1)[1]}"


def _run(pg: PostgresResource, sp: Space, raise_on_error: bool = True
         ) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [generated_output_cold_copies, fresh_outputs_have_cold_copies],
        resources={"ai_postgres": pg, "object_store": sp.store, "hot_tier": sp.hot},
        run_config={"ops": {"generated_output_cold_copies": {"config": {
            "now": NOW.isoformat(), "hot_prefix": sp.outputs, "cold_prefix": sp.outputs}}}},
        raise_on_error=raise_on_error)


def _meta(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    mats = result.asset_materializations_for_node("generated_output_cold_copies")
    return {k: v.value for k, v in mats[-1].metadata.items()}


def _cold(sp: Space, key: str) -> tuple[bytes, dict[str, str]]:
    obj = sp.client().get_object(Bucket=sp.store.outputs_bucket, Key=key)
    return obj["Body"].read(), obj.get("Metadata", {})


def _old_hot_output(pg: PostgresResource, sp: Space, user: str, days: float,
                    body: bytes) -> tuple[str, str]:
    oid, rel = seed_output_row(pg, user, days_ago(days), "hot", len(body))
    path = sp.hot.path(f"{sp.outputs}/{rel}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return oid, rel


def test_output_whose_object_never_reached_the_bucket_gets_its_copy(
        ai_pg: PostgresResource, space: Space) -> None:
    # The platform wrote the hot file and the row (cold_storage true) but no object.
    backend = _backend(ai_pg, space, with_s3=False)
    oid = backend.write_output(user="u1")
    backend.close()
    old, old_rel = _old_hot_output(ai_pg, space, "u2", 3, os.urandom(2500))
    rel = _rel(ai_pg, oid)
    body = space.hot.path(f"{space.outputs}/{rel}").read_bytes()
    assert _row(ai_pg, oid)[3:5] == (True, True) and space.output_keys() == {}
    # Before: nothing noticed (no check, no job); now the check flags the old one.
    assert not fresh_outputs_have_cold_copies(ai_postgres=ai_pg).passed
    result = _run(ai_pg, space)
    meta = _meta(result)
    assert (meta["outputs_verified"], meta["outputs_uploaded"]) == (2, 2)
    assert meta["outputs_still_unverified"] == 0
    assert result.get_asset_check_evaluations()[0].passed
    for output_id, r in ((oid, rel), (old, old_rel)):
        data, metadata = _cold(space, f"{space.outputs}/{r}")
        hot_bytes = space.hot.path(f"{space.outputs}/{r}").read_bytes()
        assert data == hot_bytes and metadata["sha256"] == tier_copy.digest_chunks(
            [hot_bytes]).sha256
        _u, _f, _c, hot, cold, sha, verified_at = _row(ai_pg, output_id)
        assert (hot, cold, sha) == (True, True, metadata["sha256"])
        assert verified_at == NOW.replace(tzinfo=None)
    # The hot tier loses the file: the output is still there, verified, in the bucket.
    space.hot.path(f"{space.outputs}/{rel}").unlink()
    assert _cold(space, f"{space.outputs}/{rel}")[0] == body
    # A second run finds nothing to do (one query on an empty partial index).
    assert _meta(_run(ai_pg, space))["outputs_verified"] == 0


def test_platform_upload_without_checksum_is_proven_not_lost(
        ai_pg: PostgresResource, space: Space) -> None:
    backend = _backend(ai_pg, space, with_s3=True)
    oid = backend.write_output(user="u1")  # its object carries no sha256 metadata
    backend.close()
    key = f"{space.outputs}/{_rel(ai_pg, oid)}"
    before, meta_before = _cold(space, key)
    assert "sha256" not in meta_before
    meta = _meta(_run(ai_pg, space))
    assert (meta["outputs_verified"], meta["cold_objects_kept_aside"]) == (1, 0)
    after, metadata = _cold(space, key)
    assert after == before and metadata["sha256"] == _row(ai_pg, oid)[5]
    assert list(space.output_keys()) == [key]


@pytest.mark.fault("ai_tiers: the cold object of a fresh output holds other bytes -> kept "
                   "under a conflict key, the hot bytes uploaded and verified; a user's "
                   "deletion removes both", kind="state edited")
def test_differing_cold_object_is_kept_aside_then_replaced(
        ai_pg: PostgresResource, space: Space) -> None:
    body = os.urandom(3000)
    oid, rel = _old_hot_output(ai_pg, space, "u1", 1, body)
    key = f"{space.outputs}/{rel}"
    space.put_cold(key, b"truncated", bucket=space.store.outputs_bucket)
    meta = _meta(_run(ai_pg, space))
    assert meta["cold_objects_kept_aside"] == 1
    objects = space.output_keys()
    assert objects[key] == body
    (aside,) = [k for k in objects if k != key]
    assert aside.startswith(key + output_cold.CONFLICT_MARKER) and objects[aside] == b"truncated"
    with ai_pg.connect() as conn:
        conn.execute("INSERT INTO output_deletion_requests (user_id) VALUES ('u1')")
    output_deletion_job.execute_in_process(
        run_config={"ops": {"delete_user_outputs": {"config": {
            "user_id": "u1", "request_id": 1, "hot_prefix": space.outputs,
            "cold_prefix": space.outputs}}}},
        resources={"ai_postgres": ai_pg, "object_store": space.store, "hot_tier": space.hot})
    assert space.output_keys() == {}


@pytest.mark.fault("ai_tiers: a fresh output's hot file is gone (or a link out of the tier) "
                   "and no cold object exists -> cold_storage set false, the run fails "
                   "naming it, nothing read through the link", kind="state edited")
def test_output_without_any_copy_is_reported_and_cold_storage_told_the_truth(
        ai_pg: PostgresResource, space: Space, tmp_path: Path) -> None:
    gone, _rel_gone = seed_output_row(ai_pg, "u1", days_ago(1))  # no file anywhere
    linked, rel_link = seed_output_row(ai_pg, "u2", days_ago(1))
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"not an output")
    link = space.hot.path(f"{space.outputs}/{rel_link}")
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    result = _run(ai_pg, space, raise_on_error=False)
    assert not result.success
    text = str(result.failure_data_for_node(
        "generated_output_cold_copies").user_failure_data.description)
    assert gone in text and "missing" in text and linked in text
    for oid in (gone, linked):
        assert _row(ai_pg, oid)[3:7] == (True, False, None, None)
    assert space.output_keys() == {}
    assert not fresh_outputs_have_cold_copies(ai_postgres=ai_pg).passed


def test_demotion_after_verification_only_removes_the_hot_copy(
        ai_pg: PostgresResource, space: Space) -> None:
    oid, rel = _old_hot_output(ai_pg, space, "u1", 10, os.urandom(4000))
    _run(ai_pg, space)
    result = dg.materialize(
        [generated_outputs],
        resources={"ai_postgres": ai_pg, "object_store": space.store, "hot_tier": space.hot},
        run_config={"ops": {"generated_outputs": {"config": {
            "now": NOW.isoformat(), "hot_prefix": space.outputs, "cold_prefix": space.outputs}}}})
    meta = result.asset_materializations_for_node("generated_outputs")[-1].metadata
    assert (meta["outputs_demoted"].value, meta["bytes_uploaded"].value) == (1, 0)
    assert not space.hot.path(f"{space.outputs}/{rel}").exists()
    assert _row(ai_pg, oid)[3:5] == (False, True)


def test_schedule_is_quiet_when_nothing_is_new_and_uses_the_index(
        ai_pg: PostgresResource, space: Space) -> None:
    when = datetime(2025, 3, 31, 5, 30, tzinfo=UTC)

    def tick() -> Any:
        return output_cold_copy_schedule(dg.build_schedule_context(
            resources={"ai_postgres": ai_pg}, scheduled_execution_time=when))

    assert isinstance(tick(), dg.SkipReason)
    _old_hot_output(ai_pg, space, "u1", 0.01, b"fresh")
    request = tick()
    assert isinstance(request, dg.RunRequest)
    cfg = request.run_config["ops"]["generated_output_cold_copies"]["config"]
    assert cfg["now"] == when.isoformat()
    with ai_pg.connect() as conn:
        conn.execute("SET enable_seqscan = off")
        where = output_cold.UNVERIFIED  # a constant of ours, no input
        sql = f"EXPLAIN SELECT EXISTS (SELECT 1 FROM generated_outputs WHERE {where})"  # noqa: S608
        plan = "\n".join(r[0] for r in conn.execute(sql))
    assert "hp_generated_outputs_cold_unverified" in plan


def test_cold_copies_while_the_platform_keeps_writing(ai_pg: PostgresResource,
                                                      space: Space) -> None:
    with platform_running(ai_pg, s3=space.client(), outputs_bucket=space.store.outputs_bucket,
                          hot_root=str(space.hot.root()), outputs_hot_prefix=space.outputs,
                          outputs_cold_prefix=space.outputs, output_users=["p1", "p2"],
                          weights={"write_output": 2, "read_output": 1}):
        _run(ai_pg, space)
    _run(ai_pg, space)  # what arrived after the first run's query
    with ai_pg.connect() as conn:
        rows = conn.execute("SELECT output_id::text, sha256, cold_storage, cold_verified_at "
                            "FROM generated_outputs").fetchall()
    assert rows
    for oid, sha, cold, verified_at in rows:
        data, metadata = _cold(space, f"{space.outputs}/{_rel(ai_pg, oid)}")
        assert cold is True and verified_at is not None
        assert tier_copy.digest_chunks([data]).sha256 == sha == metadata["sha256"]
