"""The platform's own environment variables (issue #13 item 2): each works as well as its HP_*
name, HP_* wins where both are set (a warning names both, once, never the values), bad values
are named with the fix, and NAS_ROOT_PATH in each of its forms becomes the NAS resource's
host/share/root folder or mount path. No server needed here: test_platform_settings_backends.py
holds the tests against real servers."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from hybrid_pipelines.resources.build import build_resources
from hybrid_pipelines.shared import platform_env
from hybrid_pipelines.shared.cache_settings import cache_settings, interval_cron, settings_tags
from hybrid_pipelines.shared.env import EnvVarError
from hybrid_pipelines.shared.nas_root import NASRoot, parse_nas_root

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-value-never-logged"


@pytest.fixture()
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The once-per-process memory of warnings, emptied for this test."""
    monkeypatch.setattr(platform_env, "_WARNED", set())


def test_each_platform_name_works_as_its_hp_name() -> None:
    env = {"SEAWEED_S3_ENDPOINT": "http://sw.example:8333",
           "SEAWEED_MASTER_URL": "http://sw.example:9333",
           "SEAWEED_S3_ACCESS_KEY": "platform-key", "SEAWEED_S3_SECRET_KEY": SECRET,
           "SEAWEED_S3_BUCKET": "file-cache", "SEAWEED_TIMEOUT_MS": "2500",
           "NAS_TIMEOUT_MS": "7000", "POSTGRES_HOST": "ai-db.example", "POSTGRES_PORT": "6432",
           "POSTGRES_DB": "ai_platform", "POSTGRES_USER": "platform",
           "POSTGRES_PASSWORD": "pw"}
    res = build_resources(env)
    sw, ai, nas = res["seaweedfs"], res["ai_postgres"], res["nas"]
    assert (sw.endpoint_url, sw.master_url, sw.bucket) == (
        "http://sw.example:8333", "http://sw.example:9333", "file-cache")
    assert (sw.aws_access_key_id, sw.aws_secret_access_key) == ("platform-key", SECRET)
    assert sw.connect_timeout_s == 2.5 and nas.timeout_s == 7.0
    assert (ai.host, ai.port, ai.database, ai.user, ai.password) == (
        "ai-db.example", 6432, "ai_platform", "platform", "pw")
    assert res["postgres"].host == "127.0.0.1"  # the file server's database is another one


def test_definitions_read_the_platform_variable_at_launch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Definitions hold an EnvVar of the variable that is really set, so a secret set under
    the platform's name is still resolved at launch, never stored in run config."""
    monkeypatch.delenv("HP_SEAWEEDFS_SECRET_KEY", raising=False)
    monkeypatch.setenv("SEAWEED_S3_SECRET_KEY", SECRET)
    key = build_resources()["seaweedfs"].aws_secret_access_key
    assert isinstance(key, dg.EnvVar) and key.env_var_name == "SEAWEED_S3_SECRET_KEY"


def test_hp_name_wins_and_one_warning_names_both_without_values(
        fresh_warnings: None, caplog: pytest.LogCaptureFixture) -> None:
    env = {"HP_SEAWEEDFS_SECRET_KEY": "hp-" + SECRET, "SEAWEED_S3_SECRET_KEY": SECRET,
           "HP_CACHE_EVICTION_POLICY": "lfu", "CACHE_EVICTION_POLICY": "FIFO"}
    with caplog.at_level(logging.WARNING, logger="hybrid_pipelines.settings"):
        res = build_resources(env)
        settings = cache_settings(env)
        build_resources(env)  # again: no second warning in this process
    assert res["seaweedfs"].aws_secret_access_key == "hp-" + SECRET
    assert settings.eviction_policy == "lfu"
    texts = [r.getMessage() for r in caplog.records]
    secret_warnings = [t for t in texts if "SEAWEED_S3_SECRET_KEY" in t]
    assert len(secret_warnings) == 1, texts
    assert "HP_SEAWEEDFS_SECRET_KEY" in secret_warnings[0]
    assert "using HP_SEAWEEDFS_SECRET_KEY" in secret_warnings[0]
    assert len([t for t in texts if "CACHE_EVICTION_POLICY" in t]) == 1, texts
    assert not any(SECRET in t for t in texts)


