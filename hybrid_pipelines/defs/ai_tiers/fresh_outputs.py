"""Hourly (UTC, at :30): fresh outputs get their verified cold copy. The tick itself asks one
indexed question (is any hot output without a verified cold copy?) and launches a run only
when one is waiting, so an idle hour leaves no run behind. The run gets the scheduled time
as its `now`."""

import dagster as dg
import psycopg

from hybrid_pipelines.ai_tiers import output_cold
from hybrid_pipelines.defs.ai_tiers.assets import ColdCopiesConfig
from hybrid_pipelines.defs.ai_tiers.jobs import output_cold_copy_job
from hybrid_pipelines.resources import PostgresResource
from hybrid_pipelines.resources.errors import BackendError


def _waiting(ai_postgres: PostgresResource) -> bool | None:
    """None: the table or its column is not there yet (the first ai_tiers run adds them)."""
    try:
        with ai_postgres.connect() as conn:
            return output_cold.any_unverified(conn)
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
        return None


@dg.schedule(cron_schedule="30 * * * *", job=output_cold_copy_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Hourly: a run when a hot output has no verified cold copy yet.")
def output_cold_copy_schedule(context: dg.ScheduleEvaluationContext,
                              ai_postgres: PostgresResource
                              ) -> dg.RunRequest | dg.SkipReason:
    try:
        waiting = _waiting(ai_postgres)
    except (psycopg.OperationalError, BackendError) as exc:
        # The next tick asks again; the database outage has alarms of its own.
        return dg.SkipReason(f"could not ask ai_platform for fresh outputs: {exc}; the next "
                             "tick asks again")
    if waiting is None:
        return dg.SkipReason("generated_outputs.cold_verified_at does not exist yet (any "
                             "ai_tiers job adds it)")
    if not waiting:
        return dg.SkipReason("every hot output has a verified cold copy")
    when = context.scheduled_execution_time
    now = when.isoformat() if when is not None else None
    return dg.RunRequest(run_config=dg.RunConfig(ops={
        "generated_output_cold_copies": ColdCopiesConfig(now=now)}))
