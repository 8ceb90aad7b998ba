"""The EFS model mirror without an hourly run (issue #17): every 10 minutes a sensor lists the
model prefixes (one ListObjectsV2 page per 1,000 objects) and compares them with the mirror's
manifest and the files on the mount, and requests efs_model_sync_job only when an object is
new or changed or its file was edited or removed. The run key is a digest of that work, so an
unchanged backlog is requested once, and retried hourly if a run could not finish it."""

import hashlib

import dagster as dg
import psycopg
from botocore.exceptions import BotoCoreError, ClientError

from hybrid_pipelines.ai_tiers import efs_sync
from hybrid_pipelines.defs.ai_tiers.assets import SCHEMA, EfsSyncConfig
from hybrid_pipelines.defs.ai_tiers.jobs import efs_model_sync_job
from hybrid_pipelines.defs.run_keys import work_key
from hybrid_pipelines.resources import EFSResource, ObjectStoreResource, PostgresResource
from hybrid_pipelines.resources.errors import BackendError

EFS_CHECK_INTERVAL_S = 600
RETRY_S = 3600.0


def _digest(objects: list[efs_sync.RemoteObject]) -> str:
    h = hashlib.sha256()
    for obj in sorted(objects, key=lambda o: o.key):
        h.update(f"{obj.key}\x1f{obj.size}\x1f{obj.etag}\n".encode())
    return f"{len(objects)}-{h.hexdigest()[:16]}"


@dg.sensor(job=efs_model_sync_job, minimum_interval_seconds=EFS_CHECK_INTERVAL_S,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Every 10 minutes: lists the model prefixes and requests "
                       "efs_model_sync_job only when an object is new or changed, or its "
                       "mirrored file was edited or removed (manifest + stat, no download).")
def efs_model_sync_sensor(context: dg.SensorEvaluationContext, ai_postgres: PostgresResource,
                          object_store: ObjectStoreResource, efs: EFSResource):
    config = EfsSyncConfig()
    try:
        efs.require_healthy()
        ai_postgres.apply_schema(SCHEMA)
        with ai_postgres.connect() as conn:
            waiting = efs_sync.out_of_date(conn, object_store.get_client(),
                                           config.source_bucket, efs.path(config.dest_dir),
                                           config.prefixes)
    except (BackendError, psycopg.OperationalError, BotoCoreError, ClientError) as exc:
        # backend_health_sensor alarms on the outage; the next tick asks again.
        return dg.SkipReason(f"could not compare s3://{config.source_bucket} with the EFS "
                             f"mirror: {exc}; the next tick asks again")
    if not waiting:
        return dg.SkipReason(f"the EFS mirror of s3://{config.source_bucket} is up to date")
    key = work_key(context, "efs", _digest(waiting), retry_after_s=RETRY_S)
    if key is None:
        return dg.SkipReason(f"{len(waiting)} objects still differ after the last run; "
                             f"retried {RETRY_S / 3600:.0f} h after it ended")
    return dg.RunRequest(run_key=key, tags={"reason": f"{len(waiting)} objects to mirror"})
