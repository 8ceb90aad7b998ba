"""Run configuration of the hybrid-cache jobs (Dagster run config, every field defaulted).

The defaults are the platform's settings as this process sees them when definitions load
(CACHE_EVICTION_POLICY, CACHE_THRESHOLD_PERCENT, SYNC_BATCH_SIZE, ... or their HP_* names:
shared/cache_settings.py); schedules and sensors build each run's config from the settings
in force at their tick (run_config_for) and tag the run with them."""

from typing import Any

import dagster as dg
from pydantic import Field

from hybrid_pipelines.hybrid_cache.audit import AuditSettings
from hybrid_pipelines.hybrid_cache.eviction import EvictionSettings
from hybrid_pipelines.hybrid_cache.recache import RecacheSettings
from hybrid_pipelines.hybrid_cache.rules.circuit_breaker import BreakerPolicy
from hybrid_pipelines.hybrid_cache.rules.eviction_policy import (
    RECHECK_HASH_MAX_BYTES,
    RECHECK_MTIME_SKEW_S,
    Policy,
    parse_policy,
)
from hybrid_pipelines.hybrid_cache.sync import SyncSettings
from hybrid_pipelines.shared.cache_settings import (
    FALLBACK_CAPACITY_BYTES,
    CacheSettings,
    cache_settings,
    capacity_from_env,
)

__all__ = ["FALLBACK_CAPACITY_BYTES", "capacity_from_env", "run_config_for"]

# Read once when definitions load: a bad value stops loading, naming the variable.
LOADED = cache_settings()
DEFAULT_CAPACITY_BYTES = LOADED.capacity_bytes


class BreakerConfig(dg.Config):
    breaker_failures: int = Field(3, description="Consecutive failed health checks that open a "
                                                 "backend's circuit breaker.")
    breaker_cooldown_s: float = Field(60.0, description="Seconds an open breaker waits before "
                                                        "letting one trial call through.")

    def breaker_policy(self) -> BreakerPolicy:
        # Checked here, not only in BreakerPolicy, so the message names the run config field.
        if self.breaker_failures < 1:
            raise ValueError(f"breaker_failures must be >= 1, got {self.breaker_failures} "
                             "(consecutive failed health checks before the breaker opens)")
        if self.breaker_cooldown_s < 0:
            raise ValueError(f"breaker_cooldown_s must be >= 0, got {self.breaker_cooldown_s}")
        return BreakerPolicy(self.breaker_failures, self.breaker_cooldown_s)


class SyncConfig(BreakerConfig):
    batch_size: int = Field(LOADED.sync_batch_size, description="Rows claimed per batch (FOR "
                            "UPDATE SKIP LOCKED); default SYNC_BATCH_SIZE.")
    max_batches: int = Field(20, description="Batches per run; pending_sync_sensor asks for "
                             "another run while files wait.")
    max_attempts: int = Field(LOADED.sync_max_retries, description="Failed attempts before a "
                              "row is marked failed; default SYNC_MAX_RETRIES.")
    lease_timeout_s: float = Field(600.0, description="A 'syncing' row whose run stopped "
                                                      "returns to the queue after this long.")
    nas_prefix: str = Field("uploads", description="NAS folder for rows without a nas_path.")
    nas_root: str = Field("", description="NAS folder every row's nas_path must lie beneath "
                                          "('' = the whole share); a row outside fails at once.")
    retry_delay_s: float = Field(60.0, description="A failed file waits this long before its "
                                                   "next attempt.")
    files_in_flight: int = Field(LOADED.sync_files_in_flight, description="Files copied and "
                                 "verified at once per sync run (one NAS session each; runs "
                                 "are capped by the nas_sync pool); default "
                                 "HP_SYNC_FILES_IN_FLIGHT or 4.")

    def settings(self) -> SyncSettings:
        return SyncSettings(self.batch_size, self.max_batches, self.max_attempts,
                            self.lease_timeout_s, self.nas_prefix,
                            retry_delay_s=self.retry_delay_s, nas_root=self.nas_root,
                            files_in_flight=self.files_in_flight)


