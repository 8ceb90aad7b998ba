"""`hybrid-pipelines simulate-uploads N` against the shared servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid_pipelines.cli import main
from hybrid_pipelines.hybrid_cache.hashing_copy import sha256_of_stream
from hybrid_pipelines.hybrid_cache.uploads import MIB, PatternStream, mixed_sizes
from hybrid_pipelines.shared.env import connection_env, read_env_file

from .conftest import nas_bytes, sha


def _point_env_at(monkeypatch, pg_server, seaweed_server, samba_server,
                  database: str) -> None:
    env = {**pg_server.env(), **seaweed_server.env(), **samba_server.env()}
    for key, value in env.items():
        if key.startswith("HP_"):
            monkeypatch.setenv(key, value)
    # The domain's own database (conftest.postgres_resource), holding the verbatim table.
    monkeypatch.setenv("HP_PG_DATABASE", database)


def test_simulate_uploads_writes_objects_and_rows(conn, s3, s3_resource, prefix, monkeypatch,
                                                 pg_server, seaweed_server, samba_server,
                                                 capsys) -> None:
    _point_env_at(monkeypatch, pg_server, seaweed_server, samba_server, conn.info.dbname)
    rc = main(["simulate-uploads", "12", "--seed", "5", "--max-size-mb", "2",
               "--key-prefix", f"{prefix}/", "--nas-prefix", prefix])
    assert rc == 0
    assert "12 uploads" in capsys.readouterr().out
    rows = conn.execute("SELECT seaweed_fid, size, hash, cache_status, nas_status, nas_path"
                        " FROM file_metadata ORDER BY original_name").fetchall()
    assert len(rows) == 12
    sizes = [r[1] for r in rows]
    assert sizes == list(mixed_sizes(12, 5, 2 * 1024 * 1024))
    assert len(set(sizes)) > 5 and max(sizes) <= 2 * 1024 * 1024
    for key, size, digest, cache_status, nas_status, nas_path in rows:
        assert (cache_status, nas_status) == ("cached", "pending")
        assert key.startswith(f"{prefix}/") and nas_path.startswith(f"{prefix}/")
        body = s3.get_object(Bucket=s3_resource.bucket, Key=key)["Body"].read()
        assert len(body) == size and sha(body) == digest


def test_simulate_uploads_falls_back_to_the_nas_when_seaweedfs_is_down(
        conn, nas_fs, prefix, monkeypatch, pg_server, seaweed_server, samba_server,
        capsys) -> None:
    _point_env_at(monkeypatch, pg_server, seaweed_server, samba_server, conn.info.dbname)
    monkeypatch.setenv("HP_SEAWEEDFS_S3_ENDPOINT", "http://127.0.0.1:9")  # nothing listens
    monkeypatch.setenv("HP_SEAWEEDFS_MASTER_URL", "")
    assert main(["simulate-uploads", "3", "--seed", "1", "--max-size-mb", "0.5",
                 "--nas-prefix", prefix]) == 0
    assert "straight to the NAS" in capsys.readouterr().out
    rows = conn.execute("SELECT nas_path, hash, cache_status, nas_status, recache_requested"
                        " FROM file_metadata").fetchall()
    assert len(rows) == 3
    for nas_path, digest, cache_status, nas_status, recache in rows:
        assert (cache_status, nas_status, recache) == (None, "synced", True)
        assert sha(nas_bytes(nas_fs, nas_path)) == digest


def test_large_uploads_stream_in_parts_without_truncation(conn, upload, s3, s3_resource) -> None:
    # PatternStream hands out at most 1 MiB per read, like a network stream: the upload must
    # still store every byte (17 MiB = three 8 MiB multipart parts).
    f = upload(PatternStream(17 * MIB + 3, 11), "big.mov")
    assert f.size == 17 * MIB + 3
    head = s3.head_object(Bucket=s3_resource.bucket, Key=f.key)
    assert head["ContentLength"] == f.size
    body = s3.get_object(Bucket=s3_resource.bucket, Key=f.key)["Body"]
    assert sha256_of_stream(body).sha256 == f.sha256 == \
        sha256_of_stream(PatternStream(17 * MIB + 3, 11)).sha256


def test_simulate_uploads_rejects_a_negative_count(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["simulate-uploads", "many"])
    assert main(["simulate-uploads", "-1"]) == 1
    assert "N must be 0 or more" in capsys.readouterr().err


def test_connection_env_prefers_the_environment_over_stack_env(tmp_path: Path,
                                                               monkeypatch) -> None:
    env_file = tmp_path / "stack.env"
    env_file.write_text("# local stack\nHP_PG_PORT=1111\nHP_PG_HOST=10.0.0.1\n\nBROKEN\n")
    assert read_env_file(env_file) == {"HP_PG_PORT": "1111", "HP_PG_HOST": "10.0.0.1"}
    monkeypatch.setenv("HP_PG_PORT", "2222")
    env = connection_env(env_file)
    assert env["HP_PG_PORT"] == "2222" and env["HP_PG_HOST"] == "10.0.0.1"
