"""Verified copies against the real SeaweedFS S3 gateway: what counts as proof, what does not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig

from hybrid_pipelines.ai_tiers import tier_copy
from hybrid_pipelines.ai_tiers.tier_copy import ColdCopyMissing, VerificationFailed

from .conftest import Space


def _file(tmp_path: Path, name: str, body: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(body)
    return path


def test_single_part_upload_is_proven_by_the_md5_etag(space: Space, tmp_path: Path) -> None:
    src = _file(tmp_path, "a.bin", os.urandom(50_000))
    digest = tier_copy.digest_file(src)
    key, bucket, client = f"{space.name}/a.bin", space.store.bucket, space.client()
    assert tier_copy.upload_file(client, bucket, key, src, digest) is None
    assert tier_copy.verify_object(client, bucket, key, digest) == "etag-md5"
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["Metadata"]["sha256"] == digest.sha256


def test_multipart_upload_is_read_back(space: Space, tmp_path: Path) -> None:
    src = _file(tmp_path, "big.bin", os.urandom(6 * 2**20))
    digest = tier_copy.digest_file(src)
    key, bucket, client = f"{space.name}/big.bin", space.store.bucket, space.client()
    cfg = TransferConfig(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20)
    tier_copy.upload_file(client, bucket, key, src, digest, transfer_config=cfg)
    assert "-" in client.head_object(Bucket=bucket, Key=key)["ETag"]  # not an MD5
    assert tier_copy.verify_object(client, bucket, key, digest) == "read-back"


def test_verification_failures_name_the_object(space: Space, tmp_path: Path) -> None:
    bucket, client = space.store.bucket, space.client()
    good = tier_copy.digest_file(_file(tmp_path, "g", b"the real bytes"))
    key = f"{space.name}/x"
    with pytest.raises(ColdCopyMissing, match=f"s3://{bucket}/{key} is missing"):
        tier_copy.verify_object(client, bucket, key, good)
    # Right size and the right sha256 claimed in metadata, wrong bytes: the ETag exposes it.
    space.put_cold(key, b"the fake bytes", {"sha256": good.sha256})
    with pytest.raises(VerificationFailed, match="MD5 ETag"):
        tier_copy.verify_object(client, bucket, key, good)
    space.put_cold(key, b"short", {"sha256": good.sha256})
    with pytest.raises(VerificationFailed, match="has 5 bytes"):
        tier_copy.verify_object(client, bucket, key, good)
    space.put_cold(key, b"the real bytes")  # no sha256 metadata: not our verified copy
    with pytest.raises(VerificationFailed, match="sha256 None"):
        tier_copy.verify_object(client, bucket, key, good)


def test_unknown_storage_class_falls_back_to_the_default(space: Space, tmp_path: Path) -> None:
    src = _file(tmp_path, "s", b"cold please")
    digest = tier_copy.digest_file(src)
    bucket, client = space.store.bucket, space.client()
    assert tier_copy.upload_file(client, bucket, f"{space.name}/s1", src, digest,
                                 storage_class="NOT_A_CLASS") is None
    assert tier_copy.upload_file(client, bucket, f"{space.name}/s2", src, digest,
                                 storage_class="GLACIER_IR") == "GLACIER_IR"
    assert client.head_object(Bucket=bucket, Key=f"{space.name}/s2")["StorageClass"] == \
        "GLACIER_IR"
    tier_copy.verify_object(client, bucket, f"{space.name}/s1", digest)


def test_corrupt_download_never_replaces_the_destination(space: Space, tmp_path: Path) -> None:
    bucket, client = space.store.bucket, space.client()
    key = f"{space.name}/d"
    space.put_cold(key, b"corrupted!", {"sha256": "0" * 64})
    dest = _file(tmp_path, "d", b"previous version")
    with pytest.raises(VerificationFailed, match="metadata says"):
        tier_copy.download_verified(client, bucket, key, tmp_path, "d")
    assert dest.read_bytes() == b"previous version"
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temp file left behind
    body = b"new version"
    space.put_cold(key, body, {"sha256": tier_copy.digest_chunks([body]).sha256})
    got = tier_copy.download_verified(client, bucket, key, tmp_path, "d")
    assert (got.verified_by, dest.read_bytes()) == ("sha256", body)


def test_sweep_removes_only_old_temp_files(tmp_path: Path) -> None:
    old = tmp_path / "sub" / ".w.bin.hp-part-abc"
    old.parent.mkdir()
    old.write_bytes(b"x")
    keep = tmp_path / "w.bin"
    keep.write_bytes(b"y")
    os.utime(old, (1000, 1000))
    assert tier_copy.sweep_temp_files(tmp_path, older_than_s=3600) == 1
    assert not old.exists() and keep.exists()
