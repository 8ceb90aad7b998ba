"""Nightly full reconcile: every partition is rescanned in full (catching files rewritten
in place, which no directory timestamp shows), the catalog rebuilt and Firestore resent.
With HP_CATALOG_NIGHTLY_REPROBE=invalid (or error:TEXT) its probe step also re-probes the
partition's invalid files (those whose error contains TEXT)."""

import os

import dagster as dg

from hybrid_pipelines.defs.media_catalog.assets import (
    FULL_RECONCILE_CONFIG,
    ProbeConfig,
    media_catalog_job,
)
from hybrid_pipelines.defs.pools import CATALOG_TAGS, TRIGGER_TAG
from hybrid_pipelines.media_catalog.rules.reprobe import NIGHTLY_REPROBE_ENV, parse_nightly_reprobe
from hybrid_pipelines.media_catalog.settings import PARTITIONS_NAME


def nightly_run_config() -> dg.RunConfig:
    """The full reconcile, plus the re-probe HP_CATALOG_NIGHTLY_REPROBE asks for."""
    reprobe = parse_nightly_reprobe(os.environ.get(NIGHTLY_REPROBE_ENV))
    if reprobe is None:
        return FULL_RECONCILE_CONFIG
    return dg.RunConfig(ops={**FULL_RECONCILE_CONFIG.ops, "media_probes": ProbeConfig(
        reprobe_invalid=reprobe[0], reprobe_error=reprobe[1])})


@dg.schedule(
    job=media_catalog_job, cron_schedule="0 3 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="03:00 every night: full reconcile of every catalog folder.",
)
def media_catalog_nightly_reconcile(context: dg.ScheduleEvaluationContext):
    keys = sorted(context.instance.get_dynamic_partitions(PARTITIONS_NAME))
    if not keys:
        return dg.SkipReason("no catalog folders yet: the NAS sensor adds them as it finds them")
    day = context.scheduled_execution_time.strftime("%Y-%m-%d") \
        if context.scheduled_execution_time else "manual"
    config = nightly_run_config()
    return [dg.RunRequest(partition_key=pk, run_key=f"reconcile:{pk}:{day}",
                          run_config=config,
                          tags={**CATALOG_TAGS, TRIGGER_TAG: "nightly"})
            for pk in keys]
