"""Request-table sensors: a row in model_promotion_requests, context_reactivation_requests or
output_deletion_requests becomes one run (run_key = table + id, so a request never runs twice).
Pending rows are read whatever the cursor says: ids from concurrent inserts can commit out of
order, and a cursor-only filter would skip the late one. The cursor records the highest id
launched, for the UI."""

from collections.abc import Callable

import dagster as dg
import psycopg

from hybrid_pipelines.ai_tiers import models
from hybrid_pipelines.defs.ai_tiers.jobs import (
    OutputDeletionConfig,
    PromotionConfig,
    ReactivationConfig,
    context_reactivation_job,
    model_promotion_job,
    output_deletion_job,
)
from hybrid_pipelines.resources import JuiceFSResource, PostgresResource
from hybrid_pipelines.resources.errors import BackendError

MAX_REQUESTS_PER_TICK = 50


def _pending(ai_postgres: PostgresResource, sql: str) -> list[tuple] | None:
    try:
        with ai_postgres.connect() as conn:
            return conn.execute(sql, (MAX_REQUESTS_PER_TICK,)).fetchall()
    except psycopg.errors.UndefinedTable:
        return None


def _result(context: dg.SensorEvaluationContext, rows: list[tuple] | None, table: str,
            make: Callable[[tuple], dg.RunRequest]) -> dg.SensorResult:
    if rows is None:
        return dg.SensorResult(skip_reason=f"table {table} does not exist yet (any ai_tiers job "
                               "creates it)")
    if not rows:
        return dg.SensorResult(skip_reason=f"no pending rows in {table}")
    high = max([int(context.cursor or 0), *(int(r[0]) for r in rows)])
    return dg.SensorResult(run_requests=[make(r) for r in rows], cursor=str(high))


RESTORE_DETAIL = "restore: the row is hot but its files are not on the hot tier"
# A restore that failed (no cold copy either) is asked again after this long, not every tick.
RESTORE_RETRY_S = 3600


def queue_restores(postgres: PostgresResource, hot: JuiceFSResource,
                   layout: models.ModelLayout) -> int:
    """A promotion request for every hot row whose files are not on the hot tier (the
    platform flips a cold row to hot on its first use and leaves the files where they are),
    unless one is pending or failed within the hour; the promotion copies them back from the
    cold tier."""
    try:
        hot.require_healthy()
        with postgres.connect() as conn:
            missing = models.hot_rows_missing_files(conn, hot, layout)
            if not missing:
                return 0
            cur = conn.execute(
                "INSERT INTO model_promotion_requests (model_id, detail) "
                "SELECT m, %s FROM unnest(%s::text[]) AS m WHERE NOT EXISTS ("
                "SELECT 1 FROM model_promotion_requests r WHERE r.model_id = m "
                "AND (r.status = 'pending' OR (r.status = 'failed' "
                "AND r.requested_at > now() - make_interval(secs => %s))))",
                (RESTORE_DETAIL, missing, RESTORE_RETRY_S))
            return cur.rowcount
    except (psycopg.errors.UndefinedTable, BackendError):
        return 0


@dg.sensor(job=model_promotion_job, minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Launches a promotion run per pending model_promotion_requests row, and "
           "queues a restore for every hot row whose files are not on the hot tier.")
def model_promotion_requests_sensor(context: dg.SensorEvaluationContext,
                                    ai_postgres: PostgresResource,
                                    hot_tier: JuiceFSResource) -> dg.SensorResult:
    queued = queue_restores(ai_postgres, hot_tier, models.ModelLayout())
    if queued:
        context.log.info(f"queued {queued} restore(s) of hot rows without hot files")
    rows = _pending(ai_postgres, "SELECT id, model_id FROM model_promotion_requests "
                    "WHERE status = 'pending' ORDER BY id LIMIT %s")
    return _result(context, rows, "model_promotion_requests", lambda r: dg.RunRequest(
        run_key=f"model_promotion_requests-{r[0]}",
        run_config=dg.RunConfig(ops={
            "promote_model": PromotionConfig(model_id=r[1], request_id=r[0])}),
        tags={"ai_tiers/model_id": r[1]}))


@dg.sensor(job=context_reactivation_job, minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Launches a reactivation run per pending context_reactivation_requests "
           "row.")
def context_reactivation_requests_sensor(context: dg.SensorEvaluationContext,
                                         ai_postgres: PostgresResource) -> dg.SensorResult:
    rows = _pending(ai_postgres, "SELECT id, user_id, conversation_id "
                    "FROM context_reactivation_requests WHERE status = 'pending' "
                    "ORDER BY id LIMIT %s")
    return _result(context, rows, "context_reactivation_requests", lambda r: dg.RunRequest(
        run_key=f"context_reactivation_requests-{r[0]}",
        run_config=dg.RunConfig(ops={"reactivate_context": ReactivationConfig(
            user_id=r[1], conversation_id=r[2], request_id=r[0])})))


@dg.sensor(job=output_deletion_job, minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Launches a deletion run per pending output_deletion_requests row.")
def output_deletion_requests_sensor(context: dg.SensorEvaluationContext,
                                    ai_postgres: PostgresResource) -> dg.SensorResult:
    rows = _pending(ai_postgres, "SELECT id, user_id, output_id::text "
                    "FROM output_deletion_requests WHERE status = 'pending' ORDER BY id LIMIT %s")
    return _result(context, rows, "output_deletion_requests", lambda r: dg.RunRequest(
        run_key=f"output_deletion_requests-{r[0]}",
        run_config=dg.RunConfig(ops={"delete_user_outputs": OutputDeletionConfig(
            user_id=r[1], output_id=r[2], request_id=r[0])})))
