"""Idempotent run keys for the quiet sensors (issue #17), shared by every domain.

A sensor that found work names it with a marker (the queue's size and newest change, or a
digest of what is to be copied). The key repeats while the work is unchanged, so the daemon
drops a repeated request; it changes when the work does, or when the run for this very work
finished and left it as it was (a failed or capped run must not block the work forever)."""

import json
import time
from datetime import UTC

import dagster as dg

from hybrid_pipelines.shared.sensor_cursor import load_cursor

RUN_KEY_TAG = "dagster/run_key"


def work_key(context: dg.SensorEvaluationContext, prefix: str, marker: str,
             retry_after_s: float = 0.0) -> str | None:
    """The run key for the work `marker` names; keeps its state in the sensor's cursor.

    None when the run for this same work finished less than `retry_after_s` ago: work that a
    run could not do (a file that keeps failing) is retried on that cadence, not every tick."""
    state = load_cursor(context.cursor)
    gen = int(state.get("gen", 0))
    if state.get("marker") == marker and state.get("key"):
        done = context.instance.get_run_records(
            filters=dg.RunsFilter(tags={RUN_KEY_TAG: state["key"]}), limit=1)
        if done and done[0].dagster_run.is_finished:
            # end_time comes from the run's end event; a run marked finished without one
            # (deleted worker, imported record) has at least its last update.
            updated = done[0].update_timestamp  # naive UTC in Dagster's run storage
            ended = done[0].end_time or (updated.replace(tzinfo=UTC).timestamp()
                                         if updated.tzinfo is None else updated.timestamp())
            if time.time() - ended < retry_after_s:
                return None
            gen += 1
    key = f"{prefix}:{marker}:{gen}"
    context.update_cursor(json.dumps({"marker": marker, "gen": gen, "key": key}))
    return key
