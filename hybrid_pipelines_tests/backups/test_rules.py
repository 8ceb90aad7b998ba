"""The pure rules: labels, retention, configuration parsing, comparisons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from hybrid_pipelines.backups.rules.compare import (
    ObjectFacts,
    compare_juicefs,
    compare_listings,
    multipart_etag,
    restore_list_tables,
)
from hybrid_pipelines.backups.rules.layout import (
    BucketSpec,
    DatabaseSpec,
    parse_bucket_spec,
    parse_database_spec,
)
from hybrid_pipelines.backups.rules.retention import expired_labels, label_for


def test_label_is_the_utc_month() -> None:
    assert label_for(datetime(2026, 1, 1, 5, tzinfo=UTC)) == "2026-01"
    # 00:30 on Dec 1st in UTC+2 is still November in UTC.
    assert label_for(datetime(2026, 12, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))) \
        == "2026-11"


def months(n: int, start: str = "2025-01") -> list[str]:
    y, m = map(int, start.split("-"))
    out = []
    for _ in range(n):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def test_retention_keeps_the_n_newest_verified() -> None:
    labels = {m: True for m in months(14)}  # 2025-01 .. 2026-02
    assert expired_labels(labels, "2026-02", True, keep=12) == ["2025-01", "2025-02"]


def test_retention_deletes_nothing_when_the_current_backup_failed() -> None:
    labels = {m: True for m in months(20)}
    assert expired_labels(labels, "2026-08", False, keep=3) == []


def test_failed_backups_do_not_count_toward_the_n_kept() -> None:
    labels = {"2026-01": True, "2026-02": False, "2026-03": False, "2025-12": True,
              "2025-11": True}
    # keep 3 verified: 2026-04 (current), 2026-01, 2025-12; the failed ones in between stay.
    assert expired_labels(labels, "2026-04", True, keep=3) == ["2025-11"]


def test_retention_refuses_keep_below_one_and_bad_labels() -> None:
    with pytest.raises(ValueError, match="keep at least 1"):
        expired_labels({}, "2026-01", True, keep=0)
    with pytest.raises(ValueError, match="YYYY-MM"):
        expired_labels({}, "2026-1", True)


def test_bucket_and_database_specs() -> None:
    assert parse_bucket_spec("cold-models") == BucketSpec("object_store", "cold-models")
    assert parse_bucket_spec("seaweedfs:media-cache") == BucketSpec("seaweedfs", "media-cache")
    with pytest.raises(ValueError, match="not one of"):
        parse_bucket_spec("nas:x-y-z")
    with pytest.raises(ValueError, match="not a valid S3 bucket"):
        parse_bucket_spec("Bad_Bucket")
    assert parse_database_spec("ai_postgres") == DatabaseSpec("ai_postgres", None)
    assert parse_database_spec("postgres/juicefs").name("hybrid") == "postgres.juicefs"
    with pytest.raises(ValueError, match="not one of"):
        parse_database_spec("mysql")
    with pytest.raises(ValueError, match="plain database name"):
        parse_database_spec("postgres/x; drop")


def test_listing_comparison() -> None:
    src = {"a": ObjectFacts(1, "aa"), "b": ObjectFacts(2, "bb"), "m": ObjectFacts(9, "cc-2"),
           "gone": ObjectFacts(1, "dd")}
    dst = {"a": ObjectFacts(1, "aa"), "b": ObjectFacts(2, "XX"), "m": ObjectFacts(9, "ee"),
           "extra": ObjectFacts(1, "ff")}
    problems, rehash = compare_listings(src, dst)
    assert rehash == ["m"]  # a multipart ETag proves nothing: re-hash
    assert problems == ["gone: missing from the backup",
                        "extra: in the backup but not in the source listing",
                        "b: ETag XX in the backup, bb in the source"]
    assert compare_listings({"a": ObjectFacts(1, "aa")}, {"a": ObjectFacts(2, "aa")})[0] == \
        ["a: size 2 in the backup, 1 in the source"]


def test_multipart_etag_matches_s3s_rule() -> None:
    import hashlib

    parts = [hashlib.md5(b"x").digest(), hashlib.md5(b"y").digest()]
    assert multipart_etag(parts) == hashlib.md5(b"".join(parts)).hexdigest() + "-2"
    assert multipart_etag(parts[:1]) == parts[0].hex()


def test_restore_list_tables_reads_table_entries_only() -> None:
    listing = """;
; Archive created at 2026-11-29
215; 1259 16390 TABLE public files postgres
216; 1259 16389 SEQUENCE public files_id_seq postgres
3390; 0 16390 TABLE DATA public files postgres
217; 1259 16400 TABLE extra notes postgres
"""
    assert restore_list_tables(listing) == ["extra.notes", "public.files"]


def _tree(length: int) -> dict:
    return {"Counters": {"usedSpace": 4096, "usedInodes": 2},
            "FSTree": {"attr": {"type": "directory", "length": 0}, "entries": {
                "f": {"attr": {"type": "regular", "length": length, "inode": 7},
                      "chunks": [{"slices": [{"size": length}]}]}}}}


def test_juicefs_comparison() -> None:
    assert compare_juicefs(_tree(3), _tree(3)) == []
    assert compare_juicefs(_tree(3), _tree(4))[0].startswith("/f: ")
    lost = _tree(3)
    del lost["FSTree"]["entries"]["f"]
    assert compare_juicefs(_tree(3), lost) == ["/f: in the dump, missing after loading it"]