@pytest.mark.parametrize(("name", "value", "expect"), [
    ("CACHE_THRESHOLD_PERCENT", "abc", "CACHE_THRESHOLD_PERCENT='abc' is not a whole number; "
                                       "set it to a whole number from 1 to 100"),
    ("CACHE_THRESHOLD_PERCENT", "150", "CACHE_THRESHOLD_PERCENT='150' is out of range"),
    ("HP_SYNC_BATCH_SIZE", "0", "HP_SYNC_BATCH_SIZE='0' is out of range"),
    ("SYNC_MAX_RETRIES", "three", "SYNC_MAX_RETRIES='three' is not a whole number"),
    ("CACHE_EVICTION_POLICY", "MRU", "CACHE_EVICTION_POLICY='MRU' is not one of LRU, LFU, FIFO"),
    ("HEALTH_CHECK_INTERVAL_MS", "10", "HEALTH_CHECK_INTERVAL_MS='10' is out of range"),
])
def test_a_bad_setting_names_the_variable_the_value_and_the_fix(
        name: str, value: str, expect: str) -> None:
    with pytest.raises(EnvVarError) as err:
        cache_settings({name: value})
    text = str(err.value)
    assert expect in text, text
    assert "unset it for the default" in text, text


def test_a_bad_timeout_is_reported_by_commands_with_the_other_problems() -> None:
    with pytest.raises(EnvVarError) as err:
        build_resources({"NAS_TIMEOUT_MS": "ten", "SEAWEED_TIMEOUT_MS": "-1"})
    text = str(err.value)
    assert "NAS_TIMEOUT_MS='ten' is not a whole number" in text, text
    assert "SEAWEED_TIMEOUT_MS='-1' is out of range" in text, text


def test_a_bad_setting_stops_the_code_location_naming_it() -> None:
    proc = subprocess.run([sys.executable, "-c", "import hybrid_pipelines.definitions"],
                          env={"PATH": "/usr/bin:/bin", "CACHE_THRESHOLD_PERCENT": "abc"},
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    assert "CACHE_THRESHOLD_PERCENT='abc' is not a whole number" in proc.stderr, \
        proc.stderr[-2000:]


# ---- NAS_ROOT_PATH ---------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "mount_type", "expect"), [
    (r"\\nas01\Web\storage", "unc", ("smb", "nas01", None, "Web", "storage", "")),
    (r"\\nas01\Web\storage\uploads\\", "", ("smb", "nas01", None, "Web", "storage/uploads", "")),
    ("//nas01/Web", "smb", ("smb", "nas01", None, "Web", "", "")),
    ("smb://nas01:1445/Web/storage/a", "smb", ("smb", "nas01", 1445, "Web", "storage/a", "")),
    ("SMB://nas01/Web/storage", "", ("smb", "nas01", None, "Web", "storage", "")),
    ("/mnt/nas/storage/", "nfs", ("local", "", None, "", "", "/mnt/nas/storage")),
    ("/mnt/nas", "", ("local", "", None, "", "", "/mnt/nas")),
])
def test_nas_root_path_forms(raw: str, mount_type: str, expect: tuple) -> None:
    spec = parse_nas_root(raw, mount_type)
    assert (spec.protocol, spec.host, spec.port, spec.share, spec.root_dir,
            spec.local_root) == expect


@pytest.mark.parametrize(("raw", "mount_type", "expect"), [
    (r"\\nas01\Web\storage", "nfs", "NAS_MOUNT_TYPE=nfs expects the path"),
    ("/mnt/nas", "unc", "NAS_MOUNT_TYPE=unc expects an SMB location"),
    ("storage/relative", "", "neither a UNC path"),
    (r"\\nas01", "unc", "names no host and share"),
    (r"\\nas01\Web\..\etc", "unc", "unusable folder"),
    ("/mnt/nas", "cifs", "NAS_MOUNT_TYPE='cifs' is not one of unc, nfs, smb"),
])
def test_a_bad_nas_root_path_is_named_with_the_forms_that_work(
        raw: str, mount_type: str, expect: str) -> None:
    with pytest.raises(EnvVarError) as err:
        build_resources({"NAS_ROOT_PATH": raw, "NAS_MOUNT_TYPE": mount_type})
    assert expect in str(err.value), str(err.value)


