"""The platform's settings and separate stores against real servers (issue #13 items 2, 4):
a NAS rooted at a folder of a real Samba share cannot leave it; `ai_postgres` is its own
database on the real PostgreSQL; schedule and sensor run requests carry the settings from
the environment (run config and tags, no secret); the local stack plans and creates the AI
platform's database and buckets."""

from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest

from hybrid_pipelines.dev.stack.process import LOOPBACK
from hybrid_pipelines.resources import NASResource, PostgresResource
from hybrid_pipelines.resources.build import build_resources
from hybrid_pipelines.shared.nas_paths import UnsafePathError

from ..conftest import postgres_resource_for

REPO = Path(__file__).resolve().parents[2]
SECRET = "tag-secret-" + secrets.token_hex(6)
PREFIX = "hybrid_pipelines/settings."


# ---- NAS rooted at share/dir (real Samba) ----------------------------------------------------

def test_nas_rooted_at_a_share_folder_cannot_leave_it(samba_server) -> None:
    share_dir: Path = samba_server.share_dir
    folder = f"root-{uuid.uuid4().hex[:8]}"
    (share_dir / folder).mkdir()
    outside = share_dir / f"outside-{folder}.txt"
    outside.write_bytes(b"not the jobs' file")
    os.chmod(share_dir / folder, 0o777)  # the share's account writes here (root made it)
    env = {"NAS_ROOT_PATH": f"smb://{LOOPBACK}:{samba_server.port}/{samba_server.share}/{folder}",
           "NAS_MOUNT_TYPE": "smb", "HP_NAS_USERNAME": samba_server.username,
           "HP_NAS_PASSWORD": samba_server.password}
    nas: NASResource = build_resources(env, only=("nas",))["nas"]
    assert nas.root_dir == folder and nas.health().ok, nas.health()
    fs = nas.fs()
    fs.makedirs("a")
    with fs.open_write("a/b.txt") as fh:
        fh.write(b"inside")
    assert (share_dir / folder / "a" / "b.txt").read_bytes() == b"inside"
    assert [e.path for e in fs.list_dir("")] == ["a"]  # the share root is not visible
    with fs.open_read("a/b.txt") as fh:
        assert fh.read() == b"inside"
    name = outside.name
    for path in (f"../{name}", f"..\\{name}", f"a/../../{name}", f"/{name}",
                 f"\\\\{LOOPBACK}\\{samba_server.share}\\{name}", f"C:\\{name}"):
        with pytest.raises(UnsafePathError):
            fs.open_read(path)
        with pytest.raises(UnsafePathError):
            fs.open_write(path)
        with pytest.raises(UnsafePathError):
            fs.stat(path)
        with pytest.raises(UnsafePathError):
            fs.remove(path)
    assert outside.read_bytes() == b"not the jobs' file"
    assert sorted(p.name for p in (share_dir / folder).iterdir()) == ["a"]


def test_nas_rooted_at_a_missing_folder_is_unhealthy_naming_the_setting(samba_server) -> None:
    nas = NASResource(protocol="smb", host=LOOPBACK, port=samba_server.port,
                      share=samba_server.share, username=samba_server.username,
                      password=samba_server.password, root_dir=f"missing-{uuid.uuid4().hex}")
    health = nas.health()
    assert not health.ok and "NAS_ROOT_PATH" in health.detail, health


def test_local_nas_rooted_at_a_folder_refuses_symlink_escapes(tmp_path: Path) -> None:
    mount = tmp_path / "mnt"
    (mount / "storage").mkdir(parents=True)
    (mount / ".hybrid-pipelines-nas").touch()  # the sentinel, on the mount, not the folder
    (mount / "secret.txt").write_bytes(b"outside the root")
    (mount / "storage" / "link").symlink_to(mount / "secret.txt")
    fs = NASResource(protocol="local", local_root=str(mount), root_dir="storage").fs()
    with pytest.raises(UnsafePathError):
        fs.open_read("link")
    with pytest.raises(UnsafePathError):
        fs.open_read("../secret.txt")
    with fs.open_write("ok.txt") as fh:
        fh.write(b"x")
    assert (mount / "storage" / "ok.txt").exists()


