"""Known secret values never reach a log line, an event, metadata or an exception message."""

from __future__ import annotations

import logging

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from hybrid_pipelines.defs.operations.backend_health import backend_health
from hybrid_pipelines.resources.build import build_resources


def _env_for(pg_server, seaweed_server, samba_server, firestore_emulator, nas_password: str):
    return {
        "HP_NAS_PROTOCOL": "smb", "HP_NAS_HOST": "127.0.0.1", "HP_NAS_PORT": str(samba_server.port),
        "HP_NAS_SHARE": samba_server.share, "HP_NAS_USERNAME": samba_server.username,
        "HP_NAS_PASSWORD": nas_password,
        "HP_SEAWEEDFS_S3_ENDPOINT": seaweed_server.address,
        "HP_SEAWEEDFS_MASTER_URL": seaweed_server.master_url,
        "HP_SEAWEEDFS_ACCESS_KEY": seaweed_server.access_key,
        "HP_SEAWEEDFS_SECRET_KEY": seaweed_server.secret_key,
        "HP_OBJECT_STORE_ENDPOINT": seaweed_server.address,
        "HP_OBJECT_STORE_ACCESS_KEY": seaweed_server.access_key,
        # a wrong secret on purpose: the failure path must not echo it either
        "HP_OBJECT_STORE_SECRET_KEY": "wrong-" + seaweed_server.secret_key,
        "HP_PG_HOST": "127.0.0.1", "HP_PG_PORT": str(pg_server.port),
        "HP_PG_PASSWORD": pg_server.password,
        "FIRESTORE_EMULATOR_HOST": firestore_emulator.address,
    }


@pytest.mark.parametrize("nas_password_ok", [True, False], ids=["healthy", "wrong-nas-password"])
def test_secrets_stay_out_of_logs_events_and_errors(
        nas_password_ok: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        pg_server, seaweed_server, samba_server, firestore_emulator, tmp_path) -> None:
    nas_password = samba_server.password if nas_password_ok else "wrong-nas-pw-" + "x" * 8
    env = _env_for(pg_server, seaweed_server, samba_server, firestore_emulator, nas_password)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HP_SQLITE_CATALOG_PATH", str(tmp_path / "c.db"))
    monkeypatch.setenv("HP_EFS_MOUNT_PATH", str(tmp_path))
    monkeypatch.setenv("HP_JUICEFS_MOUNT_PATH", str(tmp_path))
    secrets = [nas_password, seaweed_server.secret_key, "wrong-" + seaweed_server.secret_key,
               pg_server.password]
    caplog.set_level(logging.DEBUG)
    with dg.instance_for_test() as instance:
        result = dg.materialize([backend_health], resources=build_resources(),
                                instance=instance, raise_on_error=False)
        assert result.success
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks["nas_healthy"] is nas_password_ok
        assert checks["object_store_healthy"] is False  # the wrong key was really used
        assert checks["postgres_healthy"] and checks["seaweedfs_healthy"]
        records = instance.all_logs(result.run_id)
        run = instance.get_run_by_id(result.run_id)
        haystack = "\n".join([serialize_value(r) for r in records] + [serialize_value(run),
                                                                       caplog.text])
    assert seaweed_server.address in haystack  # we search the real events, not an empty string
    assert "logon failed" in haystack or nas_password_ok
    for secret in secrets:
        assert secret not in haystack, "a secret leaked into logs/events/run config"
