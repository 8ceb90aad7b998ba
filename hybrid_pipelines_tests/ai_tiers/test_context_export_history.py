"""A conversation exported more than once, on the real PostgreSQL and SeaweedFS: each expiry run
writes its own object, the pointer moves only after verification, and reactivation brings back
every export (issue #12, item 7)."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from hybrid_pipelines.ai_tiers import contexts, tier_copy
from hybrid_pipelines.ai_tiers.contexts import archive_contexts
from hybrid_pipelines.ai_tiers.rules.tier_policy import cutoff
from hybrid_pipelines.resources import PostgresResource

from .conftest import NOW, Space, days_ago, seed_contexts


def _msgs(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _archive(pg: PostgresResource, conv: str, text: str, archived_at: datetime) -> None:
    """The conversation, idle long before `archived_at`, moved to the archive at that time
    (a backfilled or clock-skewed archive run can hit an earlier archive day again)."""
    seed_contexts(pg, [("u1", conv, _msgs(text), archived_at - timedelta(days=40))])
    with pg.connect(autocommit=True) as conn:
        archive_contexts(conn, archived_at, archived_at)


def _expire(pg: PostgresResource, sp: Space) -> Any:
    with pg.connect(autocommit=True) as conn:
        return contexts.expire_archive(conn, sp.client(), sp.store.bucket, cutoff(NOW, 365), NOW,
                                       sp.contexts, storage_class=None)


def _reactivate(pg: PostgresResource, sp: Space, conv: str) -> contexts.Reactivation:
    with pg.connect(autocommit=True) as conn:
        return contexts.reactivate_context(conn, sp.client(), sp.store.bucket, "u1", conv,
                                           NOW + timedelta(days=1))


def _warm(pg: PostgresResource) -> dict[str, Any]:
    with pg.connect() as conn:
        return dict(conn.execute("SELECT conversation_id, messages FROM user_contexts"))


def _tombstones(pg: PostgresResource) -> int:
    with pg.connect() as conn:
        return conn.execute("SELECT (SELECT count(*) FROM user_context_exports) + "
                            "(SELECT count(*) FROM user_context_export_history)").fetchone()[0]


@pytest.mark.parametrize("second_archive_day", [400, 380], ids=["same-day", "later-day"])
def test_a_conversation_that_expires_twice_keeps_both_exports(
        ai_pg: PostgresResource, space: Space, second_archive_day: int) -> None:
    _archive(ai_pg, "c", "first life", days_ago(400))
    assert _expire(ai_pg, space).rows_exported == 1
    first = space.keys("contexts/")
    # The platform starts the conversation again without reactivating it; it goes idle, is
    # archived and expires again.
    _archive(ai_pg, "c", "second life", days_ago(second_archive_day))
    assert _expire(ai_pg, space).rows_exported == 1
    objects = space.keys("contexts/")
    assert len(objects) == 2
    assert {k: v for k, v in objects.items() if k in first} == first  # never rewritten
    back = _reactivate(ai_pg, space, "c")
    # Before the fix the pointer named only the second export: the first life was lost.
    assert _warm(ai_pg) == {"c": _msgs("first life") + _msgs("second life")}
    assert (back.source, back.exports_merged) == ("export", 2)
    assert _tombstones(ai_pg) == 0


@pytest.mark.fault("ai_tiers: second export of the same archive day does not verify -> the "
                   "first export object is untouched and still restores", kind="patched exception")
def test_a_failed_rerun_never_touches_the_days_earlier_export(
        ai_pg: PostgresResource, space: Space, monkeypatch: pytest.MonkeyPatch) -> None:
    day = days_ago(400)
    _archive(ai_pg, "a", "exported first", day)
    _expire(ai_pg, space)
    first = space.keys("contexts/")
    _archive(ai_pg, "b", "same archive day", day)

    def lying_upload(client, bucket, key, path, digest, **kw):
        # Fault injection: the store acknowledges the upload but keeps other bytes (SeaweedFS
        # cannot be made to corrupt on demand); the verification that catches it is real.
        client.put_object(Bucket=bucket, Key=key, Body=b"\0" * digest.size,
                          Metadata={"sha256": digest.sha256})

    monkeypatch.setattr(tier_copy, "upload_file", lying_upload)
    with pytest.raises(tier_copy.VerificationFailed):
        _expire(ai_pg, space)
    monkeypatch.undo()
    # Before the fix the day's one object was overwritten with the unverified bytes.
    assert space.keys("contexts/") == first
    assert _reactivate(ai_pg, space, "a").source == "export"
    assert _warm(ai_pg) == {"a": _msgs("exported first")}
    with ai_pg.connect() as conn:
        assert conn.execute("SELECT conversation_id FROM user_contexts_archive").fetchall() == \
            [("b",)]


def test_a_pointer_written_before_the_history_is_kept_when_it_moves(
        ai_pg: PostgresResource, space: Space) -> None:
    # An export made by the earlier code: one object per day and a pointer row, no history.
    old = days_ago(500)
    line = {"id": 777, "user_id": "u1", "conversation_id": "c", "messages": _msgs("legacy"),
            "created_at": (old - timedelta(days=1)).isoformat(), "updated_at": old.isoformat(),
            "archived_at": old.isoformat()}
    key = f"{space.contexts}/legacy/user-contexts.jsonl.gz"
    space.put_cold(key, gzip.compress(json.dumps(line).encode() + b"\n", mtime=0))
    with ai_pg.connect() as conn:
        conn.execute("INSERT INTO user_context_exports (user_id, conversation_id, archive_id, "
                     "object_key, exported_at) VALUES ('u1', 'c', 777, %s, %s)", (key, old))
    _archive(ai_pg, "c", "after the legacy export", days_ago(400))
    _expire(ai_pg, space)
    _reactivate(ai_pg, space, "c")
    assert _warm(ai_pg) == {"c": _msgs("legacy") + _msgs("after the legacy export")}
    assert _tombstones(ai_pg) == 0


def test_reactivation_brings_archive_and_exports_back_together(
        ai_pg: PostgresResource, space: Space) -> None:
    _archive(ai_pg, "c", "exported life", days_ago(400))
    _expire(ai_pg, space)
    _archive(ai_pg, "c", "archived life", days_ago(40))  # not old enough to expire
    back = _reactivate(ai_pg, space, "c")
    # Before: only the archived life came back (a second request was needed for the other).
    assert _warm(ai_pg) == {"c": _msgs("exported life") + _msgs("archived life")}
    assert (back.source, back.exports_merged) == ("archive", 1)
    assert _tombstones(ai_pg) == 0
