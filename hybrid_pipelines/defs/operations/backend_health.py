"""Backend health, visible in the UI: an asset whose checks fail when a backend is down.

Recorded every 5 minutes by `backend_health_sensor` without a run (issue #17): the same
metadata as an observation of `backend_health` and the same `<name>_healthy` checks as check
evaluations (ERROR when down, so the alerts sensor tells a person as before). The job stays
for a run on demand."""

from concurrent.futures import ThreadPoolExecutor

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
    reports = probe_all(resources)
    for h in reports.values():
        log = context.log.info if h.ok else context.log.warning
        log(f"{h.backend} at {h.address}: {'healthy' if h.ok else 'DOWN'} ({h.detail})")
    yield dg.MaterializeResult(metadata=health_metadata(reports))
    for name, h in reports.items():
        yield dg.AssetCheckResult(check_name=f"{name}_healthy", passed=h.ok,
                                  metadata=check_metadata(h))


def probe_all(resources: dict) -> dict[str, Health]:
    """Every backend's health(), concurrently: each has its own timeout, and ten sequential
    timeouts would outlast a sensor tick."""
    with ThreadPoolExecutor(max_workers=len(BACKENDS)) as pool:
        futures = {name: pool.submit(resources[key].health) for key, name in BACKENDS.items()}
        return {name: f.result() for name, f in futures.items()}


def health_metadata(reports: dict[str, Health]) -> dict[str, float | int]:
    meta: dict[str, float | int] = {}
    for name, h in reports.items():
        meta[f"{name}_ok"] = int(h.ok)
        meta[f"{name}_latency_ms"] = h.latency_ms
    meta["healthy_backends"] = sum(h.ok for h in reports.values())
    return meta


def check_metadata(h: Health) -> dict:
    return {"address": h.address, "detail": h.detail, "latency_ms": h.latency_ms}


backend_health_job = dg.define_asset_job("backend_health_job", selection=[backend_health])
HEALTH_INTERVAL_S = 300  # as fresh as the old */5 schedule's runs


@dg.sensor(name="backend_health_sensor", minimum_interval_seconds=HEALTH_INTERVAL_S,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Every 5 minutes: every backend's health() recorded as an observation "
                       "of backend_health and its <backend>_healthy check evaluations (ERROR "
                       "when down). No run.")
def backend_health_sensor(context: dg.SensorEvaluationContext, nas: NASResource,
                          seaweedfs: SeaweedFSResource, object_store: ObjectStoreResource,
                          hot_tier: JuiceFSResource, efs: EFSResource,
                          postgres: PostgresResource, ai_postgres: PostgresResource,
                          sqlite_catalog: SQLiteCatalogResource, firestore: FirestoreResource,
                          ffprobe: FFprobeResource) -> dg.SensorResult:
    reports = probe_all(dict(nas=nas, seaweedfs=seaweedfs, object_store=object_store,
                             hot_tier=hot_tier, efs=efs, postgres=postgres,
                             ai_postgres=ai_postgres, sqlite_catalog=sqlite_catalog,
                             firestore=firestore, ffprobe=ffprobe))
    key = backend_health.key
    events: list = [dg.AssetObservation(asset_key=key, metadata={
        **health_metadata(reports), "recorded_by": dg.MetadataValue.text("sensor")})]
    for name, h in reports.items():
        events.append(dg.AssetCheckEvaluation(asset_key=key, check_name=f"{name}_healthy",
                                              passed=h.ok, metadata=check_metadata(h)))
    down = [f"{h.backend} at {h.address} ({h.detail})" for h in reports.values() if not h.ok]
    if down:
        context.log.warning("DOWN: " + "; ".join(down))
    return dg.SensorResult(asset_events=events)


defs = dg.Definitions(assets=[backend_health], jobs=[backend_health_job],
                      sensors=[backend_health_sensor])