class EvictionConfig(BreakerConfig):
    capacity_bytes: int = Field(DEFAULT_CAPACITY_BYTES, description="Cache capacity in bytes "
                                "(default from HP_CACHE_CAPACITY_BYTES).")
    threshold: float = Field(LOADED.threshold, description="Evict when usage is above this "
                             "fraction; default CACHE_THRESHOLD_PERCENT / 100.")
    target: float = Field(LOADED.target, description="Evict down to this fraction (below "
                          "threshold; default 10 points under it).")
    policy: str = Field(LOADED.eviction_policy, description="lru (last_accessed), lfu "
                        "(access_count) or fifo (created_at); default CACHE_EVICTION_POLICY.")
    batch_size: int = Field(LOADED.eviction_batch_size, description="Files deleted per batch; "
                            "default CACHE_EVICTION_BATCH_SIZE.")
    max_files: int = Field(10_000, description="Files evicted per run at most.")
    key_prefix: str = Field("", description="Only objects under this key prefix count.")
    recheck_hash_max_bytes: int = Field(
        RECHECK_HASH_MAX_BYTES, description="NAS copies up to this size are hashed again just "
        "before their cached object is deleted; larger ones are checked by size and mtime (and "
        "hashed only when modified since their verification). 0: hash only modified copies.")
    recheck_mtime_skew_s: float = Field(
        RECHECK_MTIME_SKEW_S, description="Clock difference allowed between the NAS and the "
        "database when comparing a copy's mtime with its verification time.")

    def settings(self) -> EvictionSettings:
        policy: Policy = parse_policy(self.policy)
        return EvictionSettings(self.capacity_bytes, self.threshold, self.target, policy,
                                self.batch_size, self.max_files, self.key_prefix,
                                self.recheck_hash_max_bytes, self.recheck_mtime_skew_s)


class RecacheConfig(BreakerConfig):
    max_files: int = Field(500, description="Files copied back into the cache per run.")
    key_prefix: str = Field("uploads/", description="Key prefix for re-cached objects.")

    def settings(self) -> RecacheSettings:
        return RecacheSettings(self.max_files, self.key_prefix)


class CacheStatsConfig(BreakerConfig):
    capacity_bytes: int = Field(DEFAULT_CAPACITY_BYTES, description="Cache capacity in bytes.")
    key_prefix: str = Field("", description="Only objects under this key prefix count.")


class AuditConfig(dg.Config):
    key_prefix: str = Field("", description="Cache objects under this prefix are audited.")
    nas_prefix: str = Field("uploads", description="NAS folder walked for orphans.")
    hash_sample: int = Field(25, description="Files per side whose SHA-256 is re-read.")
    stale_partial_s: float = Field(86_400.0, description="Age after which a temporary "
                                                         "'.partial-' file counts as stale.")

    def settings(self) -> AuditSettings:
        return AuditSettings(self.key_prefix, self.nas_prefix, self.hash_sample,
                             self.stale_partial_s)


# Job name -> (asset whose config it sets, the settings it takes from CacheSettings).
_JOB_CONFIG = {
    "pending_sync": "nas_replicas",
    "cache_eviction": "cache_evictions",
    "cache_stats": "seaweedfs_cache",
}


def run_config_for(job_name: str, s: CacheSettings) -> dict[str, Any]:
    """The run config a schedule or sensor gives `job_name`: the fields the platform's
    settings decide, from `s` (every other field keeps its default)."""
    fields: dict[str, Any] = {}
    if job_name == "pending_sync":
        fields = {"batch_size": s.sync_batch_size, "max_attempts": s.sync_max_retries}
    elif job_name == "cache_eviction":
        fields = {"capacity_bytes": s.capacity_bytes, "threshold": s.threshold,
                  "target": s.target, "policy": s.eviction_policy,
                  "batch_size": s.eviction_batch_size}
    elif job_name == "cache_stats":
        fields = {"capacity_bytes": s.capacity_bytes}
    if not fields:
        return {}
    return {"ops": {_JOB_CONFIG[job_name]: {"config": fields}}}