# ---- ai_postgres: the AI platform's own database ---------------------------------------------

def _pg_env(pg_server) -> dict[str, str]:
    return {"HP_PG_HOST": LOOPBACK, "HP_PG_PORT": str(pg_server.port),
            "HP_PG_USER": pg_server.user, "HP_PG_PASSWORD": pg_server.password,
            "HP_PG_DATABASE": "hybrid"}


def _current_database(pg: PostgresResource) -> str:
    with pg.connect() as conn:
        return conn.execute("SELECT current_database()").fetchone()[0]


def test_ai_postgres_is_its_own_database_on_the_same_server(pg_server) -> None:
    res = build_resources(_pg_env(pg_server), only=("postgres", "ai_postgres"))
    assert _current_database(res["postgres"]) == "hybrid"
    assert _current_database(res["ai_postgres"]) == "ai_platform"  # the stack created it
    table = f"only_in_ai_{secrets.token_hex(4)}"
    with res["ai_postgres"].connect() as conn:
        conn.execute(f"CREATE TABLE {table} (id int)")  # noqa: S608 - generated name
    try:
        with res["postgres"].connect() as conn:
            found = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0]
        assert found is None, "the file server's database sees the AI platform's table"
    finally:
        with res["ai_postgres"].connect() as conn:
            conn.execute(f"DROP TABLE {table}")  # noqa: S608


