"""Every pool and run tag name the project's limits key on, in one place.

The limits themselves are instance configuration (the project's dagster.yaml, mirrored in
deploy/): `run_coordinator.tag_concurrency_limits` caps runs per RUN_POOL_TAG value and per
CATALOG_TAG, and `concurrency.pools.default_limit: 1` caps the catalog assets' op pool, so a
catalog run launched from the asset graph (no job tags) still has one SQLite writer."""

RUN_POOL_TAG = "hybrid_pipelines/pool"
NAS_SYNC_TAGS = {RUN_POOL_TAG: "nas_sync"}
EVICTION_TAGS = {RUN_POOL_TAG: "eviction"}
AI_TIERS_TAGS = {RUN_POOL_TAG: "ai_tiers"}

CATALOG_TAG = "hybrid_pipelines/catalog"
CATALOG_TAGS = {CATALOG_TAG: "sqlite"}
CATALOG_POOL = "hybrid_pipelines_catalog"  # op pool of the four catalog assets

TRIGGER_TAG = "hybrid_pipelines/trigger"  # what launched a run: nas_sensor, nightly, ...
