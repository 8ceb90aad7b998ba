"""The `backups` asset (one materialisation per backup), the `backup` job that runs it, and
the monthly schedule (1st of the month, 05:00 UTC, after the nightly jobs). On demand: launch
`backup` from the UI or `hybrid-pipelines dagster job launch -j backup`, or run
`hybrid-pipelines backup run` from a shell.

Numeric metadata per part (`<part>/bytes`, `/objects`, `/duration_s`, `/verified`), the
label, and what retention deleted. Any part failing or not verifying fails the run (and
retention then deletes nothing)."""


import os
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import Field

from hybrid_pipelines.backups.engine import BackupRun, Outcome
from hybrid_pipelines.backups.rules.retention import DEFAULT_KEEP, label_for
from hybrid_pipelines.backups.sources import resolve_sources
from hybrid_pipelines.defs.pools import RUN_POOL_TAG
from hybrid_pipelines.resources import (
    JuiceFSResource,
    ObjectStoreResource,
    PostgresResource,
    SeaweedFSResource,
)

GROUP = "backups"
BACKUP_TAGS = {RUN_POOL_TAG: "backups"}
BUCKET_ENV = "HP_BACKUP_BUCKET"


class BackupConfig(dg.Config):
    backup_bucket: str = Field(
        default="", description=f"Bucket on the object store that receives the backups "
        f"(created if missing). Empty: ${BUCKET_ENV} where the run executes, else `backups`.")
    databases: list[str] = Field(
        default=["postgres", "ai_postgres"],
        description="Databases to pg_dump: resource keys (`postgres`, `ai_postgres`) or "
        "`RESOURCE/DATABASE` for another database on that server (e.g. `postgres/juicefs`). "
        "Two entries naming the same database are dumped once.")
    buckets: list[str] = Field(
        default=[], description="Buckets to mirror: `bucket` (object store) or "
        "`seaweedfs:bucket`. Empty: the object store's `bucket` and `outputs_bucket`.")
    juicefs: bool = Field(
        default=True, description="Dump the hot tier's JuiceFS metadata (hot_tier.meta_url, "
        "password in META_PASSWORD). With no metadata URL configured the part is left out "
        "and the run says so.")
    keep: int = Field(default=DEFAULT_KEEP, description="Monthly backups to keep (verified "
                      "ones); older ones are deleted after a verified backup.")
    now: str | None = Field(default=None, description="ISO-8601 instant naming the month "
                            "(label YYYY-MM); schedules set the scheduled time.")


def _now(config: BackupConfig) -> datetime:
    if not config.now:
        return datetime.now(UTC)
    when = datetime.fromisoformat(config.now)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def outcome_metadata(outcome: Outcome) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "label": outcome.label, "verified": outcome.verified,
        "parts": len(outcome.parts),
        "parts_verified": sum(p.verified for p in outcome.parts),
        "total_bytes": sum(p.bytes for p in outcome.parts),
        "labels_deleted": len(outcome.deleted),
        "labels_kept": len(outcome.kept),
        "deleted": ", ".join(outcome.deleted) or "-"}
    for p in outcome.parts:
        meta |= {f"{p.name}/bytes": p.bytes, f"{p.name}/objects": p.objects,
                 f"{p.name}/duration_s": p.duration_s, f"{p.name}/verified": p.verified}
    return meta


@dg.asset(group_name=GROUP, kinds={"postgres", "s3"}, pool="backups",
          description="Monthly full backup: pg_dump of each database, the JuiceFS metadata "
          "and a mirror of each bucket, each verified, under <label>/ of the backup bucket.")
def backups(context: dg.AssetExecutionContext, config: BackupConfig,
            postgres: PostgresResource, ai_postgres: PostgresResource,
            object_store: ObjectStoreResource, seaweedfs: SeaweedFSResource,
            hot_tier: JuiceFSResource) -> dg.MaterializeResult:
    sources = resolve_sources(
        databases=config.databases, buckets=config.buckets, juicefs=config.juicefs,
        resources={"postgres": postgres, "ai_postgres": ai_postgres,
                   "object_store": object_store, "seaweedfs": seaweedfs},
        hot_tier=hot_tier)
    for note in sources.notes:
        context.log.warning(note)
    bucket = config.backup_bucket or os.environ.get(BUCKET_ENV) or "backups"
    run = BackupRun(object_store.get_client(), bucket, label_for(_now(config)),
                    databases=sources.databases, buckets_=sources.buckets, meta=sources.meta,
                    keep=config.keep, now=_now(config))
    outcome = run.run()
    for part in outcome.parts:
        (context.log.info if part.verified else context.log.error)(part.summary())
    meta = outcome_metadata(outcome)
    if not outcome.verified:
        bad = [p.summary() for p in outcome.parts if not p.verified]
        raise dg.Failure(
            description=f"backup {outcome.label} in bucket {bucket} is NOT verified; retention "
            "deleted nothing. "
            + " | ".join(bad or ["no part was backed up"]), metadata=meta)
    return dg.MaterializeResult(metadata=meta)


backup = dg.define_asset_job("backup", selection=[backups], tags=BACKUP_TAGS,
                             description="Full verified backup (monthly, or on demand).")


@dg.schedule(cron_schedule="0 5 1 * *", job=backup, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def monthly_backup_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    when = context.scheduled_execution_time
    return dg.RunRequest(run_config=dg.RunConfig(ops={
        "backups": BackupConfig(now=when.isoformat() if when else None)}))
