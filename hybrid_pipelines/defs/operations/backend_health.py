"""Backend health, visible in the UI: an asset whose checks fail when a backend is down."""


import dagster as dg

from hybrid_pipelines.resources import (
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
from hybrid_pipelines.resources.errors import Health

# Resource key -> the name its check and metadata carry. The names are run history (check
# `catalog_db_healthy`, metadata `catalog_db_ok`), so they stay when a resource key changes:
# the SQLite catalog's resource is `sqlite_catalog`, its check still `catalog_db_healthy`.
BACKENDS: dict[str, str] = {
    "nas": "nas", "seaweedfs": "seaweedfs", "object_store": "object_store",
    "hot_tier": "hot_tier", "efs": "efs", "postgres": "postgres",
    "ai_postgres": "ai_postgres", "sqlite_catalog": "catalog_db", "firestore": "firestore",
    "ffprobe": "ffprobe",
}


@dg.asset(
    group_name="operations",
    description="Health of every backend (reachability, latency): each resource's own "
                "health(), the same checks the jobs gate on. Checks fail per backend.",
    check_specs=[dg.AssetCheckSpec(f"{name}_healthy", asset="backend_health")
                 for name in BACKENDS.values()],
)
def backend_health(context: dg.AssetExecutionContext, nas: NASResource,
                   seaweedfs: SeaweedFSResource, object_store: ObjectStoreResource,
                   hot_tier: JuiceFSResource, efs: EFSResource, postgres: PostgresResource,
                   ai_postgres: PostgresResource, sqlite_catalog: SQLiteCatalogResource,
                   firestore: FirestoreResource, ffprobe: FFprobeResource):
    # postgres: the file server's database; ai_postgres: the AI platform's (ai_platform).
    resources = dict(nas=nas, seaweedfs=seaweedfs, object_store=object_store, hot_tier=hot_tier,
                     efs=efs, postgres=postgres, ai_postgres=ai_postgres,
                     sqlite_catalog=sqlite_catalog, firestore=firestore, ffprobe=ffprobe)
    reports: dict[str, Health] = {name: resources[key].health()
                                  for key, name in BACKENDS.items()}
    meta: dict[str, float | int] = {}
    for name, h in reports.items():
        meta[f"{name}_ok"] = int(h.ok)
        meta[f"{name}_latency_ms"] = h.latency_ms
        log = context.log.info if h.ok else context.log.warning
        log(f"{h.backend} at {h.address}: {'healthy' if h.ok else 'DOWN'} ({h.detail})")
    meta["healthy_backends"] = sum(h.ok for h in reports.values())
    yield dg.MaterializeResult(metadata=meta)
    for name, h in reports.items():
        yield dg.AssetCheckResult(
            check_name=f"{name}_healthy", passed=h.ok,
            metadata={"address": h.address, "detail": h.detail, "latency_ms": h.latency_ms})


backend_health_job = dg.define_asset_job("backend_health_job", selection=[backend_health])
backend_health_schedule = dg.ScheduleDefinition(
    job=backend_health_job, cron_schedule="*/5 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING)

defs = dg.Definitions(assets=[backend_health], jobs=[backend_health_job],
                      schedules=[backend_health_schedule])
