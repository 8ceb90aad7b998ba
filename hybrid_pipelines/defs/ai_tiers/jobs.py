"""Jobs: the scheduled asset jobs, and on-demand op jobs (promotion, reactivation, output
deletion) launched with run config or by the request-table sensors. A request row, when given,
is marked done/failed with the outcome."""

import dagster as dg
from pydantic import Field

from hybrid_pipelines.ai_tiers import contexts, model_promotion, models, outputs
from hybrid_pipelines.ai_tiers.rules.tier_policy import parse_now
from hybrid_pipelines.defs.ai_tiers.assets import (
    SCHEMA,
    ClockConfig,
    efs_models,
    generated_output_cold_copies,
    generated_outputs,
    model_locations,
    user_context_exports,
    user_contexts_archive,
)
from hybrid_pipelines.defs.pools import AI_TIERS_TAGS
from hybrid_pipelines.resources import JuiceFSResource, ObjectStoreResource, PostgresResource

model_demotion_job = dg.define_asset_job(
    "model_demotion_job", selection=[model_locations], tags=AI_TIERS_TAGS,
    description="Demote idle / over-capacity models from the hot tier (after a verified cold "
    "copy).")
context_archive_job = dg.define_asset_job(
    "context_archive_job", selection=[user_contexts_archive, user_context_exports],
    tags=AI_TIERS_TAGS, description="Archive idle contexts, then export year-old archived ones.")
generated_outputs_job = dg.define_asset_job(
    "generated_outputs_job", selection=[generated_outputs], tags=AI_TIERS_TAGS,
    description="Tier generated outputs and process deletion requests.")
output_cold_copy_job = dg.define_asset_job(
    "output_cold_copy_job", selection=[generated_output_cold_copies], tags=AI_TIERS_TAGS,
    description="Give fresh hot outputs a verified cold copy (hourly when any is waiting).")
efs_model_sync_job = dg.define_asset_job(
    "efs_model_sync_job", selection=[efs_models], tags=AI_TIERS_TAGS,
    description="Mirror model prefixes from S3 onto the EFS mount.")


def _finish_request(ai_postgres: PostgresResource, table: str, request_id: int | None,
                    status: str, detail: str) -> None:
    if request_id is None:
        return
    with ai_postgres.connect() as conn:
        conn.execute(f"UPDATE {table} SET status = %s, processed_at = now(), "  # noqa: S608
                     "detail = %s WHERE id = %s", (status, detail[:1000], request_id))


class PromotionConfig(ClockConfig):
    model_id: str = Field(description="Model to bring back to the hot tier.")
    request_id: int | None = Field(default=None, description="model_promotion_requests row.")
    hot_prefix: str = "models"
    cold_prefix: str = "models"


@dg.op(description="Copy a cold model into the hot path, verify it, mark it hot.")
def promote_model(context: dg.OpExecutionContext, config: PromotionConfig,
                  ai_postgres: PostgresResource, object_store: ObjectStoreResource,
                  hot_tier: JuiceFSResource) -> None:
    now = parse_now(config.now)
    ai_postgres.apply_schema(SCHEMA)
    layout = models.ModelLayout(hot_prefix=config.hot_prefix, cold_prefix=config.cold_prefix)
    try:
        with ai_postgres.connect(autocommit=True) as conn:
            result = model_promotion.promote_model(
                conn, object_store.get_client(), object_store.bucket, hot_tier,
                config.model_id, now, layout)
            sizes = models.tier_sizes(conn)
    except Exception as exc:
        _finish_request(ai_postgres, "model_promotion_requests", config.request_id, "failed",
                        str(exc))
        raise
    detail = ("already hot" if result.already_hot else
              f"{result.files_downloaded} file(s), {result.bytes_downloaded} bytes downloaded")
    if result.moved_aside:
        detail += (f"; {len(result.moved_aside)} hot file(s) with bytes the cold copy lacks "
                   f"kept under new names: {', '.join(result.moved_aside[:5])}")
        context.log.warning(f"model {config.model_id}: {detail}")
    _finish_request(ai_postgres, "model_promotion_requests", config.request_id, "done", detail)
    context.log.info(f"model {config.model_id}: {detail}")
    context.log_event(dg.AssetMaterialization(
        asset_key=model_locations.key, description=f"promoted {config.model_id}",
        metadata={"models_promoted": int(not result.already_hot),
                  "bytes_downloaded": result.bytes_downloaded,
                  "files_downloaded": result.files_downloaded,
                  "size_only_verified": result.weakly_verified,
                  "hot_files_moved_aside": len(result.moved_aside),
                  "moved_aside_examples": ", ".join(result.moved_aside[:5]), **sizes}))


