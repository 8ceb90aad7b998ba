"""Every resource against its real server: healthy, then down/misconfigured with an error that
names the backend, the address, the cause and the env var to fix."""

from __future__ import annotations

import dagster as dg
import pytest

from hybrid_pipelines.dev.stack.process import LOOPBACK, free_port
from hybrid_pipelines.resources import (
    BackendError,
    EFSResource,
    FFprobeResource,
    FirestoreResource,
    JuiceFSResource,
    NASResource,
    ObjectStoreResource,
    PostgresResource,
    SeaweedFSResource,
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


@pytest.mark.fault("PostgreSQL stopped, then back: clear error, reconnect", kind="server stopped")
def test_postgres_stopped_then_back(server_factory) -> None:
    server = server_factory("postgres")
    res = postgres_resource_for(server)
    assert res.health().ok
    server.stop()
    assert_clear_error(res, "PostgreSQL", "cannot connect", "HP_PG_PORT")
    server.start()
    assert res.health().ok


def test_ai_platform_database_errors_name_its_own_variables() -> None:
    """ai_postgres is another database (ai_platform): its error names HP_AI_PG_* and the
    platform's POSTGRES_*, not the file server's HP_PG_*."""
    res = PostgresResource(host=LOOPBACK, port=free_port(), password="x", connect_timeout_s=2,
                           database="ai_platform", settings_prefix="HP_AI_PG")
    assert_clear_error(res, "PostgreSQL", "cannot connect", "HP_AI_PG_HOST")
    with pytest.raises(BackendError) as info:
        res.require_healthy()
    assert "POSTGRES_HOST" in str(info.value) and "HP_PG_HOST" not in str(info.value)


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


@pytest.mark.fault("smbd stopped, then back: clear error, session replaced", kind="server stopped")
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


def test_sqlite_catalog_without_its_volume_refuses_instead_of_starting_empty(tmp_path) -> None:
    """Deployed, the catalog folder is its own volume: a pod that lacks the mount must fail,
    not create an empty catalog in scratch space (that would report every NAS file as new)."""
    res = SQLiteCatalogResource(path=str(tmp_path / "catalog" / "catalog.db"), require_mount=True)
    assert_clear_error(res, "SQLite catalog", "not a mount point",
                       "HP_SQLITE_CATALOG_REQUIRE_MOUNT")
    assert not (tmp_path / "catalog").exists()
    mounted = SQLiteCatalogResource(path="/proc/catalog.db", require_mount=True)  # /proc: a mount
    assert "not a mount point" not in mounted.health().detail


def test_ffprobe(ffprobe_resource) -> None:
    assert ffprobe_resource.health().ok
    missing = ffprobe_resource.model_copy(update={"path": "/nonexistent/ffprobe"})
    assert_clear_error(missing, "ffprobe", "not installed", "HP_FFPROBE_PATH")


# ---- resources/build.py: the one place the environment becomes resources ----------------------

# Every connection variable and secret deployed mode requires (an SMB NAS; values are never
# contacted: the tests below stop at launch or only build resources).
DEPLOYED_ENV = {
    "HP_RESOURCES_MODE": "deployed",
    "HP_NAS_PROTOCOL": "smb", "HP_NAS_HOST": "nas.invalid", "HP_NAS_PORT": "445",
    "HP_NAS_SHARE": "media", "HP_NAS_USERNAME": "svc", "HP_NAS_PASSWORD": "nas-secret-1",
    "HP_SEAWEEDFS_S3_ENDPOINT": "http://seaweedfs.invalid:8333",
    "HP_SEAWEEDFS_ACCESS_KEY": "sw-key", "HP_SEAWEEDFS_SECRET_KEY": "sw-secret-2",
    "HP_SEAWEEDFS_BUCKET": "media-cache",
    "HP_OBJECT_STORE_ACCESS_KEY": "os-key", "HP_OBJECT_STORE_SECRET_KEY": "os-secret-3",
    "HP_OBJECT_STORE_BUCKET": "cold-tier",
    "HP_JUICEFS_MOUNT_PATH": "/mnt/hot", "HP_EFS_MOUNT_PATH": "/mnt/shared",
    "HP_PG_HOST": "pg.invalid", "HP_PG_PORT": "5432", "HP_PG_USER": "hybrid",
    "HP_PG_PASSWORD": "pg-secret-4", "HP_PG_DATABASE": "hybrid",
    "HP_SQLITE_CATALOG_PATH": "/mnt/catalog/catalog.db", "HP_FIRESTORE_PROJECT": "proj",
}


@pytest.fixture()
def bare_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The process environment without any resource variable (the suite may have some)."""
    import os

    for key in list(os.environ):
        if key.startswith("HP_") or key in ("FIRESTORE_EMULATOR_HOST",
                                            "GOOGLE_APPLICATION_CREDENTIALS"):
            monkeypatch.delenv(key)
    return monkeypatch


def test_local_mode_keeps_the_stack_defaults(bare_env: pytest.MonkeyPatch) -> None:
    from hybrid_pipelines.resources.build import RESOURCE_KEYS, build_resources, resources_mode

    assert resources_mode() == "local"
    for res in (build_resources(), build_resources({})):  # Definitions, and a command's
        assert tuple(res) == RESOURCE_KEYS and "catalog_db" not in res
        assert res["postgres"].host == "127.0.0.1" and res["postgres"].port == 5432
        assert res["seaweedfs"].endpoint_url == "http://127.0.0.1:8333"
        assert res["sqlite_catalog"].path == ".local/catalog/catalog.db"
    bare_env.setenv("HP_PG_HOST", "db.example")
    host = build_resources()["postgres"].host  # an EnvVar: resolved at launch
    assert isinstance(host, dg.EnvVar) and host.env_var_name == "HP_PG_HOST"
    assert build_resources({"HP_PG_HOST": "db.example"})["postgres"].host == "db.example"


def test_deployed_mode_requires_every_connection_variable_and_secret() -> None:
    from hybrid_pipelines.resources.build import build_resources
    from hybrid_pipelines.shared.env import EnvVarError

    res = build_resources(DEPLOYED_ENV)  # complete: builds, with the deployment's values
    assert res["postgres"].host == "pg.invalid" and res["nas"].password == "nas-secret-1"
    assert res["seaweedfs"].master_url == "" and res["object_store"].endpoint_url == ""
    for name in DEPLOYED_ENV:
        if name == "HP_RESOURCES_MODE":
            continue
        env = {k: v for k, v in DEPLOYED_ENV.items() if k != name}
        with pytest.raises(EnvVarError) as err:
            build_resources(env)
        text = str(err.value)
        assert f"{name} is not set" in text and "HP_RESOURCES_MODE=deployed" in text, text
        assert not any(v in text for v in ("nas-secret-1", "sw-secret-2", "pg-secret-4"))
    # The NAS protocol decides which NAS variables are connection variables.
    local_nas = {k: v for k, v in DEPLOYED_ENV.items() if not k.startswith("HP_NAS_")}
    with pytest.raises(EnvVarError, match="HP_NAS_LOCAL_ROOT is not set"):
        build_resources({**local_nas, "HP_NAS_PROTOCOL": "local"})
    nas = build_resources({**local_nas, "HP_NAS_PROTOCOL": "local",
                           "HP_NAS_LOCAL_ROOT": "/mnt/nas"}, only=("nas",))["nas"]
    assert nas.local_root == "/mnt/nas"


def test_deployed_mode_fails_at_launch_naming_the_missing_variable(
        bare_env: pytest.MonkeyPatch, tmp_path) -> None:
    """Definitions hold a plain EnvVar per connection variable: the code location loads, and
    a run launched without HP_PG_PASSWORD stops before any step, naming the variable, instead
    of connecting to 127.0.0.1."""
    from hybrid_pipelines.defs.operations.backend_health import backend_health
    from hybrid_pipelines.resources.build import build_resources

    for key, value in DEPLOYED_ENV.items():
        if key != "HP_PG_PASSWORD":
            bare_env.setenv(key, value)
    resources = build_resources()  # loading works without the variable
    password = resources["postgres"].password
    assert isinstance(password, dg.EnvVar) and password.env_var_name == "HP_PG_PASSWORD"
    with dg.instance_for_test() as instance, pytest.raises(dg.DagsterInvalidConfigError) as err:
        dg.materialize([backend_health], resources=resources, instance=instance)
    text = str(err.value)
    assert '"HP_PG_PASSWORD"' in text and "not set" in text, text
    assert "nas-secret-1" not in text and "sw-secret-2" not in text


def test_deploy_flavours_satisfy_deployed_mode() -> None:
    """compose and the cluster manifests set HP_RESOURCES_MODE=deployed and every variable
    that mode requires."""
    from hybrid_pipelines.resources.build import build_resources, resources_mode
    from hybrid_pipelines_tests.deploy.deploy_files import compose_service_env, k8s_deployment_env

    for env in (compose_service_env("code-location"), k8s_deployment_env()):
        assert resources_mode(env) == "deployed"
        build_resources(env)  # raises naming whatever is missing


@pytest.mark.parametrize("value", ["production", "DEPLOYED-ish", "1"])
def test_a_bad_mode_is_refused_naming_the_variable_and_the_modes(value: str) -> None:
    from hybrid_pipelines.resources.build import build_resources
    from hybrid_pipelines.shared.env import EnvVarError

    for env in ({"HP_RESOURCES_MODE": value}, {**DEPLOYED_ENV, "HP_RESOURCES_MODE": value}):
        with pytest.raises(EnvVarError) as err:
            build_resources(env)
        text = str(err.value)
        assert f"HP_RESOURCES_MODE={value!r}" in text and "local" in text \
            and "deployed" in text, text


def test_a_bad_mode_stops_the_code_location_naming_it(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", "import hybrid_pipelines.definitions"],
                          env={"PATH": "/usr/bin:/bin", "HP_RESOURCES_MODE": "prod"},
                          cwd=root, capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    assert "HP_RESOURCES_MODE='prod' is not a resources mode" in proc.stderr, proc.stderr[-2000:]


def test_cli_commands_build_their_resources_with_build_py(
        bare_env: pytest.MonkeyPatch, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """No command has a builder of its own: each goes through build.py, so the mode (from the
    environment, or the stack.env a command reads) applies to it as to the Definitions."""
    from hybrid_pipelines.ai_tiers import commands as ai_commands
    from hybrid_pipelines.cli import main
    from hybrid_pipelines.hybrid_cache import commands as hc_commands
    from hybrid_pipelines.resources.build import build_resources

    assert not hasattr(hc_commands, "resources_from_env")
    # simulate-uploads: the mode and the variables come from the env file (stack.env).
    env_file = tmp_path / "stack.env"
    partial = {k: v for k, v in DEPLOYED_ENV.items() if k != "HP_PG_HOST"}
    env_file.write_text("".join(f"{k}={v}\n" for k, v in partial.items()))
    assert main(["simulate-uploads", "1", "--env-file", str(env_file)]) == 1
    err = capsys.readouterr().err
    assert "HP_PG_HOST is not set" in err and "HP_RESOURCES_MODE=deployed" in err, err
    # ... and a local stack.env is used as is, defaults for the rest.
    env_file.write_text("HP_PG_PORT=6543\nHP_PG_HOST=10.1.2.3\n")
    res = build_resources(hc_commands.connection_env(env_file),
                          only=("postgres", "seaweedfs", "nas"))
    assert (res["postgres"].host, res["postgres"].port) == ("10.1.2.3", 6543)
    assert res["seaweedfs"].endpoint_url == "http://127.0.0.1:8333"
    # ai-tiers: the process environment.
    bare_env.setenv("HP_RESOURCES_MODE", "deployed")
    assert main(["ai-tiers", "status"]) == 1
    err = capsys.readouterr().err
    # The AI platform's database (ai_postgres): each unset HP_AI_PG_*/POSTGRES_* falls back to
    # the file server's HP_PG_*, its database is ai_platform unless set.
    assert "HP_PG_HOST, HP_PG_PORT, HP_PG_USER, HP_PG_PASSWORD are not set" in err, err
    assert "HP_AI_PG_HOST" in err and "POSTGRES_HOST" in err, err
    bare_env.setenv("HP_RESOURCES_MODE", "staging")
    assert main(["ai-tiers", "status"]) == 1
    assert "HP_RESOURCES_MODE='staging' is not a resources mode" in capsys.readouterr().err
    bare_env.setenv("HP_RESOURCES_MODE", "local")
    assert ai_commands._postgres().host == "127.0.0.1"


# ---- resources own their clients -------------------------------------------------------------

def test_no_module_level_client_caches() -> None:
    import hybrid_pipelines.hybrid_cache.runtime as runtime
    import hybrid_pipelines.resources.nas as nas_module

    for module, name in ((runtime, "_CLIENTS"), (runtime, "s3_client"),
                         (runtime, "seaweed_health"), (nas_module, "_CACHES"),
                         (nas_module, "_connection_cache")):
        assert not hasattr(module, name), f"{module.__name__}.{name} is back"


def test_a_run_gets_its_own_clients_closed_at_teardown(seaweed_server, samba_server) -> None:
    sw = seaweedfs_resource_for(seaweed_server)
    nas = nas_resource_for(samba_server)
    seen: dict = {}

    @dg.asset
    def uses_backends(seaweedfs: SeaweedFSResource, nas: NASResource) -> None:
        client = seaweedfs.get_client()
        assert client is seaweedfs.get_client()  # one client for the whole run
        client.head_bucket(Bucket=seaweedfs.bucket)
        nas.fs().list_dir("")
        assert nas.connection_cache()  # the SMB session lives in the resource's own cache
        seen.update(client=client, cache=nas.connection_cache(), seaweedfs=seaweedfs)

    assert dg.materialize([uses_backends], resources={"seaweedfs": sw, "nas": nas}).success
    assert seen["cache"] == {}  # the run's SMB sessions were logged off at teardown
    assert seen["seaweedfs"] is not sw
    # Used directly (outside Dagster), the resource makes its own client on first use ...
    client = sw.get_client()
    assert client is sw.get_client() and client is not seen["client"]
    # ... and a copy with other settings never shares it.
    assert sw.model_copy(update={"max_attempts": 1}).get_client() is not client


def test_s3_resources_honour_s3resource_fields(seaweed_server) -> None:
    import botocore

    sw = seaweedfs_resource_for(seaweed_server)
    unsigned = sw.model_copy(update={"use_unsigned_session": True})
    assert unsigned.get_client().meta.config.signature_version is botocore.UNSIGNED
    anonymous = unsigned.health()  # the gateway requires our identity
    assert not anonymous.ok and "credentials rejected" in anonymous.detail, anonymous
    profile = sw.model_copy(update={"profile_name": "no-such-profile-hp"})
    h = profile.health()
    assert not h.ok and "no-such-profile-hp" in h.detail
    region = ObjectStoreResource(region_name="eu-west-3", endpoint_url=sw.endpoint_url)
    assert region.get_client().meta.region_name == "eu-west-3"
    # dagster-aws's meaning of max_attempts: retries after the first call.
    assert sw.model_copy(update={"max_attempts": 7}).get_client().meta.config.retries[
        "total_max_attempts"] == 8


# ---- one health() per backend: the cache gate and backend_health agree -------------------------

class _FakeMaster:
    """A SeaweedFS master that answers /cluster/healthz but has no volume server registered
    (how a restarted cluster looks for a few seconds)."""

    def __enter__(self) -> str:
        import http.server
        import json
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = b"" if self.path.startswith("/cluster/healthz") else json.dumps(
                    {"Topology": {"DataCenters": [{"Racks": [{"DataNodes": []}]}]}}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://{LOOPBACK}:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _health_resources(tmp_path, postgres, seaweedfs, nas) -> dict:
    (tmp_path / "efs").mkdir()
    return {"nas": nas, "seaweedfs": seaweedfs,
            "object_store": ObjectStoreResource(endpoint_url=f"http://{LOOPBACK}:{free_port()}",
                                                connect_timeout_s=1, max_attempts=1),
            "hot_tier": JuiceFSResource(mount_path=str(tmp_path / "efs")),
            "efs": EFSResource(mount_path=str(tmp_path / "efs")), "postgres": postgres,
            "ai_postgres": postgres,
            "sqlite_catalog": SQLiteCatalogResource(path=str(tmp_path / "c.db")),
            "firestore": FirestoreResource(emulator_host=f"{LOOPBACK}:{free_port()}",
                                           timeout_s=1),
            "ffprobe": FFprobeResource()}


@pytest.mark.parametrize("how", ["unreachable", "master-without-volume-servers"])
def test_cache_gate_and_backend_health_agree_when_seaweedfs_is_down(
        how: str, postgres_resource: PostgresResource, seaweed_server, tmp_path) -> None:
    from hybrid_pipelines.defs.operations.backend_health import backend_health
    from hybrid_pipelines.hybrid_cache.runtime import prepare
    from hybrid_pipelines_tests.hybrid_cache.conftest import hc_definitions, observations

    good = seaweedfs_resource_for(seaweed_server)
    (tmp_path / "nas").mkdir()
    (tmp_path / "nas" / ".hybrid-pipelines-nas").touch()  # NAS_SENTINEL: stands in for a mount
    nas = NASResource(protocol="local", local_root=str(tmp_path / "nas"))
    prepare(postgres_resource)
    with _FakeMaster() as fake_master:
        if how == "unreachable":
            sw = SeaweedFSResource(endpoint_url=f"http://{LOOPBACK}:{free_port()}",
                                   master_url=f"http://{LOOPBACK}:{free_port()}",
                                   aws_access_key_id="k", aws_secret_access_key="s",
                                   connect_timeout_s=1, max_attempts=1)
        else:  # the S3 gateway answers with our keys; the master has no volume server yet
            # (built afresh: Dagster rebuilds a run's resources from their original config,
            # so a model_copy would run with the real master)
            sw = SeaweedFSResource(endpoint_url=good.endpoint_url, master_url=fake_master,
                                   aws_access_key_id=good.aws_access_key_id,
                                   aws_secret_access_key=good.aws_secret_access_key,
                                   bucket=good.bucket)
        with postgres_resource.connect(autocommit=True) as conn:
            conn.execute("TRUNCATE file_metadata, backend_circuit, nas_path_reservations")
        with dg.instance_for_test() as instance:
            health = dg.materialize([backend_health], instance=instance,
                                    resources=_health_resources(tmp_path, postgres_resource,
                                                                sw, nas))
        check = next(e for e in health.get_asset_check_evaluations()
                     if e.check_name == "seaweedfs_healthy")
        skipped = observations(hc_definitions(postgres_resource, sw, nas)
                               .resolve_job_def("pending_sync").execute_in_process())
    detail = check.metadata["detail"].value
    assert not check.passed
    assert skipped["nas_replicas"]["skipped"] == 1
    assert skipped["nas_replicas"]["seaweed_health"] == 0
    assert detail in skipped["nas_replicas"]["skip_reason"]  # the very same health answer
    if how != "unreachable":
        assert "no volume server" in detail
    with postgres_resource.connect(autocommit=True) as conn:
        conn.execute("TRUNCATE backend_circuit")


# ---- schemas: once per process and database, not every sensor tick -------------------------------

@pytest.fixture()
def fresh_database(pg_server) -> PostgresResource:
    import secrets

    name = f"schema_once_{secrets.token_hex(4)}"
    admin = postgres_resource_for(pg_server, database="postgres")
    with admin.connect(autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # noqa: S608 - generated name
    return postgres_resource_for(pg_server, database=name)


def _tables(pg: PostgresResource) -> set[str]:
    with pg.connect() as conn:
        return {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()}


def test_schema_is_applied_once_per_process_not_every_sensor_tick(
        fresh_database: PostgresResource) -> None:
    from hybrid_pipelines.defs.hybrid_cache.sensors import cache_usage_sensor
    from hybrid_pipelines.hybrid_cache.runtime import prepare

    pg = fresh_database
    prepare(pg)
    assert "backend_circuit" in _tables(pg)
    with pg.connect(autocommit=True) as conn:
        conn.execute("DROP TABLE backend_circuit")  # a marker: only the schema creates it
    for _ in range(2):
        cache_usage_sensor(dg.build_sensor_context(resources={"postgres": pg}))
    assert "backend_circuit" not in _tables(pg)  # the ticks ran no DDL
    pg.apply_schema("hybrid_cache", force=True)
    assert "backend_circuit" in _tables(pg)


def test_sqlite_schema_once_per_process_and_again_for_a_new_file(tmp_path) -> None:
    res = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    res.apply_schema("catalog")
    with res.connect() as conn:
        conn.execute("DROP TABLE counters")
    res.apply_schema("catalog")
    with res.connect() as conn:
        assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'counters'").fetchone()
    (tmp_path / "catalog.db").unlink()
    for extra in ("-wal", "-shm"):
        (tmp_path / f"catalog.db{extra}").unlink(missing_ok=True)
    res.apply_schema("catalog")  # a new file gets the schema
    with res.connect() as conn:
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'counters'").fetchone()
