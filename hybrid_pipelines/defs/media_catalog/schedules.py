"""Nightly full reconcile: every partition is rescanned in full (catching files rewritten
in place, which no directory timestamp shows), the catalog rebuilt and Firestore resent."""

import dagster as dg

from hybrid_pipelines.defs.media_catalog.assets import FULL_RECONCILE_CONFIG, media_catalog_job
from hybrid_pipelines.defs.pools import CATALOG_TAGS, TRIGGER_TAG
from hybrid_pipelines.media_catalog.settings import PARTITIONS_NAME


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
    return [dg.RunRequest(partition_key=pk, run_key=f"reconcile:{pk}:{day}",
                          run_config=FULL_RECONCILE_CONFIG,
                          tags={**CATALOG_TAGS, TRIGGER_TAG: "nightly"})
            for pk in keys]
