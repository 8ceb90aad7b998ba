"""AI-tier assets: model locations, user contexts -> archive -> cold exports, generated outputs,
EFS model mirror. Each reports what it moved and freed, and the tier sizes, as numeric
metadata. Clocks come from config (`now`), which the schedules set to the scheduled time."""

import dagster as dg
from pydantic import Field

from hybrid_pipelines.ai_tiers import contexts, efs_sync, models, output_cold, outputs
from hybrid_pipelines.ai_tiers.rules.tier_policy import (
    VolumePlan,
    cutoff,
    parse_now,
    volume_plan,
)
from hybrid_pipelines.resources import (
    EFSResource,
    JuiceFSResource,
    ObjectStoreResource,
    PostgresResource,
)

GROUP = "ai_tiers"
SCHEMA = "ai_tiers"


class ClockConfig(dg.Config):
    now: str | None = Field(
        default=None, description="ISO-8601 instant used as 'now' (naive = UTC). Schedules set "
        "it to the scheduled time; leave empty for the real clock.")


class ModelDemotionConfig(ClockConfig):
    idle_days: int = Field(default=30, description="Hot models unused this many days go cold.")
    hot_capacity_bytes: int = Field(
        default=0, description="Hot-tier budget for models; least recently used models are "
        "demoted until the hot models fit. 0 = no limit.")
    hot_volume_threshold_percent: float = Field(
        default=90.0, description="When the hot volume (statvfs of the mount) is fuller than "
        "this, least recently used hot models are demoted until it is at the target.")
    hot_volume_target_percent: float = Field(
        default=80.0, description="Usage the capacity demotion brings the hot volume down to.")
    hot_volume_capacity_bytes: int = Field(
        default=0, description="The hot volume's size for the percentages; 0 = the size "
        "statvfs reports (JuiceFS: the volume's --capacity or quota). Set it when the file "
        "system reports no real limit.")
    upload_missing: bool = Field(
        default=True, description="Copy a model to the cold tier when its verified cold copy "
        "is missing; false makes a missing cold copy block the demotion.")
    hot_prefix: str = "models"
    cold_prefix: str = "models"


class ArchiveConfig(ClockConfig):
    idle_days: int = Field(default=30, description="Contexts not updated this many days move.")
    batch_size: int = Field(default=10_000, description="Rows moved per statement/transaction.")


class ExpiryConfig(ClockConfig):
    expire_after_days: int = Field(default=365, description="Archived this many days -> export.")
    prefix: str = Field(default="contexts", description="Key prefix of the exported objects.")
    storage_class: str = Field(
        default="GLACIER_IR", description="S3 storage class of the exports (readable without "
        "a restore, so they can be verified); stores that reject it get their default class. "
        "Empty = the store's default.")


class OutputsConfig(ClockConfig):
    hot_days: int = Field(default=7, description="Outputs this old leave the hot tier...")
    keep_access_count: int = Field(default=5, description="...unless read this many times.")
    hot_prefix: str = "outputs"
    cold_prefix: str = Field(default="", description="Key prefix in the outputs bucket; '' = "
                             "the platform's user_id/YYYY/MM/DD/uuid.ext at the bucket root.")


class EfsSyncConfig(ClockConfig):
    source_bucket: str = Field(default="models", description="Bucket to mirror from (same "
                               "endpoint and credentials as the object_store resource).")
    prefixes: list[str] = Field(default=[""], description="Key prefixes to mirror; '' = all.")
    dest_dir: str = Field(default="models", description="Directory under the EFS mount.")
    delete_extraneous: bool = Field(
        default=False, description="Also delete mirrored files whose object was deleted.")


def require_non_negative(**fields: int) -> None:
    """Refuse negative run-config values by their field name. A negative age would make the
    cutoff lie in the future and a negative budget would demote every hot model, so nothing
    runs until the operator fixes the value."""
    for name, value in fields.items():
        if value < 0:
            raise ValueError(f"config `{name}` = {value} must be 0 or more; fix {name} in "
                             "the run config")


def model_layout(config: ModelDemotionConfig) -> models.ModelLayout:
    return models.ModelLayout(hot_prefix=config.hot_prefix, cold_prefix=config.cold_prefix,
                              upload_missing=config.upload_missing)