def test_ai_postgres_from_the_ai_platforms_own_variables(pg_server) -> None:
    name = f"ai_alias_{secrets.token_hex(4)}"
    admin = postgres_resource_for(pg_server, database="postgres")
    with admin.connect(autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # noqa: S608 - generated name
    env = {"POSTGRES_HOST": LOOPBACK, "POSTGRES_PORT": str(pg_server.port),
           "POSTGRES_USER": pg_server.user, "POSTGRES_PASSWORD": pg_server.password,
           "POSTGRES_DB": name, "HP_PG_HOST": "file-server-db.invalid"}
    ai = build_resources(env, only=("ai_postgres",))["ai_postgres"]
    assert ai.health().ok, ai.health()
    assert _current_database(ai) == name


# ---- schedules and sensors take the settings from the environment ----------------------------

PLATFORM_SETTINGS = {
    "CACHE_EVICTION_POLICY": "LFU", "CACHE_THRESHOLD_PERCENT": "85",
    "CACHE_EVICTION_BATCH_SIZE": "7", "SYNC_BATCH_SIZE": "9", "SYNC_MAX_RETRIES": "5",
    "HP_CACHE_CAPACITY_BYTES": "1000",
    # Secrets in the environment too: none may reach a tag.
    "SEAWEED_S3_SECRET_KEY": SECRET, "SEAWEED_S3_ACCESS_KEY": "ak-" + SECRET,
    "POSTGRES_PASSWORD": "pg-" + SECRET, "HP_NAS_PASSWORD": "nas-" + SECRET,
}


@pytest.fixture()
def platform_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith(("HP_CACHE", "HP_SYNC", "CACHE_", "SYNC_")):
            monkeypatch.delenv(key)
    for key, value in PLATFORM_SETTINGS.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def _assert_no_secret(tags: dict[str, str]) -> None:
    assert not any(SECRET in k or SECRET in v for k, v in tags.items()), tags


def _valid_for_job(job_name: str, run_config: dict) -> None:
    from hybrid_pipelines.definitions import domain_definitions

    defs = dg.Definitions.merge(domain_definitions("hybrid_cache"),
                                dg.Definitions(resources=build_resources({})))
    dg.validate_run_config(defs.resolve_job_def(job_name), run_config)


def test_schedules_run_with_the_settings_from_the_environment(
        platform_env, file_server_db: PostgresResource) -> None:
    from hybrid_pipelines.defs.hybrid_cache import audit_sensor, schedules, sensors

    # The safety-net schedules and the sensors request a run only when there is work: a
    # pending upload holding 90% of HP_CACHE_CAPACITY_BYTES=1000 (above 85%).
    _upload_as_the_file_server(file_server_db, 900)
    pg = {"postgres": file_server_db}
    with dg.instance_for_test() as instance:
        with dg.build_schedule_context(instance=instance, resources=pg) as ctx:
            eviction = schedules.cache_eviction_schedule(ctx)
            sync = schedules.pending_sync_schedule(ctx)
        with dg.build_sensor_context(instance=instance, resources=pg) as sctx:
            by_sensor = sensors.pending_sync_sensor(sctx)
        with dg.build_sensor_context(instance=instance, resources=pg) as sctx:
            others = [audit_sensor.cache_audit_sensor(sctx)]
    assert isinstance(eviction, dg.RunRequest) and isinstance(sync, dg.RunRequest)
    assert isinstance(by_sensor, dg.RunRequest)
    evict_cfg = eviction.run_config["ops"]["cache_evictions"]["config"]
    assert evict_cfg == {"capacity_bytes": 1000, "threshold": 0.85, "target": 0.75,
                         "policy": "lfu", "batch_size": 7}
    for request in (sync, by_sensor):
        assert request.run_config["ops"]["nas_replicas"]["config"] == {"batch_size": 9,
                                                                       "max_attempts": 5}
    _valid_for_job("cache_eviction", eviction.run_config)
    _valid_for_job("pending_sync", sync.run_config)
    _valid_for_job("pending_sync", by_sensor.run_config)  # with the in-process executor
    for request in (eviction, sync, by_sensor, *others):
        assert request.tags[PREFIX + "eviction_policy"] == "lfu"
        assert request.tags[PREFIX + "threshold_percent"] == "85"
        assert request.tags[PREFIX + "sync_batch_size"] == "9"
        assert "CACHE_EVICTION_POLICY" in request.tags[PREFIX + "from_platform_env"]
        _assert_no_secret(request.tags)


@pytest.fixture()
def file_server_db(pg_server) -> PostgresResource:
    """A fresh database whose file_metadata is the file server's table, created verbatim."""
    from hybrid_pipelines.sql.platform import FILE_SERVER, platform_ddl

    name = f"settings_{secrets.token_hex(4)}"
    admin = postgres_resource_for(pg_server, database="postgres")
    with admin.connect(autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # noqa: S608 - generated name
    pg = postgres_resource_for(pg_server, database=name)
    with pg.connect() as conn:
        conn.execute(platform_ddl(FILE_SERVER))
    return pg


def _upload_as_the_file_server(pg: PostgresResource, size: int) -> None:
    with pg.connect() as conn:
        conn.execute(
            "INSERT INTO file_metadata (id, original_name, stored_name, mime_type, size, hash, "
            "seaweed_fid, cache_status, nas_path, nas_status, sync_attempts) VALUES "
            "(%s, 'clip.mp4', %s, 'video/mp4', %s, %s, '3,01637037d6', 'cached', "
            "'uploads/clip.mp4', 'pending', 0)",
            (uuid.uuid4(), f"{uuid.uuid4()}.mp4", size, "0" * 64))


def test_usage_sensor_uses_the_threshold_and_tags_from_the_environment(
        platform_env, file_server_db: PostgresResource) -> None:
    from hybrid_pipelines.defs.hybrid_cache.sensors import cache_usage_sensor

    _upload_as_the_file_server(file_server_db, 900)  # 90% of HP_CACHE_CAPACITY_BYTES=1000
    platform_env.setenv("CACHE_THRESHOLD_PERCENT", "95")
    ctx = dg.build_sensor_context(resources={"postgres": file_server_db})
    skipped = cache_usage_sensor(ctx)
    assert isinstance(skipped, dg.SkipReason) and "95%" in skipped.skip_message, skipped
    platform_env.setenv("CACHE_THRESHOLD_PERCENT", "85")  # read at every tick
    ctx = dg.build_sensor_context(resources={"postgres": file_server_db}, cursor=ctx.cursor)
    request = cache_usage_sensor(ctx)
    assert isinstance(request, dg.RunRequest), request
    cfg = request.run_config["ops"]["cache_evictions"]["config"]
    assert (cfg["policy"], cfg["threshold"], cfg["batch_size"]) == ("lfu", 0.85, 7)
    assert request.tags[PREFIX + "threshold_percent"] == "85"
    assert "above 85%" in request.tags["reason"]
    _assert_no_secret(request.tags)


def test_intervals_come_from_the_environment_when_definitions_load() -> None:
    code = ("from hybrid_pipelines.defs.hybrid_cache import schedules, sensors; "
            "print(sensors.cache_health_sensor.minimum_interval_seconds, "
            "sensors.pending_sync_sensor.minimum_interval_seconds)")
    env = {"PATH": "/usr/bin:/bin", "HEALTH_CHECK_INTERVAL_MS": "15000",
           "SYNC_INTERVAL_MS": "300000"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["15", "300"], proc.stdout
    from hybrid_pipelines.defs.hybrid_cache.sensors import cache_health_sensor

    if "HEALTH_CHECK_INTERVAL_MS" not in os.environ \
            and "HP_HEALTH_CHECK_INTERVAL_MS" not in os.environ:
        assert cache_health_sensor.minimum_interval_seconds == 30  # the platform's default


# ---- the local stack: ai_platform database and the two buckets --------------------------------

def test_local_stack_plans_the_ai_platforms_stores(tmp_path: Path, pg_server,
                                                   seaweed_server) -> None:
    from hybrid_pipelines.dev.stack.local_stack import LocalStack
    from hybrid_pipelines.dev.stack.postgres import DATABASES
    from hybrid_pipelines.dev.stack.seaweedfs import SeaweedFSServer
    from hybrid_pipelines_tests.deploy.deploy_files import env_vars_read_by_code

    stack = LocalStack(state_dir=tmp_path / "stack")
    stack.servers = stack._plan()  # nothing started: the plan and its stack.env
    env = stack.env()
    assert env["HP_AI_PG_DATABASE"] == "ai_platform" and "ai_platform" in DATABASES
    assert (env["HP_AI_PG_HOST"], env["HP_AI_PG_PORT"]) == (env["HP_PG_HOST"],
                                                            env["HP_PG_PORT"])
    assert (env["HP_OBJECT_STORE_BUCKET"], env["HP_OBJECT_STORE_OUTPUTS_BUCKET"]) == (
        "cold-models", "generated-outputs")
    read = {n for n, mods in env_vars_read_by_code().items()
            if any("/resources/" in m for m in mods)}
    assert not read - {"FIRESTORE_EMULATOR_HOST"} - set(env), "stack.env lacks a variable"
    res = build_resources(env, only=("ai_postgres", "object_store"))
    assert res["ai_postgres"].database == "ai_platform"
    assert res["object_store"].outputs_bucket == "generated-outputs"
    # The planned SeaweedFS creates both buckets: on the real server, with the plan's list.
    planned = stack.servers["seaweedfs"]
    assert isinstance(planned, SeaweedFSServer)
    assert {"cold-models", "generated-outputs"} <= set(planned.buckets)
    dataclasses.replace(seaweed_server, buckets=planned.buckets).ensure_buckets()
    have = {b["Name"] for b in seaweed_server.s3_client().list_buckets()["Buckets"]}
    assert {"cold-models", "generated-outputs"} <= have
    # ... and the stack's PostgreSQL has the ai_platform database.
    admin = postgres_resource_for(pg_server, database="postgres")
    with admin.connect() as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = 'ai_platform'"
                            ).fetchone()
