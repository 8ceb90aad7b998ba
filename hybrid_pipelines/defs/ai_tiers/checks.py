"""Data-quality checks of the AI tiers, visible next to each asset in the UI."""

import dagster as dg
import psycopg

from hybrid_pipelines.ai_tiers import contexts, efs_sync, models, output_cold, outputs
from hybrid_pipelines.ai_tiers.rules.tier_policy import parse_now
from hybrid_pipelines.defs.ai_tiers.assets import (
    efs_models,
    generated_output_cold_copies,
    generated_outputs,
    model_locations,
    user_contexts_archive,
)
from hybrid_pipelines.resources import EFSResource, JuiceFSResource, PostgresResource


def _no_tables(exc: Exception) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, metadata={"detail": f"cannot check: {exc}"})


@dg.asset_check(asset=model_locations, description="Every model marked hot has its files on "
                "the hot tier, or a restore from the cold tier under way (the platform flips a "
                "row to hot on first use before the files are back).")
def hot_models_have_files(ai_postgres: PostgresResource,
                          hot_tier: JuiceFSResource) -> dg.AssetCheckResult:
    try:
        hot_tier.require_healthy()
        with ai_postgres.connect() as conn:
            missing = models.hot_rows_missing_files(conn, hot_tier, models.ModelLayout())
            pending = {r[0] for r in conn.execute(
                "SELECT DISTINCT model_id FROM model_promotion_requests "
                "WHERE status = 'pending' AND model_id = ANY(%s)", (missing,))}
    except Exception as exc:  # noqa: BLE001 - a check reports, it does not crash
        return _no_tables(exc)
    lost = [m for m in missing if m not in pending]
    return dg.AssetCheckResult(passed=not lost, metadata={
        "hot_models_without_files": len(lost), "hot_models_being_restored": len(pending),
        "examples": ", ".join(lost[:10])})


@dg.asset_check(asset=user_contexts_archive, description="No conversation is both warm and "
                "archived (a twin: recreated after archiving and not merged yet).")
def no_conversation_in_both_tiers(ai_postgres: PostgresResource) -> dg.AssetCheckResult:
    try:
        with ai_postgres.connect() as conn:
            twins = contexts.twins_count(conn)
    except psycopg.Error as exc:
        return _no_tables(exc)
    return dg.AssetCheckResult(passed=twins == 0, metadata={"twins": twins})


@dg.asset_check(asset=generated_outputs, description="Every output path follows "
                "user_id/YYYY/MM/DD/uuid.ext with its own user and id.")
def output_paths_follow_layout(ai_postgres: PostgresResource) -> dg.AssetCheckResult:
    try:
        with ai_postgres.connect() as conn:
            bad = outputs.bad_paths(conn)
    except psycopg.Error as exc:
        return _no_tables(exc)
    return dg.AssetCheckResult(passed=not bad, metadata={
        "bad_paths": len(bad), "examples": ", ".join(bad[:10])})


@dg.asset_check(asset=efs_models, description="Every mirrored file recorded in the manifest "
                "is on the EFS mount with the recorded size.")
def efs_files_match_manifest(ai_postgres: PostgresResource,
                             efs: EFSResource) -> dg.AssetCheckResult:
    try:
        efs.require_healthy()
        with ai_postgres.connect() as conn:
            bad = efs_sync.manifest_mismatches(conn, efs.root())
    except Exception as exc:  # noqa: BLE001 - a check reports, it does not crash
        return _no_tables(exc)
    return dg.AssetCheckResult(passed=not bad, metadata={
        "mismatched_files": len(bad), "examples": ", ".join(bad[:10])})


# An output gets its cold copy within the hour; two hours leave room for one failed run.
COLD_COPY_GRACE_S = 2 * 3600


@dg.asset_check(asset=generated_output_cold_copies, description="No hot output is older than "
                "two hours without a verified cold copy (losing the hot tier would lose it).")
def fresh_outputs_have_cold_copies(ai_postgres: PostgresResource) -> dg.AssetCheckResult:
    try:
        with ai_postgres.connect() as conn:
            overdue = output_cold.overdue_count(conn, parse_now(None), COLD_COPY_GRACE_S)
    except psycopg.Error as exc:
        return _no_tables(exc)
    return dg.AssetCheckResult(passed=overdue == 0, metadata={
        "hot_outputs_without_cold_copy": overdue, "grace_seconds": COLD_COPY_GRACE_S})