def _errors_text(errors: dict[str, str], limit: int = 20) -> str:
    lines = [f"- {name}: {why}" for name, why in list(errors.items())[:limit]]
    if len(errors) > limit:
        lines.append(f"... and {len(errors) - limit} more")
    return "\n".join(lines)


@dg.asset(group_name=GROUP, kinds={"postgres", "s3"},
          description="Where each model's weights live (hot JuiceFS + cold object store). "
          "Materialising it demotes idle models and, over capacity, the least recently used.")
def model_locations(context: dg.AssetExecutionContext, config: ModelDemotionConfig,
                    ai_postgres: PostgresResource, object_store: ObjectStoreResource,
                    hot_tier: JuiceFSResource) -> dg.MaterializeResult:
    now = parse_now(config.now)
    require_non_negative(idle_days=config.idle_days,
                         hot_capacity_bytes=config.hot_capacity_bytes,
                         hot_volume_capacity_bytes=config.hot_volume_capacity_bytes)
    ai_postgres.apply_schema(SCHEMA)
    hot_tier.require_healthy()
    total, used = models.hot_volume_usage(hot_tier)
    plan = volume_plan(config.hot_volume_capacity_bytes or total, used,
                       config.hot_volume_threshold_percent, config.hot_volume_target_percent)
    if plan.bytes_to_free:
        context.log.warning(f"hot volume {plan.used_percent}% full (threshold "
                            f"{plan.threshold_percent}%): demoting least recently used models "
                            f"to free {plan.bytes_to_free} bytes")
    with ai_postgres.connect(autocommit=True) as conn:
        report = models.run_demotion(
            conn, object_store.get_client(), object_store.bucket, hot_tier, now,
            config.idle_days, config.hot_capacity_bytes or None, model_layout(config),
            log=context.log.info, free_bytes=plan.bytes_to_free)
        sizes = models.tier_sizes(conn)
    sizes["hot_volume_used_bytes"] = models.hot_volume_used(hot_tier)
    meta = {"models_demoted": len(report.demoted), "bytes_freed": report.bytes_freed,
            "bytes_uploaded": report.bytes_uploaded, "files_uploaded": report.files_uploaded,
            "files_already_in_cold": report.already_in_cold,
            "leftovers_removed": report.leftovers_removed, "models_failed": len(report.errors),
            "models_skipped": len(report.skipped), **report.left_alone.metadata(),
            **sizes, **_effective_settings(config, plan, object_store.bucket)}
    if report.left_alone:
        context.log.warning(f"hot tier: {report.left_alone.describe()}")
    if report.errors:
        raise dg.Failure(description="Some models were not demoted; their hot copies are "
                         "kept:\n" + _errors_text(report.errors), metadata=meta)
    return dg.MaterializeResult(metadata=meta)


def _effective_settings(config: ModelDemotionConfig, plan: VolumePlan,
                        bucket: str) -> dict[str, object]:
    """What this run decided with (no secrets): shown on the materialization."""
    return {"setting_idle_days": config.idle_days,
            "setting_hot_capacity_bytes": config.hot_capacity_bytes,
            "setting_hot_volume_threshold_percent": plan.threshold_percent,
            "setting_hot_volume_target_percent": plan.target_percent,
            "setting_hot_volume_capacity_bytes": plan.capacity_bytes,
            "setting_hot_volume_capacity_source":
                "config" if config.hot_volume_capacity_bytes else "statvfs",
            "setting_cold_bucket": bucket,
            "hot_volume_used_percent": plan.used_percent,
            "hot_volume_bytes_to_free": plan.bytes_to_free}


user_contexts = dg.AssetSpec(
    "user_contexts", group_name=GROUP, kinds={"postgres"},
    description="Warm conversations (PostgreSQL user_contexts), written by the platform.")


@dg.asset(group_name=GROUP, kinds={"postgres"}, deps=[user_contexts],
          description="Archived conversations (user_contexts_archive): contexts not updated for "
          "30 days, moved atomically in batches.")