def test_nas_root_path_configures_the_nas_resource(
        fresh_warnings: None, caplog: pytest.LogCaptureFixture) -> None:
    nas = build_resources({"NAS_ROOT_PATH": r"\\nas01\Web\storage", "NAS_MOUNT_TYPE": "unc"},
                          only=("nas",))["nas"]
    assert (nas.protocol, nas.host, nas.port, nas.share, nas.root_dir) == (
        "smb", "nas01", 445, "Web", "storage")
    assert nas.address == "smb://nas01:445/Web/storage"
    assert nas.root_forms() == (r"\\nas01\Web\storage", "//nas01/Web/storage",
                                "smb://nas01/Web/storage", "smb://nas01:445/Web/storage")
    local = build_resources({"NAS_ROOT_PATH": "/mnt/nas/storage", "NAS_MOUNT_TYPE": "nfs"},
                            only=("nas",))["nas"]
    assert (local.protocol, local.local_root, local.root_dir) == ("local", "/mnt/nas/storage", "")
    assert local.root_forms() == ("/mnt/nas/storage",)
    # HP_NAS_HOST set as well: it wins, the rest still comes from NAS_ROOT_PATH.
    with caplog.at_level(logging.WARNING, logger="hybrid_pipelines.settings"):
        mixed = build_resources({"NAS_ROOT_PATH": r"\\nas01\Web\storage",
                                 "HP_NAS_HOST": "nas02.internal"}, only=("nas",))["nas"]
    assert (mixed.host, mixed.share, mixed.root_dir) == ("nas02.internal", "Web", "storage")
    assert any("HP_NAS_HOST and NAS_ROOT_PATH" in r.getMessage() for r in caplog.records)


def test_deployed_mode_accepts_nas_root_path_for_host_and_share() -> None:
    from hybrid_pipelines_tests.foundation.test_resources import DEPLOYED_ENV

    env = {k: v for k, v in DEPLOYED_ENV.items() if k not in ("HP_NAS_HOST", "HP_NAS_SHARE")}
    nas = build_resources({**env, "NAS_ROOT_PATH": "smb://nas01/Web/storage"})["nas"]
    assert (nas.host, nas.share, nas.root_dir) == ("nas01", "Web", "storage")
    with pytest.raises(EnvVarError) as err:  # without either: both names are told
        build_resources({k: v for k, v in DEPLOYED_ENV.items()
                         if k != "HP_SEAWEEDFS_S3_ENDPOINT"})
    text = str(err.value)
    assert "HP_SEAWEEDFS_S3_ENDPOINT is not set" in text
    assert "SEAWEED_S3_ENDPOINT for HP_SEAWEEDFS_S3_ENDPOINT" in text, text


def test_nas_root_description_for_a_platform_mount() -> None:
    root = NASRoot("smb", host="nas01", port=445, share="Web", root_dir="storage",
                   mount_path="/mnt/nas/storage/")
    assert root.forms()[-1] == "/mnt/nas/storage"
    assert NASRoot("smb", host="nas01", share="Web").forms()[0] == r"\\nas01\Web"


# ---- effective settings, tags ----------------------------------------------------------------

def test_defaults_are_the_platform_defaults() -> None:
    s = cache_settings({})
    assert (s.eviction_policy, s.threshold_percent, s.eviction_batch_size, s.sync_interval_ms,
            s.sync_batch_size, s.sync_max_retries, s.health_check_interval_ms,
            s.seaweed_timeout_ms, s.nas_timeout_ms) == ("lru", 80, 100, 60000, 50, 3, 30000,
                                                        5000, 10000)
    assert (s.threshold, s.target, s.health_check_interval_s) == (0.8, 0.7, 30)


@pytest.mark.parametrize(("ms", "cron"), [(60_000, "* * * * *"), (30_000, "* * * * *"),
                                          (300_000, "*/5 * * * *"), (90_000, "*/2 * * * *"),
                                          (7_200_000, "0 */2 * * *")])
def test_sync_interval_becomes_a_cron(ms: int, cron: str) -> None:
    assert interval_cron(ms) == cron


def test_tags_carry_the_settings_and_no_secret() -> None:
    env = {"CACHE_EVICTION_POLICY": "LFU", "SEAWEED_S3_SECRET_KEY": SECRET,
           "SEAWEED_S3_ACCESS_KEY": "AKIA-" + SECRET, "POSTGRES_PASSWORD": "pg-" + SECRET,
           "HP_NAS_PASSWORD": "nas-" + SECRET,
           "SEAWEED_MASTER_URL": f"http://admin:{SECRET}@sw.example:9333",
           "NAS_ROOT_PATH": r"\\nas01\Web\storage"}
    tags = settings_tags(env)
    prefix = "hybrid_pipelines/settings."
    assert tags[prefix + "eviction_policy"] == "lfu"
    assert tags[prefix + "threshold_percent"] == "80"
    assert tags[prefix + "seaweedfs_master_url"] == "http://sw.example:9333"
    assert tags[prefix + "nas_root"] == "smb://nas01/Web/storage"
    assert "CACHE_EVICTION_POLICY" in tags[prefix + "from_platform_env"]
    assert all(k.startswith(prefix) for k in tags)
    assert not any(SECRET in k or SECRET in v for k, v in tags.items()), tags
