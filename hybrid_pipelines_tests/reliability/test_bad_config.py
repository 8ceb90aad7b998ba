"""Malformed configuration is refused with an error that names the setting, before any work
is done: run config of every domain's jobs, the HP_* environment variables behind the
resources and the catalog rules, and the console commands that read HP_* themselves.

Cases marked xfail(strict=True) are domain bugs reported to the lead: the bad value is
accepted silently or the error does not say which setting is wrong. Once fixed they XPASS,
which fails the run until the marker is removed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from hybrid_pipelines.defs.ai_tiers.assets import (
    SCHEMA,
    model_locations,
    user_context_exports,
    user_contexts_archive,
)
from hybrid_pipelines.defs.media_catalog.assets import (
    firestore_catalog,
    media_probes,
    nas_media_files,
)
from hybrid_pipelines.defs.operations.backend_health import backend_health
from hybrid_pipelines.dev.stack.postgres import PostgresServer
from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.dev.stack.seaweedfs import SeaweedFSServer
from hybrid_pipelines.resources import (
    FFprobeResource,
    FirestoreResource,
    JuiceFSResource,
    NASResource,
    PostgresResource,
    SeaweedFSResource,
    SQLiteCatalogResource,
)
from hybrid_pipelines.resources.build import build_resources
from hybrid_pipelines_tests.ai_tiers.conftest import NOW, days_ago
from hybrid_pipelines_tests.conftest import object_store_for, seaweedfs_resource_for
from hybrid_pipelines_tests.hybrid_cache.conftest import hc_definitions
from hybrid_pipelines_tests.media_catalog.conftest import instance_with

from .conftest import pg_for

ROOT = Path(__file__).resolve().parents[2]


def bug(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"domain bug: {reason}")


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    text = ""
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None:
            text += f"{error.cls_name}: {error.message}\n"
            error = error.cause
    return text


# ---- media catalog: run config and HP_CATALOG_* ---------------------------------------------

@pytest.fixture()
def catalog_setup(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "nas" / "Shows" / "S1").mkdir(parents=True)
    (tmp_path / "nas" / "Shows" / "S1" / "e1.mp4").write_bytes(b"x" * 100)
    (tmp_path / "nas" / ".hybrid-pipelines-nas").touch()  # NAS_SENTINEL: stands in for a mount
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    # Nothing listens on port 1: a run that gets past its settings would fail differently.
    resources = {"nas": NASResource(protocol="local", local_root=str(tmp_path / "nas")),
                 "sqlite_catalog": catalog, "ffprobe": FFprobeResource(),
                 "firestore": FirestoreResource(project="demo-bad", emulator_host="127.0.0.1:1")}
    return {"resources": resources, "catalog": catalog}


def _catalog_run(setup: dict[str, Any], asset: Any, config: dict[str, Any] | None = None
                 ) -> dg.ExecuteInProcessResult:
    run_config = {"ops": {asset.op.name: {"config": config}}} if config else {}
    return dg.materialize([asset], partition_key="Shows", instance=instance_with("Shows"),
                          resources=setup["resources"], run_config=run_config,
                          raise_on_error=False)


@pytest.mark.parametrize(("asset", "config", "message"), [
    (nas_media_files, {"batch_size": -5}, "batch size"),
    (media_probes, {"workers": 0}, "probe workers"),
    (firestore_catalog, {"batch_size": 501}, "Firestore batch size must be 1..500, got 501"),
    pytest.param(nas_media_files, {"retry_delays_s": [1, -2]}, "retry_delays_s"),
    pytest.param(nas_media_files, {"min_stable_s": -1.0}, "min_stable_s"),
], ids=["scan-batch-negative", "probe-workers-zero", "firestore-batch-501",
        "retry-delay-negative", "min-stable-negative"])
def test_catalog_run_config_errors_name_the_setting(catalog_setup: dict[str, Any], asset: Any,
                                                    config: dict[str, Any],
                                                    message: str) -> None:
    result = _catalog_run(catalog_setup, asset, config)
    assert not result.success
    text = failure_text(result)
    assert message in text, text
    assert "SettingsError" in text, text  # refused by the settings, not by a crash later


@pytest.mark.parametrize(("env", "message"), [
    ({"HP_CATALOG_RULES": "{not json"}, "catalog rules in HP_CATALOG_RULES are not JSON"),
    ({"HP_CATALOG_RULES": '{"series_dept": 2}'}, "unknown catalog rule(s) ['series_dept']"),
    ({"HP_CATALOG_RULES": "@/nonexistent/rules.json"}, "/nonexistent/rules.json"),
    ({"HP_CATALOG_PROBE_WORKERS": "two"}, "HP_CATALOG_PROBE_WORKERS='two' is not a number"),
    ({"HP_CATALOG_RETRY_DELAYS": "1,x,4"}, "HP_CATALOG_RETRY_DELAYS='1,x,4' must be"),
    ({"HP_CATALOG_QUIET_S": "-1"}, "HP_CATALOG_QUIET_S='-1' must be >= 0"),
    ({"HP_CATALOG_NAS_ROOT": "../etc"}, "climbs out of the share"),
    pytest.param({"HP_CATALOG_FIRESTORE_BATCH": "9999"}, "HP_CATALOG_FIRESTORE_BATCH"),
], ids=["rules-not-json", "rules-unknown-key", "rules-file-missing", "workers-nan",
        "delays-nan", "quiet-negative", "root-escapes", "firestore-batch-env"])
def test_catalog_env_errors_name_the_variable(catalog_setup: dict[str, Any],
                                              monkeypatch: pytest.MonkeyPatch,
                                              env: dict[str, str], message: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = _catalog_run(catalog_setup, nas_media_files)
    assert not result.success
    text = failure_text(result)
    assert message in text, text
    # Refused before the scan wrote anything.
    catalog = Path(catalog_setup["catalog"].path)
    if catalog.exists():
        import sqlite3

        with sqlite3.connect(catalog) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            assert "files" not in tables or \
                conn.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 0


# ---- resources: HP_* variables that are not numbers ------------------------------------------

@pytest.mark.parametrize("var", ["HP_NAS_PORT", "HP_PG_PORT"])
def test_resource_port_not_a_number_fails_before_the_run_naming_it(
        var: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(var, "abc")
    monkeypatch.setenv("HP_PG_PASSWORD", "pw-that-must-not-show")
    monkeypatch.setenv("HP_EFS_MOUNT_PATH", str(tmp_path))
    monkeypatch.setenv("HP_JUICEFS_MOUNT_PATH", str(tmp_path))
    monkeypatch.setenv("HP_SQLITE_CATALOG_PATH", str(tmp_path / "c.db"))
    with dg.instance_for_test() as instance, pytest.raises(dg.DagsterInvalidConfigError) as err:
        dg.materialize([backend_health], resources=build_resources(), instance=instance)
    text = str(err.value)
    assert f'"{var}"' in text and "int" in text, text
    assert "pw-that-must-not-show" not in text


@pytest.mark.parametrize("argv", [
    pytest.param(["ai-tiers", "status"]),
    pytest.param(["simulate-uploads", "1"]),
], ids=["ai-tiers-status", "simulate-uploads"])
def test_cli_port_not_a_number_is_a_clear_error(argv: list[str], tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HP_PG_PORT": "abc", "HP_NAS_PORT": "abc",
           "HP_STACK_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "hybrid_pipelines.cli", *argv], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "HP_PG_PORT" in proc.stderr, proc.stderr


def test_cache_capacity_env_not_a_number_stops_the_code_location_naming_it() -> None:
    env = {"PATH": "/usr/bin:/bin", "HP_CACHE_CAPACITY_BYTES": "50GB"}
    proc = subprocess.run([sys.executable, "-c", "import hybrid_pipelines.definitions"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "HP_CACHE_CAPACITY_BYTES='50GB' is not a whole number of bytes" in proc.stderr


# ---- hybrid cache: run config of its jobs ----------------------------------------------------

@pytest.fixture(scope="module")
def cache_defs(private_pg: PostgresServer, seaweed_server: SeaweedFSServer,
               samba_server: SambaServer) -> dg.Definitions:
    from hybrid_pipelines.hybrid_cache.runtime import prepare
    from hybrid_pipelines_tests.conftest import nas_resource_for

    pg = pg_for(private_pg)
    prepare(pg)
    return hc_definitions(pg, seaweedfs_resource_for(seaweed_server),
                          nas_resource_for(samba_server))


@pytest.mark.parametrize(("job", "op", "config", "message"), [
    ("cache_eviction", "cache_evictions", {"policy": "mru"},
     "eviction policy 'mru' is unknown; use one of: lru, lfu, fifo"),
    ("cache_eviction", "cache_evictions", {"threshold": 1.5},
     "eviction threshold must be in (0, 1], got 1.5"),
    ("cache_eviction", "cache_evictions", {"threshold": 0.7, "target": 0.9}, "target"),
    ("cache_eviction", "cache_evictions", {"capacity_bytes": 0}, "capacity_bytes"),
    ("cache_eviction", "cache_evictions", {"batch_size": -1}, "batch_size"),
    ("pending_sync", "nas_replicas", {"batch_size": -5}, "batch_size must be >= 1, got -5"),
    ("pending_sync", "nas_replicas", {"retry_delay_s": -1.0}, "retry_delay_s must be >= 0"),
    pytest.param("pending_sync", "nas_replicas", {"breaker_failures": 0}, "breaker_failures"),
    pytest.param("recache", "recached_files", {"max_files": -1}, "max_files"),
], ids=["policy-unknown", "threshold-above-1", "target-above-threshold", "capacity-zero",
        "evict-batch-negative", "sync-batch-negative", "retry-delay-negative",
        "breaker-failures-zero", "recache-max-files-negative"])
def test_cache_run_config_errors_name_the_setting(cache_defs: dg.Definitions, job: str,
                                                  op: str, config: dict[str, Any],
                                                  message: str) -> None:
    result = cache_defs.resolve_job_def(job).execute_in_process(
        run_config={"ops": {op: {"config": config}}}, raise_on_error=False)
    assert not result.success
    text = failure_text(result)
    assert message in text, text
    assert "ValueError" in text, text


def test_cache_run_config_of_the_wrong_type_is_refused_at_launch(
        cache_defs: dg.Definitions) -> None:
    with pytest.raises(dg.DagsterInvalidConfigError) as err:
        cache_defs.resolve_job_def("cache_eviction").execute_in_process(
            run_config={"ops": {"cache_evictions": {"config": {"threshold": "high"}}}})
    assert "cache_evictions:config:threshold" in str(err.value)


# ---- AI tiers: run config ----------------------------------------------------------------------

@pytest.fixture()
def ai_pg(private_pg: PostgresServer) -> PostgresResource:
    pg = pg_for(private_pg)
    pg.apply_schema(SCHEMA)
    with pg.connect() as conn:
        conn.execute("TRUNCATE user_contexts, user_contexts_archive, model_locations "
                     "RESTART IDENTITY")
        conn.execute("INSERT INTO user_contexts (user_id, conversation_id, messages, updated_at) "
                     "VALUES ('u', 'c', '[]', %s)", (days_ago(90),))
    return pg


@pytest.mark.parametrize(("asset", "config", "message"), [
    (user_contexts_archive, {"batch_size": 0}, "batch_size must be at least 1, got 0"),
    (user_contexts_archive, {"now": "yesterday"}, "config `now` = 'yesterday' is not an ISO"),
    pytest.param(user_contexts_archive, {"idle_days": -1}, "idle_days"),
    pytest.param(user_context_exports, {"expire_after_days": -5}, "expire_after_days"),
], ids=["archive-batch-zero", "now-not-a-date", "idle-days-negative", "expire-days-negative"])
def test_ai_tier_run_config_errors_name_the_setting(ai_pg: PostgresResource,
                                                    seaweed_server: SeaweedFSServer,
                                                    asset: Any, config: dict[str, Any],
                                                    message: str) -> None:
    config = {"now": NOW.isoformat(), **config}
    result = dg.materialize([asset], resources={
        "ai_postgres": ai_pg, "object_store": object_store_for(seaweed_server)},
        run_config={"ops": {asset.op.name: {"config": config}}}, raise_on_error=False)
    assert not result.success
    text = failure_text(result)
    assert message in text, text
    with ai_pg.connect() as conn:  # refused before anything moved
        assert conn.execute("SELECT count(*) FROM user_contexts").fetchone()[0] == 1


def test_negative_hot_capacity_is_refused_not_a_mass_demotion(
        ai_pg: PostgresResource, seaweed_server: SeaweedFSServer, tmp_path: Path) -> None:
    hot = JuiceFSResource(mount_path=str(tmp_path / "hot"), require_mount=False)
    model_dir = tmp_path / "hot" / "models" / "fresh-model"
    model_dir.mkdir(parents=True)
    (model_dir / "w.bin").write_bytes(b"w" * 4096)
    with ai_pg.connect() as conn:
        conn.execute("INSERT INTO model_locations (model_id, tier, size_bytes, last_access, "
                     "created_at) VALUES ('fresh-model', 'hot', 4096, %s, %s)",
                     (days_ago(1), days_ago(100)))
    store = object_store_for(seaweed_server)
    prefix = f"bad-config-{tmp_path.name}"
    try:
        result = dg.materialize(
            [model_locations], resources={"ai_postgres": ai_pg, "object_store": store,
                                          "hot_tier": hot},
            run_config={"ops": {"model_locations": {"config": {
                "now": NOW.isoformat(), "hot_capacity_bytes": -1, "cold_prefix": prefix}}}},
            raise_on_error=False)
        with ai_pg.connect() as conn:
            tier = conn.execute("SELECT tier FROM model_locations WHERE model_id = "
                                "'fresh-model'").fetchone()[0]
        assert tier == "hot" and (model_dir / "w.bin").exists()
        assert not result.success and "hot_capacity_bytes" in failure_text(result)
    finally:
        client = store.get_client()
        for obj in client.list_objects_v2(Bucket=store.bucket, Prefix=prefix).get(
                "Contents", []):
            client.delete_object(Bucket=store.bucket, Key=obj["Key"])


# ---- wrong credentials the foundation tests do not cover --------------------------------------

def test_wrong_seaweedfs_keys_skip_the_sync_without_charging_attempts(
        private_pg: PostgresServer, seaweed_server: SeaweedFSServer,
        samba_server: SambaServer) -> None:
    from hybrid_pipelines.hybrid_cache.runtime import prepare
    from hybrid_pipelines.hybrid_cache.uploads import upload_to_cache
    from hybrid_pipelines_tests.conftest import nas_resource_for

    pg = pg_for(private_pg)
    prepare(pg)
    good = seaweedfs_resource_for(seaweed_server)
    # Built afresh: model_copy(update=...) changes the object but Dagster rebuilds a run's
    # resources from their original config, so a copied resource would use the good key.
    wrong = SeaweedFSResource(endpoint_url=good.endpoint_url, master_url=good.master_url,
                              aws_access_key_id=good.aws_access_key_id,
                              aws_secret_access_key="not-the-secret-key-42", bucket=good.bucket)
    with pg.connect(autocommit=True) as conn:
        conn.execute("TRUNCATE file_metadata, backend_circuit, nas_path_reservations")
        f = upload_to_cache(conn, good.get_client(), good.bucket, "a.bin", b"a" * 100,
                            key_prefix="rel-keys/", nas_prefix="rel-keys")
    defs = hc_definitions(pg, wrong, nas_resource_for(samba_server))
    result = defs.resolve_job_def("pending_sync").execute_in_process()
    obs = [e.event_specific_data.asset_observation for e in result.get_asset_observation_events()]
    meta = {k: v.value for o in obs for k, v in o.metadata.items()}
    assert meta["skipped"] == 1 and meta["seaweed_health"] == 0
    assert "SeaweedFS" in meta["skip_reason"] and "credentials" in meta["skip_reason"], meta
    assert "not-the-secret-key-42" not in str(meta)
    with pg.connect(autocommit=True) as conn:
        row = conn.execute("SELECT nas_status, sync_attempts FROM file_metadata WHERE id = %s",
                           (f.id,)).fetchone()
    assert row == ("pending", 0)  # a configuration error burns no attempts
    good.get_client().delete_object(Bucket=good.bucket, Key=f.key)