def user_contexts_archive(context: dg.AssetExecutionContext, config: ArchiveConfig,
                          ai_postgres: PostgresResource) -> dg.MaterializeResult:
    now = parse_now(config.now)
    require_non_negative(idle_days=config.idle_days)
    ai_postgres.apply_schema(SCHEMA)
    with ai_postgres.connect(autocommit=True) as conn:
        report = contexts.archive_contexts(conn, cutoff(now, config.idle_days), now,
                                           config.batch_size)
        sizes = contexts.context_sizes(conn)
    context.log.info(f"archived {report.moved} contexts in {report.batches} batches")
    context.log_event(dg.AssetObservation(asset_key="user_contexts", metadata={
        "warm_rows": sizes["warm_rows"], "warm_table_bytes": sizes["warm_table_bytes"]}))
    return dg.MaterializeResult(metadata={
        "contexts_moved": report.moved, "bytes_moved": report.bytes_moved,
        "merged_into_archived_twin": report.merged_into_twins, "batches": report.batches,
        "batches_skipping_held_rows": report.skip_locked_batches,
        **sizes})


@dg.asset(group_name=GROUP, kinds={"s3"}, deps=[user_contexts_archive],
          description="Archived contexts older than a year, exported as gzip JSON-lines "
          "objects (one per archive day and run, never overwritten; cold storage class), "
          "verified, then deleted from the archive as the export pointers move.")
def user_context_exports(context: dg.AssetExecutionContext, config: ExpiryConfig,
                         ai_postgres: PostgresResource,
                         object_store: ObjectStoreResource) -> dg.MaterializeResult:
    now = parse_now(config.now)
    require_non_negative(expire_after_days=config.expire_after_days)
    ai_postgres.apply_schema(SCHEMA)
    with ai_postgres.connect(autocommit=True) as conn:
        report = contexts.expire_archive(
            conn, object_store.get_client(), object_store.bucket,
            cutoff(now, config.expire_after_days), now, config.prefix,
            config.storage_class or None)
        sizes = contexts.context_sizes(conn)
    if report.skipped_locked:
        context.log.warning("another expiry run holds the lock; nothing exported this time")
    return dg.MaterializeResult(metadata={
        "contexts_exported": report.rows_exported, "objects_written": report.objects_written,
        "bytes_uploaded": report.bytes_uploaded, "days_exported": len(report.days_exported),
        "skipped_locked": int(report.skipped_locked), "run_id": report.run_id,
        "storage_class": report.storage_class or "store default", **sizes})


@dg.asset(group_name=GROUP, kinds={"postgres", "s3"},
          description="Generated images/audio (generated_outputs): hot for hot_days, then cold "
          "unless read keep_access_count times; pending user deletion requests first.")
def generated_outputs(context: dg.AssetExecutionContext, config: OutputsConfig,
                      ai_postgres: PostgresResource, object_store: ObjectStoreResource,
                      hot_tier: JuiceFSResource) -> dg.MaterializeResult:
    now = parse_now(config.now)
    require_non_negative(hot_days=config.hot_days, keep_access_count=config.keep_access_count)
    ai_postgres.apply_schema(SCHEMA)
    layout = outputs.OutputLayout(config.hot_prefix, config.cold_prefix)
    with ai_postgres.connect(autocommit=True) as conn:
        report = outputs.run_output_tiering(
            conn, object_store.get_client(), object_store.outputs_bucket, hot_tier, now,
            config.hot_days, config.keep_access_count, layout, log=context.log.info)
        sizes = outputs.output_sizes(conn)
    meta = {"outputs_demoted": report.demoted, "outputs_promoted": report.promoted,
            "bytes_freed": report.bytes_freed, "bytes_promoted": report.bytes_promoted,
            "bytes_uploaded": report.bytes_uploaded, "outputs_deleted": report.deleted,
            "deletion_requests_done": report.requests_done, "outputs_failed": len(report.errors),
            "hot_files_moved_aside": len(report.moved_aside),
            "moved_aside_examples": ", ".join(report.moved_aside[:5]), **sizes}
    if report.moved_aside:
        context.log.warning("promotions kept differing hot files under new names: "
                            + ", ".join(report.moved_aside[:20]))
    if report.errors:
        raise dg.Failure(description="Some outputs were left as they were:\n"
                         + _errors_text(report.errors), metadata=meta)
    return dg.MaterializeResult(metadata=meta)


