"""Every resource against its real server: healthy, then down/misconfigured with an error that
names the backend, the address, the cause and the env var to fix."""

from __future__ import annotations

import pytest

from hybrid_pipelines.dev.stack.process import LOOPBACK, free_port
from hybrid_pipelines.resources import (
    BackendError,
    EFSResource,
    FirestoreResource,
    JuiceFSResource,
    NASResource,
    ObjectStoreResource,
    PostgresResource,
    SQLiteCatalogResource,
)

from ..conftest import nas_resource_for, postgres_resource_for, seaweedfs_resource_for


def assert_clear_error(resource, backend: str, cause: str, env_var: str, secret: str = "") -> None:
    with pytest.raises(BackendError) as info:
        resource.require_healthy()
    msg = str(info.value)
    assert backend in msg and resource.address in msg, msg
    assert cause in msg, msg
    assert env_var in msg, msg
    if secret:
        assert secret not in msg


# ---- PostgreSQL ----------------------------------------------------------------------------

def test_postgres_healthy_and_usable(postgres_resource: PostgresResource) -> None:
    h = postgres_resource.health()
    assert h.ok, h
    assert "PostgreSQL" in h.detail
    with postgres_resource.connect() as conn:
        assert conn.execute("SELECT %s::int + 1", (41,)).fetchone()[0] == 42


def test_postgres_wrong_password(postgres_resource: PostgresResource) -> None:
    bad = postgres_resource.model_copy(update={"password": "not-the-password"})
    assert_clear_error(bad, "PostgreSQL", "password authentication failed", "HP_PG_PASSWORD",
                       secret="not-the-password")


@pytest.mark.fault("PostgreSQL stopped, then back: clear error, reconnect")
def test_postgres_stopped_then_back(server_factory) -> None:
    server = server_factory("postgres")
    res = postgres_resource_for(server)
    assert res.health().ok
    server.stop()
    assert_clear_error(res, "PostgreSQL", "cannot connect", "HP_PG_PORT")
    server.start()
    assert res.health().ok


def test_postgres_unreachable_port() -> None:
    res = PostgresResource(host=LOOPBACK, port=free_port(), password="x", connect_timeout_s=2)
    assert_clear_error(res, "PostgreSQL", "cannot connect", "HP_PG_HOST")


# ---- SeaweedFS / object store ----------------------------------------------------------------

def test_seaweedfs_healthy_round_trip(seaweedfs_resource) -> None:
    assert seaweedfs_resource.health().ok
    s3 = seaweedfs_resource.get_client()
    s3.put_object(Bucket="media-cache", Key="héllo/wörld.txt", Body=b"hi")
    assert s3.get_object(Bucket="media-cache", Key="héllo/wörld.txt")["Body"].read() == b"hi"


def test_object_store_wrong_keys(object_store_resource: ObjectStoreResource) -> None:
    bad = object_store_resource.model_copy(update={"aws_secret_access_key": "wrong-secret-xyz"})
    assert_clear_error(bad, "Object store", "credentials rejected",
                       "HP_OBJECT_STORE_SECRET_KEY", secret="wrong-secret-xyz")


def test_object_store_missing_bucket(object_store_resource: ObjectStoreResource) -> None:
    bad = object_store_resource.model_copy(update={"bucket": "no-such-bucket"})
    assert_clear_error(bad, "Object store", "bucket does not exist", "HP_OBJECT_STORE_BUCKET")


def test_seaweedfs_stopped(server_factory) -> None:
    server = server_factory("seaweedfs")
    res = seaweedfs_resource_for(server)
    assert res.health().ok
    server.kill()
    res = res.model_copy(update={"connect_timeout_s": 1, "max_attempts": 1})
    assert_clear_error(res, "SeaweedFS", "down", "HP_SEAWEEDFS_MASTER_URL")


def test_object_store_unreachable_port() -> None:
    res = ObjectStoreResource(endpoint_url=f"http://{LOOPBACK}:{free_port()}",
                              aws_access_key_id="k", aws_secret_access_key="s",
                              connect_timeout_s=1, max_attempts=1)
    assert_clear_error(res, "Object store", "cannot connect", "HP_OBJECT_STORE_ENDPOINT")


# ---- NAS (Samba) ------------------------------------------------------------------------------

