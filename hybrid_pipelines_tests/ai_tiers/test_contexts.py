"""User contexts: archive (boundaries, twins, overlapping runs), expiry to the object store,
reactivation by job and sensor, all on the real PostgreSQL and SeaweedFS."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta
from typing import Any

import dagster as dg
import pytest

from hybrid_pipelines.ai_tiers import contexts, tier_copy
from hybrid_pipelines.ai_tiers.contexts import ARCHIVE_BATCH_SQL, archive_contexts
from hybrid_pipelines.ai_tiers.rules.tier_policy import cutoff
from hybrid_pipelines.defs.ai_tiers.assets import (
    user_context_exports,
    user_contexts,
    user_contexts_archive,
)
from hybrid_pipelines.defs.ai_tiers.jobs import context_reactivation_job
from hybrid_pipelines.defs.ai_tiers.sensors import context_reactivation_requests_sensor
from hybrid_pipelines.resources import PostgresResource

from .conftest import NOW, Space, days_ago, naive, seed_contexts


def _msgs(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _where(pg: PostgresResource) -> dict[str, str]:
    """conversation_id -> 'warm' | 'archive' | 'both'."""
    with pg.connect() as conn:
        warm = {r[0] for r in conn.execute("SELECT conversation_id FROM user_contexts")}
        arch = {r[0] for r in conn.execute("SELECT conversation_id FROM user_contexts_archive")}
    return {c: ("both" if c in warm and c in arch else "warm" if c in warm else "archive")
            for c in warm | arch}


def _run_archive_job(pg: PostgresResource, sp: Space, now: str, **expiry: Any
                     ) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [user_contexts, user_contexts_archive, user_context_exports],
        selection=[user_contexts_archive, user_context_exports],
        resources={"ai_postgres": pg, "object_store": sp.store},
        run_config={"ops": {
            "user_contexts_archive": {"config": {"now": now, "batch_size": 2}},
            "user_context_exports": {"config": {"now": now, "prefix": sp.contexts, **expiry}}}})


def _meta(result: dg.ExecuteInProcessResult, node: str) -> dict[str, Any]:
    return {k: v.value for k, v in
            result.asset_materializations_for_node(node)[-1].metadata.items()}


def test_archive_boundary_days_and_metadata(ai_pg: PostgresResource, space: Space) -> None:
    seed_contexts(ai_pg, [("u1", f"c{d}", _msgs(f"day {d}"), days_ago(d))
                          for d in (0, 29, 30, 31, 200)])
    result = _run_archive_job(ai_pg, space, NOW.isoformat())
    assert _where(ai_pg) == {"c0": "warm", "c29": "warm", "c30": "archive", "c31": "archive",
                             "c200": "archive"}
    meta = _meta(result, "user_contexts_archive")
    assert (meta["contexts_moved"], meta["batches"], meta["warm_rows"],
            meta["archive_rows"]) == (3, 2, 2, 3)
    assert meta["bytes_moved"] > 0
    assert _meta(result, "user_context_exports")["contexts_exported"] == 0
    with ai_pg.connect() as conn:
        row = conn.execute("SELECT messages, archived_at, updated_at FROM user_contexts_archive "
                           "WHERE conversation_id = 'c31'").fetchone()
    assert row == (_msgs("day 31"), naive(NOW), naive(days_ago(31)))


def test_archived_twin_is_merged_not_dropped(ai_pg: PostgresResource) -> None:
    seed_contexts(ai_pg, [("u1", "c", _msgs("first life"), days_ago(60))])
    with ai_pg.connect(autocommit=True) as conn:
        archive_contexts(conn, cutoff(days_ago(30), 30), days_ago(30))
        # The platform starts the conversation again without reactivating it first.
        seed_contexts(ai_pg, [("u1", "c", _msgs("second life"), days_ago(40))])
        assert contexts.twins_count(conn) == 1
        report = archive_contexts(conn, cutoff(NOW, 30), NOW)
        assert (report.moved, report.merged_into_twins) == (1, 1)
        messages = conn.execute("SELECT messages FROM user_contexts_archive").fetchone()[0]
        assert contexts.twins_count(conn) == 0
    assert messages == _msgs("first life") + _msgs("second life")


@pytest.mark.fault("ai_tiers: two archive runs overlap -> nothing lost or doubled",
                   kind="concurrency")
def test_overlapping_archive_runs_lose_and_double_nothing(ai_pg: PostgresResource) -> None:
    eligible = [("u", f"old{i}", _msgs(str(i)), days_ago(40)) for i in range(300)]
    seed_contexts(ai_pg, eligible + [("u", f"new{i}", _msgs(str(i)), days_ago(2))
                                     for i in range(50)])
    params = {"cutoff": cutoff(NOW, 30), "limit": 100, "archived_at": NOW, "after_ts": None,
              "after_id": None}
    with ai_pg.connect() as run_a, ai_pg.connect(autocommit=True) as run_b:
        # Run A has moved a batch but not committed: its rows are locked, mid-move.
        a_moved = run_a.execute(ARCHIVE_BATCH_SQL, params).fetchone()[0]
        # Run B overlaps: its first batch waits for A's rows past BATCH_LOCK_WAIT, is redone
        # skipping them (SKIP LOCKED), and B moves everything else.
        b = archive_contexts(run_b, cutoff(NOW, 30), NOW, batch_size=64)
        run_a.commit()
        # Run A goes on: nothing is left for it.
        a_rest = archive_contexts(run_a, cutoff(NOW, 30), NOW, batch_size=64)
    assert a_moved == 100 and b.moved == 200 and a_rest.moved == 0
    where = _where(ai_pg)
    assert sum(v == "archive" for v in where.values()) == 300
    assert sum(v == "warm" for v in where.values()) == 50
    with ai_pg.connect() as conn:
        assert conn.execute("SELECT count(*) FROM user_contexts_archive").fetchone()[0] == 300


def test_plain_statement_and_batched_move_agree(ai_pg: PostgresResource) -> None:
    seed_contexts(ai_pg, [("u", f"c{i}", _msgs(str(i)), days_ago(i)) for i in range(60)])
    with ai_pg.connect() as conn:
        conn.execute(contexts.ARCHIVE_PLAIN_SQL, {"cutoff": cutoff(NOW, 30), "archived_at": NOW})
    assert sum(v == "archive" for v in _where(ai_pg).values()) == 30


def _archived(pg: PostgresResource, rows: list[tuple[str, str, list, Any]], archived_at) -> None:
    seed_contexts(pg, rows)
    with pg.connect(autocommit=True) as conn:
        archive_contexts(conn, archived_at, archived_at)


def test_expiry_exports_one_verified_object_per_day_then_deletes(ai_pg: PostgresResource,
                                                                 space: Space) -> None:
    day1, day2 = days_ago(400), days_ago(380)
    _archived(ai_pg, [("u1", "a", _msgs("a"), day1 - timedelta(days=31)),
                      ("u2", "b", _msgs("b"), day1 - timedelta(days=40))], day1)
    _archived(ai_pg, [("u1", "c", _msgs("ç ü 中"), day2 - timedelta(days=31))], day2)
    _archived(ai_pg, [("u1", "recent", _msgs("r"), days_ago(364) - timedelta(days=31))],
              days_ago(364))
    result = _run_archive_job(ai_pg, space, NOW.isoformat())
    meta = _meta(result, "user_context_exports")
    assert (meta["contexts_exported"], meta["objects_written"], meta["days_exported"]) == \
        (3, 2, 2)
    assert meta["storage_class"] == "GLACIER_IR"
    objects = space.keys("contexts/")
    run_id = meta["run_id"]
    assert sorted(objects) == [
        f"{space.contexts}/{day1:%Y/%m/%d}/user-contexts-{day1.date()}-{run_id}.jsonl.gz",
        f"{space.contexts}/{day2:%Y/%m/%d}/user-contexts-{day2.date()}-{run_id}.jsonl.gz"]
    lines = [json.loads(x) for body in objects.values()
             for x in gzip.decompress(body).splitlines()]
    assert sorted((x["conversation_id"], x["messages"][0]["content"]) for x in lines) == \
        [("a", "a"), ("b", "b"), ("c", "ç ü 中")]
    assert _where(ai_pg) == {"recent": "archive"}
    with ai_pg.connect() as conn:
        assert conn.execute("SELECT count(*) FROM user_context_exports").fetchone()[0] == 3


@pytest.mark.fault("ai_tiers: context export does not verify -> rows kept, bad object removed",
                   kind="patched exception")
def test_expiry_failure_before_delete_keeps_rows(ai_pg: PostgresResource, space: Space,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _archived(ai_pg, [("u1", "a", _msgs("a"), days_ago(500))], days_ago(400))

    def lying_upload(client, bucket, key, path, digest, **kw):
        # Fault injection: the store acknowledges the upload but keeps other bytes;
        # SeaweedFS cannot be made to corrupt on demand. The verification is real.
        client.put_object(Bucket=bucket, Key=key, Body=b"\0" * digest.size,
                          Metadata={"sha256": digest.sha256})

    monkeypatch.setattr(tier_copy, "upload_file", lying_upload)
    with ai_pg.connect(autocommit=True) as conn:
        with pytest.raises(tier_copy.VerificationFailed, match="MD5 ETag"):
            contexts.expire_archive(conn, space.client(), space.store.bucket,
                                    cutoff(NOW, 365), NOW, space.contexts)
        assert _where(ai_pg) == {"a": "archive"}
    monkeypatch.undo()
    # The unverified object was this run's own key, pointed at by nothing: it is gone again,
    # and the retry writes a new one.
    assert space.keys("contexts/") == {}
    with ai_pg.connect(autocommit=True) as conn:
        report = contexts.expire_archive(conn, space.client(), space.store.bucket,
                                         cutoff(NOW, 365), NOW, space.contexts)
    assert report.rows_exported == 1 and _where(ai_pg) == {}
    objects = space.keys("contexts/")
    (good,) = objects
    assert report.run_id in good
    assert json.loads(gzip.decompress(objects[good]))["conversation_id"] == "a"


def test_rerun_for_the_same_day_writes_beside_the_existing_object(ai_pg: PostgresResource,
                                                                  space: Space) -> None:
    day = days_ago(400)
    _archived(ai_pg, [("u1", "a", _msgs("a"), day - timedelta(days=40))], day)
    client, bucket = space.client(), space.store.bucket
    with ai_pg.connect(autocommit=True) as conn:
        contexts.expire_archive(conn, client, bucket, cutoff(NOW, 365), NOW, space.contexts)
    first = space.keys("contexts/")
    # Another row of the same archive day shows up later (a clock-skewed archive run).
    _archived(ai_pg, [("u1", "b", _msgs("b"), day - timedelta(days=40))], day)
    with ai_pg.connect(autocommit=True) as conn:
        report = contexts.expire_archive(conn, client, bucket, cutoff(NOW, 365), NOW,
                                         space.contexts, storage_class=None)
    assert report.rows_exported == 1
    objects = space.keys("contexts/")
    assert {k: v for k, v in objects.items() if k in first} == first  # left as it was
    (new,) = set(objects) - set(first)
    assert report.run_id in new
    assert [json.loads(x)["conversation_id"] for x in gzip.decompress(objects[new]).splitlines()] \
        == ["b"]


def test_reactivation_from_archive_and_from_export(ai_pg: PostgresResource,
                                                   space: Space) -> None:
    _archived(ai_pg, [("u1", "arch", _msgs("in archive"), days_ago(60))], days_ago(30))
    _archived(ai_pg, [("u1", "exp", _msgs("exported"), days_ago(500))], days_ago(400))
    client, bucket = space.client(), space.store.bucket
    with ai_pg.connect(autocommit=True) as conn:
        contexts.expire_archive(conn, client, bucket, cutoff(NOW, 365), NOW, space.contexts)
    assert _where(ai_pg) == {"arch": "archive"}
    resources = {"ai_postgres": ai_pg, "object_store": space.store}
    for conv, source in (("arch", "archive"), ("exp", "export")):
        result = context_reactivation_job.execute_in_process(
            run_config={"ops": {"reactivate_context": {"config": {
                "user_id": "u1", "conversation_id": conv, "now": NOW.isoformat()}}}},
            resources=resources)
        mat = result.asset_materializations_for_node("reactivate_context")[0]
        assert mat.metadata["contexts_reactivated"].value == 1, source
    assert _where(ai_pg) == {"arch": "warm", "exp": "warm"}
    with ai_pg.connect() as conn:
        rows = dict(conn.execute("SELECT conversation_id, messages FROM user_contexts"))
        assert conn.execute("SELECT count(*) FROM user_context_exports").fetchone()[0] == 0
        # updated_at is now: the next archive run leaves them warm.
        assert conn.execute("SELECT min(updated_at) FROM user_contexts").fetchone()[0] \
            == naive(NOW)
    assert rows == {"arch": _msgs("in archive"), "exp": _msgs("exported")}
    missing = context_reactivation_job.execute_in_process(
        run_config={"ops": {"reactivate_context": {"config": {
            "user_id": "u1", "conversation_id": "never"}}}},
        resources=resources, raise_on_error=False)
    assert not missing.success
    assert "is in no tier" in str(
        missing.failure_data_for_node("reactivate_context").user_failure_data.description)


def test_reactivation_sensor(ai_pg: PostgresResource) -> None:
    with ai_pg.connect() as conn:
        conn.execute("INSERT INTO context_reactivation_requests (user_id, conversation_id) "
                     "VALUES ('u1', 'c1'), ('u2', 'c2')")
    result = context_reactivation_requests_sensor(
        dg.build_sensor_context(resources={"ai_postgres": ai_pg}))
    assert [r.run_key for r in result.run_requests] == [
        "context_reactivation_requests-1", "context_reactivation_requests-2"]
    assert result.run_requests[0].run_config["ops"]["reactivate_context"]["config"] == \
        {"user_id": "u1", "conversation_id": "c1", "request_id": 1}
