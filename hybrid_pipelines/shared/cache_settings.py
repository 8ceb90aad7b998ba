"""The hybrid cache's effective settings, as the platform's file server has them (design 000):
eviction policy, threshold and batch, sync interval, batch and retries, health-check
interval, backend timeouts; each an HP_* variable or the platform's own name (the alias table
in shared/platform_env.py). Schedules and sensors read them at every tick, the run config
defaults when definitions load; every run carries them as tags (settings_tags), secrets never.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit, urlunsplit

from hybrid_pipelines.shared.env import EnvVarError
from hybrid_pipelines.shared.platform_env import (
    NAS_ROOT_VARS,
    ResolvedEnv,
    read_choice,
    read_int,
    resolve,
)

POLICIES = ("lru", "lfu", "fifo")
CAPACITY_VAR = "HP_CACHE_CAPACITY_BYTES"
FALLBACK_CAPACITY_BYTES = 50 * 2**30
SETTINGS_TAG_PREFIX = "hybrid_pipelines/settings."
# Below the threshold by this much: what one eviction run frees down to (80% -> 70%).
TARGET_MARGIN = 0.1


@dataclass(frozen=True)
class CacheSettings:
    eviction_policy: str = "lru"
    threshold_percent: int = 80
    eviction_batch_size: int = 100
    sync_interval_ms: int = 60_000
    sync_batch_size: int = 50
    sync_max_retries: int = 3
    health_check_interval_ms: int = 30_000
    seaweed_timeout_ms: int = 5_000
    nas_timeout_ms: int = 10_000
    capacity_bytes: int = FALLBACK_CAPACITY_BYTES
    sync_files_in_flight: int = 4

    @property
    def threshold(self) -> float:
        """CACHE_THRESHOLD_PERCENT as the fraction the eviction rules take."""
        return self.threshold_percent / 100

    @property
    def target(self) -> float:
        """Where an eviction run stops: 10 points below the threshold (0.7 at 80%)."""
        return round(max(0.0, self.threshold - TARGET_MARGIN), 4)

    @property
    def sync_interval_s(self) -> int:
        return max(1, -(-self.sync_interval_ms // 1000))

    @property
    def health_check_interval_s(self) -> int:
        return max(1, -(-self.health_check_interval_ms // 1000))


def capacity_from_env(env: Mapping[str, str] | None = None) -> int:
    """HP_CACHE_CAPACITY_BYTES: a deployment fact (no platform name: the file server's own
    threshold is relative to the SeaweedFS volume it sees)."""
    raw = (os.environ if env is None else env).get(CAPACITY_VAR, "")
    try:
        value = int(raw) if raw else FALLBACK_CAPACITY_BYTES
    except ValueError:
        raise ValueError(f"{CAPACITY_VAR}={raw!r} is not a whole number of bytes") from None
    if value <= 0:
        raise ValueError(f"{CAPACITY_VAR} must be positive, got {value}")
    return value


def cache_settings(env: Mapping[str, str] | None = None) -> CacheSettings:
    """The effective settings from `env` (default: the process environment, read now).
    Raises EnvVarError naming the variable really set, its value and the fix."""
    e = resolve(os.environ if env is None else env)
    d = CacheSettings()
    return CacheSettings(
        eviction_policy=read_choice(e, "HP_CACHE_EVICTION_POLICY", d.eviction_policy, POLICIES),
        threshold_percent=read_int(e, "HP_CACHE_THRESHOLD_PERCENT", d.threshold_percent,
                                   minimum=1, maximum=100, unit=" of percent"),
        eviction_batch_size=read_int(e, "HP_CACHE_EVICTION_BATCH_SIZE", d.eviction_batch_size,
                                     minimum=1, maximum=100_000),
        sync_interval_ms=read_int(e, "HP_SYNC_INTERVAL_MS", d.sync_interval_ms,
                                  minimum=1000, unit=" of milliseconds"),
        sync_batch_size=read_int(e, "HP_SYNC_BATCH_SIZE", d.sync_batch_size,
                                 minimum=1, maximum=100_000),
        sync_max_retries=read_int(e, "HP_SYNC_MAX_RETRIES", d.sync_max_retries,
                                  minimum=1, maximum=1000),
        health_check_interval_ms=read_int(e, "HP_HEALTH_CHECK_INTERVAL_MS",
                                          d.health_check_interval_ms, minimum=1000,
                                          unit=" of milliseconds"),
        seaweed_timeout_ms=read_int(e, "HP_SEAWEEDFS_TIMEOUT_MS", d.seaweed_timeout_ms,
                                    minimum=1, unit=" of milliseconds"),
        nas_timeout_ms=read_int(e, "HP_NAS_TIMEOUT_MS", d.nas_timeout_ms, minimum=1,
                                unit=" of milliseconds"),
        capacity_bytes=capacity_from_env(e),
        sync_files_in_flight=read_int(e, "HP_SYNC_FILES_IN_FLIGHT", d.sync_files_in_flight,
                                      minimum=1, maximum=32))


def interval_cron(interval_ms: int) -> str:
    """A cron schedule that runs about every `interval_ms` (cron counts whole minutes, so a
    shorter interval runs every minute, as the platform's 60 s default does)."""
    minutes = max(1, -(-interval_ms // 60_000))
    if minutes == 1:
        return "* * * * *"
    if minutes < 60:
        return f"*/{minutes} * * * *"
    hours = -(-minutes // 60)
    return f"0 */{hours} * * *" if hours < 24 else "0 0 * * *"


def _without_userinfo(url: str) -> str:
    """An address fit for a tag: user:password@ taken out of a URL."""
    parts = urlsplit(url)
    if not parts.username and not parts.password:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _nas_root(e: ResolvedEnv) -> str:
    if e.get("HP_NAS_PROTOCOL", "").strip() == "local":
        where = e.get("HP_NAS_LOCAL_ROOT", "")
    else:
        where = f"smb://{e.get('HP_NAS_HOST', '')}/{e.get('HP_NAS_SHARE', '')}"
    root_dir = e.get("HP_NAS_ROOT_DIR", "").strip("/")
    return f"{where}/{root_dir}" if root_dir else where


def settings_tags(env: Mapping[str, str] | None = None,
                  settings: CacheSettings | None = None) -> dict[str, str]:
    """Run tags `hybrid_pipelines/settings.<name>`: the effective cache settings, where the
    hybrid cache's backends are (no credential, no password in a URL), and which of the
    platform's own variable names supplied a value. Never a secret: only values named here
    are tagged, none of them a key or password."""
    e = resolve(os.environ if env is None else env)
    s = settings or cache_settings(e)
    tags = {f"{SETTINGS_TAG_PREFIX}{k}": str(v) for k, v in asdict(s).items()}
    for name, key in (("HP_SEAWEEDFS_S3_ENDPOINT", "seaweedfs_s3_endpoint"),
                      ("HP_SEAWEEDFS_MASTER_URL", "seaweedfs_master_url"),
                      ("HP_SEAWEEDFS_BUCKET", "seaweedfs_bucket")):
        if e.get(name):
            tags[SETTINGS_TAG_PREFIX + key] = _without_userinfo(e[name])
    if any(v in e for v in NAS_ROOT_VARS):
        tags[SETTINGS_TAG_PREFIX + "nas_root"] = _without_userinfo(_nas_root(e))
    used = sorted(set(e.aliased().values()))
    if used:
        tags[SETTINGS_TAG_PREFIX + "from_platform_env"] = ",".join(used)
    return tags


__all__ = ["CacheSettings", "EnvVarError", "cache_settings", "capacity_from_env",
           "interval_cron", "settings_tags"]