class ColdCopiesConfig(ClockConfig):
    hot_prefix: str = "outputs"
    cold_prefix: str = Field(default="", description="Key prefix in the outputs bucket; '' = "
                             "the platform's user_id/YYYY/MM/DD/uuid.ext at the bucket root.")
    limit: int = Field(default=10_000, description="Outputs verified per run at most (the "
                       "rest next hour, oldest first).")


@dg.asset(group_name=GROUP, kinds={"postgres", "s3"}, deps=[generated_outputs],
          description="Verified cold copies of fresh outputs: every hot output without our "
          "cold_verified_at gets its object in the outputs bucket checked (size + sha256) or "
          "uploaded from the hot file, within the hour; cold_storage is kept true only for a "
          "verified copy.")
def generated_output_cold_copies(context: dg.AssetExecutionContext, config: ColdCopiesConfig,
                                 ai_postgres: PostgresResource,
                                 object_store: ObjectStoreResource,
                                 hot_tier: JuiceFSResource) -> dg.MaterializeResult:
    now = parse_now(config.now)
    require_non_negative(limit=config.limit)
    ai_postgres.apply_schema(SCHEMA)
    layout = outputs.OutputLayout(config.hot_prefix, config.cold_prefix)

    def place(row: tuple) -> tuple[str, str, str]:
        rel = outputs.output_rel(row)
        return rel, layout.hot_rel(rel), layout.cold_key(rel)

    with ai_postgres.connect(autocommit=True) as conn:
        report = output_cold.run_cold_copies(
            conn, object_store.get_client(), object_store.outputs_bucket, hot_tier, now, place,
            config.limit, log=context.log.info)
        waiting = output_cold.overdue_count(conn, now, 0)
    meta = {"outputs_verified": report.verified, "outputs_uploaded": report.uploaded,
            "bytes_uploaded": report.bytes_uploaded, "outputs_failed": len(report.errors),
            "outputs_still_unverified": waiting,
            "cold_objects_kept_aside": len(report.kept_aside),
            "kept_aside_examples": ", ".join(report.kept_aside[:5])}
    if report.kept_aside:
        context.log.warning("cold objects with other bytes than the hot file were kept under "
                            "new keys before the upload: " + ", ".join(report.kept_aside[:20]))
    if report.errors:
        raise dg.Failure(description="Some fresh outputs have no verified cold copy (their "
                         "cold_storage is now false; retried next hour):\n"
                         + _errors_text(report.errors), metadata=meta)
    return dg.MaterializeResult(metadata=meta)


@dg.asset(group_name=GROUP, kinds={"s3"},
          description="Model files mirrored from an S3 bucket onto the EFS mount (new and "
          "changed objects only, by size and ETag).")
def efs_models(context: dg.AssetExecutionContext, config: EfsSyncConfig,
               ai_postgres: PostgresResource, object_store: ObjectStoreResource,
               efs: EFSResource) -> dg.MaterializeResult:
    now = parse_now(config.now)
    ai_postgres.apply_schema(SCHEMA)
    efs.require_healthy()
    root = efs.path(config.dest_dir)
    with ai_postgres.connect(autocommit=True) as conn:
        report = efs_sync.sync_to_efs(conn, object_store.get_client(), config.source_bucket,
                                      root, config.prefixes, now, config.delete_extraneous,
                                      log=context.log.info)
    meta = {"objects_listed": report.listed, "objects_downloaded": report.downloaded,
            "bytes_downloaded": report.bytes_downloaded, "objects_unchanged": report.unchanged,
            "files_deleted": report.deleted, "temp_files_swept": report.temp_files_swept,
            "size_only_verified": report.size_only_verified,
            "mirrored_bytes": report.mirrored_bytes, "objects_failed": len(report.errors),
            **report.left_alone.metadata()}
    if report.left_alone:
        context.log.warning(f"EFS mirror: {report.left_alone.describe()}")
    if report.errors:
        raise dg.Failure(description="Some objects were not mirrored:\n"
                         + _errors_text(report.errors), metadata=meta)
    return dg.MaterializeResult(metadata=meta)
