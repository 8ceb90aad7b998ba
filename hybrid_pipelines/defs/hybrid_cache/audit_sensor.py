"""The consistency audit without an hourly run flood (issue #17): every hour a sensor compares
a fingerprint of file_metadata (rows, newest write) with the one it saw at the last audit and
requests the audit only when it changed, or when a day has passed without one (drift made
outside the metadata, such as a file deleted from the NAS by hand, changes no row)."""

import time

import dagster as dg
import psycopg

from hybrid_pipelines.defs.hybrid_cache.jobs import cache_consistency_audit_job
from hybrid_pipelines.defs.hybrid_cache.schedules import settings_run_request
from hybrid_pipelines.hybrid_cache.queue_probe import metadata_fingerprint, prepare_serialised
from hybrid_pipelines.hybrid_cache.rules.sensor_decisions import audit_decision
from hybrid_pipelines.resources import PostgresResource
from hybrid_pipelines.resources.errors import BackendError

AUDIT_INTERVAL_S = 3600
AUDIT_MAX_AGE_S = 86400.0


@dg.sensor(job=cache_consistency_audit_job, minimum_interval_seconds=AUDIT_INTERVAL_S,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Hourly: requests cache_consistency_audit when file_metadata changed "
                       "since the last audit (row count, newest created_at/updated_at), and "
                       "once a day regardless.")
def cache_audit_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    try:
        prepare_serialised(postgres)
        with postgres.connect(autocommit=True) as conn:
            fingerprint = metadata_fingerprint(conn)
    except (psycopg.OperationalError, BackendError) as exc:
        # The outage has alarms of its own (backend_health_sensor); the next tick asks again.
        return dg.SkipReason(f"could not read file_metadata: {exc}; the next tick asks again")
    decision = audit_decision(context.cursor, fingerprint, time.time(), AUDIT_MAX_AGE_S)
    context.update_cursor(decision.cursor)
    if not decision.request:
        return dg.SkipReason(decision.reason)
    return settings_run_request(cache_consistency_audit_job.name,
                                run_key=f"audit:{fingerprint}:{int(time.time())}",
                                tags={"reason": decision.reason})
