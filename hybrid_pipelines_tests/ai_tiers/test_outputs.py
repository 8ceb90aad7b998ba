"""Generated outputs: a week hot, then cold after a verified copy; popular ones stay or come
back; deletion requests remove them from every tier and the table."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import dagster as dg
import pytest

from hybrid_pipelines.ai_tiers import outputs, tier_copy
from hybrid_pipelines.defs.ai_tiers.assets import generated_outputs
from hybrid_pipelines.defs.ai_tiers.checks import output_paths_follow_layout
from hybrid_pipelines.defs.ai_tiers.jobs import OutputDeletionConfig, output_deletion_job
from hybrid_pipelines.defs.ai_tiers.sensors import output_deletion_requests_sensor
from hybrid_pipelines.resources import PostgresResource

from .conftest import NOW, Space, days_ago, output_tier, seed_output_row


def _seed(pg: PostgresResource, sp: Space, user: str, created: datetime, access: int = 0,
          tier: str = "hot", ext: str = "png") -> tuple[str, str, bytes]:
    """An output as the platform leaves it: its row (hot_storage / cold_storage, filename,
    no path of ours) and its file at user_id/YYYY/MM/DD/uuid.ext on the hot tier, or in the
    outputs bucket when cold."""
    body = os.urandom(3000)
    oid, rel = seed_output_row(pg, user, created, tier, len(body), access, ext)
    if tier == "hot":
        path = sp.hot.path(f"{sp.outputs}/{rel}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    else:
        sp.put_cold(f"{sp.outputs}/{rel}", body,
                    {"sha256": tier_copy.digest_chunks([body]).sha256},
                    bucket=sp.store.outputs_bucket)
    return oid, rel, body


def _tier(pg: PostgresResource, oid: str) -> str | None:
    return output_tier(pg, oid)


def _run(pg: PostgresResource, sp: Space, raise_on_error: bool = True
         ) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [generated_outputs, output_paths_follow_layout],
        resources={"ai_postgres": pg, "object_store": sp.store, "hot_tier": sp.hot},
        run_config={"ops": {"generated_outputs": {"config": {
            "now": NOW.isoformat(), "hot_prefix": sp.outputs, "cold_prefix": sp.outputs}}}},
        raise_on_error=raise_on_error)


def _meta(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    mats = result.asset_materializations_for_node("generated_outputs")
    return {k: v.value for k, v in mats[-1].metadata.items()}


def test_daily_tiering_boundaries_and_popularity(ai_pg: PostgresResource, space: Space) -> None:
    d6 = _seed(ai_pg, space, "u1", days_ago(6))
    d7 = _seed(ai_pg, space, "u1", days_ago(7))
    d8 = _seed(ai_pg, space, "u1", days_ago(8), access=4)
    kept = _seed(ai_pg, space, "u1", days_ago(30), access=5)
    back = _seed(ai_pg, space, "u2", days_ago(40), access=9, tier="cold")
    result = _run(ai_pg, space)
    assert [_tier(ai_pg, o[0]) for o in (d6, d7, d8, kept, back)] == \
        ["hot", "cold", "cold", "hot", "hot"]
    cold = space.output_keys("outputs/")
    for _oid, rel, body in (d7, d8):
        assert cold[f"{space.outputs}/{rel}"] == body
        assert not space.hot.path(f"{space.outputs}/{rel}").exists()
    assert space.hot.path(f"{space.outputs}/{back[1]}").read_bytes() == back[2]
    meta = _meta(result)
    assert (meta["outputs_demoted"], meta["outputs_promoted"]) == (2, 1)
    assert (meta["bytes_freed"], meta["bytes_promoted"]) == (6000, 3000)
    assert (meta["hot_outputs"], meta["cold_outputs"]) == (3, 2)
    assert result.get_asset_check_evaluations()[0].passed


@pytest.mark.fault("ai_tiers: output cold copy does not verify -> hot file kept",
                   kind="patched exception")
def test_upload_that_does_not_verify_keeps_the_hot_file(ai_pg: PostgresResource, space: Space,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    oid, rel, body = _seed(ai_pg, space, "u1", days_ago(10))

    def lying_upload(client, bucket, key, path, digest, **kw):
        # Fault injection: an acknowledged upload holding other bytes (SeaweedFS cannot be made
        # to corrupt on demand); the verification that catches it is real.
        client.put_object(Bucket=bucket, Key=key, Body=b"?" * digest.size,
                          Metadata={"sha256": digest.sha256})

    monkeypatch.setattr(tier_copy, "upload_file", lying_upload)
    result = _run(ai_pg, space, raise_on_error=False)
    assert not result.success
    assert _tier(ai_pg, oid) == "hot"
    assert space.hot.path(f"{space.outputs}/{rel}").read_bytes() == body


def test_deletion_request_removes_every_copy(ai_pg: PostgresResource, space: Space) -> None:
    hot_one = _seed(ai_pg, space, "gone", days_ago(1))
    cold_one = _seed(ai_pg, space, "gone", days_ago(20), tier="cold")
    other = _seed(ai_pg, space, "stays", days_ago(1))
    with ai_pg.connect() as conn:
        conn.execute("INSERT INTO output_deletion_requests (user_id) VALUES ('gone')")
    sensor = output_deletion_requests_sensor(
        dg.build_sensor_context(resources={"ai_postgres": ai_pg}))
    (request,) = sensor.run_requests
    cfg = request.run_config["ops"]["delete_user_outputs"]["config"]
    assert OutputDeletionConfig(**cfg) == OutputDeletionConfig(user_id="gone", request_id=1)
    result = output_deletion_job.execute_in_process(
        run_config={"ops": {"delete_user_outputs": {"config": {
            **cfg, "hot_prefix": space.outputs, "cold_prefix": space.outputs}}}},
        resources={"ai_postgres": ai_pg, "object_store": space.store, "hot_tier": space.hot})
    mat = result.asset_materializations_for_node("delete_user_outputs")[0]
    assert mat.metadata["outputs_deleted"].value == 2
    for oid, rel, _ in (hot_one, cold_one):
        assert _tier(ai_pg, oid) is None
        assert not space.hot.path(f"{space.outputs}/{rel}").exists()
    assert list(space.output_keys("outputs/gone")) == []
    assert _tier(ai_pg, other[0]) == "hot"
    with ai_pg.connect() as conn:
        assert conn.execute("SELECT status, detail FROM output_deletion_requests").fetchone() \
            == ("done", "2 output(s) removed")


def test_deletion_for_the_wrong_user_is_refused(ai_pg: PostgresResource, space: Space) -> None:
    oid, rel, _ = _seed(ai_pg, space, "owner", days_ago(1))
    layout = outputs.OutputLayout(space.outputs, space.outputs)
    with ai_pg.connect(autocommit=True) as conn, pytest.raises(
            outputs.OutputTierError, match="belongs to another user"):
        outputs.delete_outputs(conn, space.client(), space.store.outputs_bucket, space.hot,
                               "intruder", oid, layout)
    assert _tier(ai_pg, oid) == "hot"
    assert space.hot.path(f"{space.outputs}/{rel}").exists()


def test_layout_check_flags_bad_paths(ai_pg: PostgresResource) -> None:
    with ai_pg.connect() as conn:
        # A path of ours that is not the layout, and a platform filename without extension.
        conn.execute("INSERT INTO generated_outputs (output_id, user_id, filename, output_type, "
                     "path) VALUES (gen_random_uuid(), 'u1', 'a.png', 'image', "
                     "'u1/2025/13/01/nope.png'), (gen_random_uuid(), 'u1', 'noext', 'image', "
                     "NULL)")
    result = output_paths_follow_layout(ai_postgres=ai_pg)
    assert not result.passed and result.metadata["bad_paths"].value == 2
