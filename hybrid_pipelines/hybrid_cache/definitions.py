"""Dagster definitions of the hybrid_cache domain."""

import dagster as dg

from .assets import cache_evictions, nas_replicas, recached_files, seaweedfs_cache
from .checks import cache_consistency
from .jobs import JOBS
from .schedules import SCHEDULES
from .sensors import SENSORS

defs = dg.Definitions(
    assets=[seaweedfs_cache, nas_replicas, cache_evictions, recached_files],
    asset_checks=[cache_consistency],
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=SENSORS,
)
