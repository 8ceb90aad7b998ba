"""A tiny code location for the load test: one sensor that asks for 50 runs at once.

Kept apart from the project's definitions so that each launched run process imports little and
the test measures the run coordinator, not our imports."""

import time

import dagster as dg

RUNS = 50
POOL_RUNS = 10  # of which this many carry the nas_sync pool tag (limit 2 in dagster.yaml)


@dg.op
def hold(context: dg.OpExecutionContext) -> None:
    time.sleep(3.0)  # long enough for runs to overlap, so the limits are really exercised
    context.log.info("held")


# In-process: one process per run instead of one more per step.
@dg.job(executor_def=dg.in_process_executor)
def load_job() -> None:
    hold()


@dg.sensor(job=load_job, minimum_interval_seconds=5,
           default_status=dg.DefaultSensorStatus.RUNNING)
def burst_sensor(context: dg.SensorEvaluationContext):
    if context.cursor == "done":
        return dg.SkipReason("burst already requested")
    context.update_cursor("done")
    for i in range(RUNS):
        tags = {"hybrid_pipelines/pool": "nas_sync"} if i < POOL_RUNS else {}
        yield dg.RunRequest(run_key=f"burst-{i}", tags=tags)


defs = dg.Definitions(jobs=[load_job], sensors=[burst_sensor])