@dg.job(tags=AI_TIERS_TAGS, description="Promote one model to the hot tier (run config model_id).")
def model_promotion_job() -> None:
    promote_model()


class ReactivationConfig(ClockConfig):
    user_id: str
    conversation_id: str
    request_id: int | None = Field(default=None,
                                   description="context_reactivation_requests row.")


@dg.op(description="Move one archived (or exported) conversation back to the warm table.")
def reactivate_context(context: dg.OpExecutionContext, config: ReactivationConfig,
                       ai_postgres: PostgresResource, object_store: ObjectStoreResource) -> None:
    now = parse_now(config.now)
    ai_postgres.apply_schema(SCHEMA)
    table = "context_reactivation_requests"
    try:
        with ai_postgres.connect(autocommit=True) as conn:
            result = contexts.reactivate_context(conn, object_store.get_client(),
                                                 object_store.bucket, config.user_id,
                                                 config.conversation_id, now)
            sizes = contexts.context_sizes(conn)
    except Exception as exc:
        _finish_request(ai_postgres, table, config.request_id, "failed", str(exc))
        raise
    name = f"{config.user_id}/{config.conversation_id}"
    if result.source == "missing":
        _finish_request(ai_postgres, table, config.request_id, "not_found",
                        "no such conversation in any tier")
        raise dg.Failure(description=f"conversation {name} is in no tier (warm, archive or "
                         "exports): check the user_id and conversation_id")
    _finish_request(ai_postgres, table, config.request_id, "done", f"from {result.source}")
    context.log.info(f"conversation {name}: reactivated from {result.source}")
    context.log_event(dg.AssetMaterialization(
        asset_key=user_contexts_archive.key, description=f"reactivated {name}",
        metadata={"contexts_reactivated": int(result.source in ("archive", "export")),
                  "merged_into_warm_twin": int(result.merged), **sizes}))


@dg.job(tags=AI_TIERS_TAGS, description="Reactivate one conversation (run config user_id, "
        "conversation_id).")
def context_reactivation_job() -> None:
    reactivate_context()


class OutputDeletionConfig(ClockConfig):
    user_id: str
    output_id: str | None = Field(default=None, description="One output; empty = all of them.")
    request_id: int | None = Field(default=None, description="output_deletion_requests row.")
    hot_prefix: str = "outputs"
    cold_prefix: str = ""


@dg.op(description="Remove a user's output(s) from the hot tier, the cold tier and the table.")
def delete_user_outputs(context: dg.OpExecutionContext, config: OutputDeletionConfig,
                        ai_postgres: PostgresResource, object_store: ObjectStoreResource,
                        hot_tier: JuiceFSResource) -> None:
    now = parse_now(config.now)
    ai_postgres.apply_schema(SCHEMA)
    layout = outputs.OutputLayout(config.hot_prefix, config.cold_prefix)
    report = outputs.OutputsReport()
    with ai_postgres.connect(autocommit=True) as conn:
        client = object_store.get_client()
        if config.request_id is not None:
            outputs.process_deletion_requests(conn, client, object_store.outputs_bucket, hot_tier,
                                              now, layout, report,
                                              request_id=config.request_id)
        else:
            report.deleted, _ = outputs.delete_outputs(conn, client, object_store.outputs_bucket,
                                                       hot_tier, config.user_id,
                                                       config.output_id, layout)
        sizes = outputs.output_sizes(conn)
    meta = {"outputs_deleted": report.deleted, **sizes}
    if report.errors:
        raise dg.Failure(description="Deletion incomplete (retry is safe):\n"
                         + "\n".join(report.errors.values()), metadata=meta)
    context.log_event(dg.AssetMaterialization(
        asset_key=generated_outputs.key, description=f"deleted outputs of {config.user_id}",
        metadata=meta))


@dg.job(tags=AI_TIERS_TAGS, description="Delete a user's outputs from every tier.")
def output_deletion_job() -> None:
    delete_user_outputs()
