"""Hybrid-cache jobs. Pool tags are limited per instance in dagster.yaml (nas_sync: 2 runs,
eviction: 1 run)."""

import dagster as dg

from hybrid_pipelines.defs.hybrid_cache.assets import (
    cache_evictions,
    nas_replicas,
    recached_files,
    seaweedfs_cache,
)
from hybrid_pipelines.defs.hybrid_cache.checks import cache_consistency, reconcile_cache
from hybrid_pipelines.defs.pools import EVICTION_TAGS, NAS_SYNC_TAGS

pending_sync_job = dg.define_asset_job(
    "pending_sync", selection=dg.AssetSelection.assets(nas_replicas), tags=NAS_SYNC_TAGS,
    description="Copy pending uploads from SeaweedFS to the NAS (hash-verified).")
cache_eviction_job = dg.define_asset_job(
    "cache_eviction", selection=dg.AssetSelection.assets(cache_evictions), tags=EVICTION_TAGS,
    description="Evict synced files from SeaweedFS when usage is above the threshold.")
recache_job = dg.define_asset_job(
    "recache", selection=dg.AssetSelection.assets(recached_files), tags=NAS_SYNC_TAGS,
    description="Copy NAS-only uploads back into SeaweedFS once it is healthy.")
cache_stats_job = dg.define_asset_job(
    "cache_stats",
    selection=dg.AssetSelection.assets(seaweedfs_cache) - dg.AssetSelection.checks(
        cache_consistency),
    description="Measure the cache and raise the alarm checks (no audit).")
cache_consistency_audit_job = dg.define_asset_job(
    "cache_consistency_audit", selection=dg.AssetSelection.checks(cache_consistency),
    description="Compare file_metadata with SeaweedFS and the NAS; report drift.")


@dg.job(tags=EVICTION_TAGS, description="Audit and fix the safe drift; report the rest.")
def cache_reconcile() -> None:
    reconcile_cache()
