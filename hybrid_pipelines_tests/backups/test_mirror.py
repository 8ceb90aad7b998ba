"""Bucket mirrors beyond the plain server-side copy: the streamed copy used across stores
(a multipart object's copy then gets another ETag and is verified by re-hashing), an object
rewritten between listing and copying, and one deleted meanwhile."""

from __future__ import annotations

from hybrid_pipelines.backups import buckets
from hybrid_pipelines.backups.rules.compare import ObjectFacts
from hybrid_pipelines_tests.backups.conftest import bucket_state, put_objects


def test_streamed_mirror_verifies_by_rehashing_multipart_objects(make_bucket, store) -> None:
    client = store.get_client()
    src, dst = make_bucket("src"), make_bucket("backups")
    put_objects(store, src)
    facts = buckets.mirror_bucket(client, src, client, dst, "2026-11/src/", same_store=False)
    assert facts.objects == 5 and not facts.vanished
    assert buckets.verify_mirror(client, src, client, dst, facts) == []
    assert bucket_state(store, dst, "2026-11/src/") == bucket_state(store, src)
    # A multipart source ETag compared with its copy is not proof: the rule asks to re-hash,
    # and a re-hash catches different bytes of the same size.
    client.put_object(Bucket=dst, Key="2026-11/src/multi.bin",
                      Body=b"\0" * facts.manifest["multi.bin"].size)
    problems = buckets.verify_mirror(client, src, client, dst, facts)
    assert problems == ["multi.bin: content differs from the source (MD5 of the bytes)"]


def test_object_rewritten_or_deleted_between_listing_and_copy(make_bucket, store) -> None:
    client = store.get_client()
    src, dst = make_bucket("src"), make_bucket("backups")
    client.put_object(Bucket=src, Key="k", Body=b"new bytes")
    head = client.head_object(Bucket=src, Key="k")
    stale = ObjectFacts(int(head["ContentLength"]), "0" * 32)  # as listed before a rewrite
    for same_store in (True, False):
        got = buckets._copy_checked(client, src, client, dst, "k", f"{same_store}/k",
                                    same_store, stale)
        # Copied as it is now, and recorded as such: verification compares like with like.
        assert got == ObjectFacts(9, head["ETag"].strip('"'))
        assert client.get_object(Bucket=dst, Key=f"{same_store}/k")["Body"].read() == \
            b"new bytes"
        assert buckets._copy_checked(client, src, client, dst, "gone", "x", same_store,
                                     stale) is None