def test_nas_smb_round_trip(nas_resource: NASResource, samba_server) -> None:
    assert nas_resource.health().ok
    fs = nas_resource.fs()
    fs.makedirs("테스트/WSOP 2024")
    with fs.open_write("테스트/WSOP 2024/Day 1 — 결승.bin") as fh:
        fh.write(b"x" * 1000)
    listed = fs.list_dir("테스트/WSOP 2024")
    assert [(e.path, e.size) for e in listed] == [("테스트/WSOP 2024/Day 1 — 결승.bin", 1000)]
    assert (samba_server.share_dir / "테스트/WSOP 2024/Day 1 — 결승.bin").stat().st_size == 1000
    with nas_resource.open_reader("테스트/WSOP 2024/Day 1 — 결승.bin") as reader:
        assert reader.read_at(990, 100) == b"x" * 10
        assert reader.bytes_read == 10
    fs.remove("테스트")
    assert fs.stat("테스트") is None


def test_nas_wrong_password(nas_resource: NASResource) -> None:
    bad = nas_resource.model_copy(update={"password": "wrong-pass-123"})
    assert_clear_error(bad, "NAS", "logon failed", "HP_NAS_PASSWORD", secret="wrong-pass-123")


@pytest.mark.fault("smbd stopped, then back: clear error, session replaced")
def test_nas_stopped_then_reconnects(server_factory) -> None:
    server = server_factory("samba")
    res = nas_resource_for(server)
    assert res.health().ok
    server.stop()
    res_fast = res.model_copy(update={"timeout_s": 2})
    assert_clear_error(res_fast, "NAS", "cannot connect", "HP_NAS_PORT")
    server.start()
    assert res.health().ok  # the cached, dropped session is replaced transparently


def test_nas_unreachable_port() -> None:
    res = NASResource(host=LOOPBACK, port=free_port(), username="u", password="p", timeout_s=2)
    assert_clear_error(res, "NAS", "cannot connect", "HP_NAS_HOST")


def test_nas_missing_local_root(tmp_path) -> None:
    res = NASResource(protocol="local", local_root=str(tmp_path / "nope"))
    assert_clear_error(res, "NAS", "mount path does not exist", "HP_NAS_LOCAL_ROOT")


# ---- Firestore ---------------------------------------------------------------------------------

def test_firestore_healthy_round_trip(firestore_resource: FirestoreResource) -> None:
    assert firestore_resource.health().ok
    db = firestore_resource.client()
    db.collection("probe").document("a").set({"n": 1})
    assert db.collection("probe").document("a").get().to_dict() == {"n": 1}


def test_firestore_stopped(server_factory) -> None:
    server = server_factory("firestore")
    res = FirestoreResource(project=server.project_id, emulator_host=server.address,
                            timeout_s=3)
    assert res.health().ok
    server.stop()
    assert_clear_error(res, "Firestore", "cannot connect", "FIRESTORE_EMULATOR_HOST")


# ---- JuiceFS hot tier, EFS, SQLite, ffprobe ------------------------------------------------------

def test_juicefs_hot_tier(hot_tier_resource: JuiceFSResource, juicefs_mount) -> None:
    assert hot_tier_resource.health().ok, hot_tier_resource.health()
    target = hot_tier_resource.path("models/llama/weights.bin")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"w" * 4096)
    assert target.read_bytes() == b"w" * 4096
    if juicefs_mount.mounted:
        info = hot_tier_resource.run_cli("info", str(target))
        assert "inode" in info and "4096" in info.replace(",", ""), info


def test_mount_gone_is_clear(tmp_path) -> None:
    res = JuiceFSResource(mount_path=str(tmp_path), require_mount=True)
    assert_clear_error(res, "JuiceFS hot tier", "not mounted", "HP_JUICEFS_MOUNT_PATH")
    efs = EFSResource(mount_path=str(tmp_path / "missing"))
    assert_clear_error(efs, "EFS mount", "does not exist", "HP_EFS_MOUNT_PATH")


def test_mounted_path_refuses_escape(efs_resource: EFSResource) -> None:
    from hybrid_pipelines.shared.nas_paths import UnsafePathError

    with pytest.raises(UnsafePathError):
        efs_resource.path("../../etc/passwd")


def test_sqlite_catalog_wal(catalog_resource: SQLiteCatalogResource) -> None:
    h = catalog_resource.health()
    assert h.ok and "wal" in h.detail.lower()


def test_sqlite_unwritable_path_is_clear() -> None:
    res = SQLiteCatalogResource(path="/proc/nope/catalog.db")
    assert_clear_error(res, "SQLite catalog", "Error", "HP_SQLITE_CATALOG_PATH")


def test_ffprobe(ffprobe_resource) -> None:
    assert ffprobe_resource.health().ok
    missing = ffprobe_resource.model_copy(update={"path": "/nonexistent/ffprobe"})
    assert_clear_error(missing, "ffprobe", "not installed", "HP_FFPROBE_PATH")
