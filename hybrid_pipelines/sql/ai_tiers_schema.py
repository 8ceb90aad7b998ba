"""The AI tiers' schema on the platform's `ai_platform` database, as online additive steps.

The platform's AI backend created `model_locations`, `user_contexts`, `user_contexts_archive`
and `generated_outputs` from its init.sql (sql/platform_seed.sql, block 2) and keeps writing
them. They are created here, verbatim, only where missing (a fresh database); on the
platform's database they exist and only gain columns of ours (with defaults) and indexes of
ours (built concurrently). Their timestamps are TIMESTAMP without zone holding UTC: the
columns we add to them are of the same kind. Our own tables keep timestamptz.

Columns of ours on platform tables:
- model_locations.tier_changed_at: when a job of ours last moved the model.
- user_contexts_archive.updated_at: the warm row's updated_at when we archived it (the
  platform's own archiver leaves it NULL; readers fall back to archived_at).
- generated_outputs.path: where the file is when it is NOT at the platform's layout
  `user_id/YYYY/MM/DD/<output_id>.<ext of filename>` (NULL: at the layout);
  sha256 / cold_verified_at: the verified cold copy; tier_changed_at: our last move.
  Where an output is stays in the platform's own hot_storage / cold_storage."""

from __future__ import annotations

import re

from hybrid_pipelines.sql.migrations import Step, add_column, create_index, create_table
from hybrid_pipelines.sql.platform import AI_PLATFORM, platform_ddl

DOMAIN = "ai_tiers"
PLATFORM_TABLES = ("model_locations", "user_contexts", "user_contexts_archive",
                   "generated_outputs")
_TABLE_OF = re.compile(r"(?:CREATE TABLE IF NOT EXISTS|ON)\s+(\w+)\s*\(", re.IGNORECASE)


def platform_table_ddl(table: str) -> str:
    """The verbatim statements of block 2 that create `table` and its indexes."""
    statements = []
    for raw in platform_ddl(AI_PLATFORM).split(";"):
        body = "\n".join(line for line in raw.splitlines()
                         if not line.strip().startswith("--")).strip()
        m = _TABLE_OF.search(body)
        if body and m and m.group(1) == table:
            statements.append(body)
    if not statements:
        raise KeyError(f"the platform DDL has no table {table}")
    return ";\n".join(statements) + ";"


_OWN_TABLES = {
    "model_promotion_requests": """CREATE TABLE IF NOT EXISTS model_promotion_requests (
    id           bigserial PRIMARY KEY,
    model_id     text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    processed_at timestamptz,
    detail       text
)""",
    "user_context_exports": """CREATE TABLE IF NOT EXISTS user_context_exports (
    user_id         text NOT NULL,
    conversation_id text NOT NULL,
    archive_id      bigint NOT NULL,
    object_key      text NOT NULL,
    exported_at     timestamptz NOT NULL,
    PRIMARY KEY (user_id, conversation_id)
)""",
    # Every export of a conversation (user_context_exports keeps only the newest).
    "user_context_export_history": """CREATE TABLE IF NOT EXISTS user_context_export_history (
    id              bigserial PRIMARY KEY,
    user_id         text NOT NULL,
    conversation_id text NOT NULL,
    archive_id      bigint NOT NULL,
    object_key      text NOT NULL,
    exported_at     timestamptz NOT NULL,
    run_id          text NOT NULL DEFAULT ''
)""",
    "context_reactivation_requests": """CREATE TABLE IF NOT EXISTS context_reactivation_requests (
    id              bigserial PRIMARY KEY,
    user_id         text NOT NULL,
    conversation_id text NOT NULL,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'done', 'not_found', 'failed')),
    processed_at    timestamptz,
    detail          text
)""",
    # output_id NULL: every output of the user.
    "output_deletion_requests": """CREATE TABLE IF NOT EXISTS output_deletion_requests (
    id           bigserial PRIMARY KEY,
    user_id      text NOT NULL,
    output_id    uuid,
    requested_at timestamptz NOT NULL DEFAULT now(),
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    processed_at timestamptz,
    detail       text
)""",
    # S3 -> EFS sync: what each mirrored file was downloaded from.
    "efs_sync_manifest": """CREATE TABLE IF NOT EXISTS efs_sync_manifest (
    efs_root   text NOT NULL,
    rel_path   text NOT NULL,
    bucket     text NOT NULL,
    key        text NOT NULL,
    size_bytes bigint NOT NULL,
    etag       text NOT NULL,
    mtime_ns   bigint NOT NULL,
    synced_at  timestamptz NOT NULL,
    PRIMARY KEY (efs_root, rel_path)
)""",
}

STEPS: list[Step] = [
    *(create_table(DOMAIN, t, platform_table_ddl(t), f"create platform table {t} (verbatim "
                   "DDL, only where the platform has not)") for t in PLATFORM_TABLES),
    add_column(DOMAIN, "model_locations", "tier_changed_at", "timestamp DEFAULT NULL"),
    add_column(DOMAIN, "user_contexts_archive", "updated_at", "timestamp DEFAULT NULL"),
    add_column(DOMAIN, "generated_outputs", "path", "text DEFAULT NULL"),
    add_column(DOMAIN, "generated_outputs", "sha256", "text DEFAULT NULL"),
    add_column(DOMAIN, "generated_outputs", "cold_verified_at", "timestamp DEFAULT NULL"),
    add_column(DOMAIN, "generated_outputs", "tier_changed_at", "timestamp DEFAULT NULL"),
    *(create_table(DOMAIN, t, ddl) for t, ddl in _OWN_TABLES.items()),
    # The archive walks the warm table in (updated_at, id) order, batch after batch.
    create_index(DOMAIN, "hp_user_contexts_updated_id", "user_contexts", "(updated_at, id)"),
    create_index(DOMAIN, "hp_user_contexts_archive_archived_at", "user_contexts_archive",
                 "(archived_at)"),
    # Cold outputs read often enough to come back (the hot side uses idx_output_hot).
    create_index(DOMAIN, "hp_generated_outputs_cold_access", "generated_outputs",
                 "(access_count)", where="hot_storage IS NOT TRUE"),
    # Hot outputs still waiting for their verified cold copy: the hourly run's one query
    # (empty when nothing is new, so an idle hour costs one index probe).
    create_index(DOMAIN, "hp_generated_outputs_cold_unverified", "generated_outputs",
                 "(created_at, output_id)",
                 where="hot_storage IS TRUE AND cold_verified_at IS NULL"),
    create_index(DOMAIN, "hp_model_promotion_requests_pending", "model_promotion_requests",
                 "(id)", where="status = 'pending'"),
    create_index(DOMAIN, "hp_user_context_export_history_conversation",
                 "user_context_export_history", "(user_id, conversation_id)"),
    create_index(DOMAIN, "hp_context_reactivation_requests_pending",
                 "context_reactivation_requests", "(id)", where="status = 'pending'"),
    create_index(DOMAIN, "hp_output_deletion_requests_pending", "output_deletion_requests",
                 "(id)", where="status = 'pending'"),
]
