-- AI storage tiers (PostgreSQL). Idempotent: every statement may run again on every job start.

-- Models: where each model's weights live. The cold tier (object store) holds every model;
-- 'hot' means the hot tier (JuiceFS) holds a full copy too.
CREATE TABLE IF NOT EXISTS model_locations (
    model_id        text PRIMARY KEY,
    tier            text NOT NULL DEFAULT 'hot' CHECK (tier IN ('hot', 'cold')),
    size_bytes      bigint NOT NULL DEFAULT 0 CHECK (size_bytes >= 0),
    last_access     timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    tier_changed_at timestamptz
);
CREATE INDEX IF NOT EXISTS model_locations_tier_access ON model_locations (tier, last_access);

CREATE TABLE IF NOT EXISTS model_promotion_requests (
    id           bigserial PRIMARY KEY,
    model_id     text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    processed_at timestamptz,
    detail       text
);
CREATE INDEX IF NOT EXISTS model_promotion_requests_pending
    ON model_promotion_requests (id) WHERE status = 'pending';

-- User contexts: warm table, cold archive, and a tombstone per conversation exported to the
-- object store (so a reactivation request can still find it).
CREATE TABLE IF NOT EXISTS user_contexts (
    id              bigserial PRIMARY KEY,
    user_id         text NOT NULL,
    conversation_id text NOT NULL,
    messages        jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(messages) = 'array'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, conversation_id)
);
-- The archive walks this index in (updated_at, id) order, batch after batch.
CREATE INDEX IF NOT EXISTS user_contexts_updated_at_id ON user_contexts (updated_at, id);

CREATE TABLE IF NOT EXISTS user_contexts_archive (
    id              bigint PRIMARY KEY,
    user_id         text NOT NULL,
    conversation_id text NOT NULL,
    messages        jsonb NOT NULL CHECK (jsonb_typeof(messages) = 'array'),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    archived_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, conversation_id)
);
CREATE INDEX IF NOT EXISTS user_contexts_archive_archived_at
    ON user_contexts_archive (archived_at);

CREATE TABLE IF NOT EXISTS user_context_exports (
    user_id         text NOT NULL,
    conversation_id text NOT NULL,
    archive_id      bigint NOT NULL,
    object_key      text NOT NULL,
    exported_at     timestamptz NOT NULL,
    PRIMARY KEY (user_id, conversation_id)
);

-- Every export of a conversation, one row each (user_context_exports above keeps only the
-- newest): a conversation that expires, comes back and expires again has two, and
-- reactivation restores both. Each expiry run writes its own objects (the key carries the run
-- id), so no row here ever points at an object a later run overwrote.
CREATE TABLE IF NOT EXISTS user_context_export_history (
    id              bigserial PRIMARY KEY,
    user_id         text NOT NULL,
    conversation_id text NOT NULL,
    archive_id      bigint NOT NULL,
    object_key      text NOT NULL,
    exported_at     timestamptz NOT NULL,
    run_id          text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS user_context_export_history_conversation
    ON user_context_export_history (user_id, conversation_id);

CREATE TABLE IF NOT EXISTS context_reactivation_requests (
    id              bigserial PRIMARY KEY,
    user_id         text NOT NULL,
    conversation_id text NOT NULL,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'done', 'not_found', 'failed')),
    processed_at    timestamptz,
    detail          text
);
CREATE INDEX IF NOT EXISTS context_reactivation_requests_pending
    ON context_reactivation_requests (id) WHERE status = 'pending';

-- Generated outputs: files at user_id/YYYY/MM/DD/uuid.ext on the hot tier and/or the store.
CREATE TABLE IF NOT EXISTS generated_outputs (
    output_id        uuid PRIMARY KEY,
    user_id          text NOT NULL,
    path             text NOT NULL UNIQUE,
    tier             text NOT NULL DEFAULT 'hot' CHECK (tier IN ('hot', 'cold')),
    size_bytes       bigint NOT NULL DEFAULT 0 CHECK (size_bytes >= 0),
    sha256           text,
    access_count     integer NOT NULL DEFAULT 0 CHECK (access_count >= 0),
    last_access      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    cold_verified_at timestamptz
);
CREATE INDEX IF NOT EXISTS generated_outputs_tier_created
    ON generated_outputs (tier, created_at);
CREATE INDEX IF NOT EXISTS generated_outputs_user ON generated_outputs (user_id);

-- output_id NULL: every output of the user.
CREATE TABLE IF NOT EXISTS output_deletion_requests (
    id           bigserial PRIMARY KEY,
    user_id      text NOT NULL,
    output_id    uuid,
    requested_at timestamptz NOT NULL DEFAULT now(),
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    processed_at timestamptz,
    detail       text
);
CREATE INDEX IF NOT EXISTS output_deletion_requests_pending
    ON output_deletion_requests (id) WHERE status = 'pending';

-- S3 -> EFS sync: what each mirrored file was downloaded from, to skip unchanged objects.
CREATE TABLE IF NOT EXISTS efs_sync_manifest (
    efs_root   text NOT NULL,
    rel_path   text NOT NULL,
    bucket     text NOT NULL,
    key        text NOT NULL,
    size_bytes bigint NOT NULL,
    etag       text NOT NULL,
    mtime_ns   bigint NOT NULL,
    synced_at  timestamptz NOT NULL,
    PRIMARY KEY (efs_root, rel_path)
);
