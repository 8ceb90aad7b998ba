-- Hybrid cache metadata (PostgreSQL). Idempotent: applied at the start of every run.
-- file_metadata is the file server's table; on a database where the platform already created
-- it, only the columns and indexes this project adds are created, each one only if missing, so
-- a routine run never takes a lock that would stall the file server's writes.
SET LOCAL lock_timeout = '10s';

CREATE TABLE IF NOT EXISTS file_metadata (
    id             UUID PRIMARY KEY,
    original_name  TEXT NOT NULL,
    stored_name    TEXT NOT NULL,
    mime_type      TEXT,
    size           BIGINT NOT NULL DEFAULT 0,
    hash           TEXT,                      -- SHA-256, lowercase hex
    seaweed_fid    TEXT,                      -- object key in the cache bucket
    cache_status   TEXT,                      -- 'cached' | NULL
    nas_path       TEXT,                      -- share-relative path on the NAS
    nas_status     TEXT NOT NULL DEFAULT 'pending',
    sync_attempts  INTEGER NOT NULL DEFAULT 0,
    last_sync_at   TIMESTAMPTZ,
    synced_at      TIMESTAMPTZ,
    last_accessed  TIMESTAMPTZ,
    access_count   BIGINT NOT NULL DEFAULT 0,
    sync_priority  INTEGER NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT file_metadata_cache_status_chk
        CHECK (cache_status IS NULL OR cache_status = 'cached'),
    CONSTRAINT file_metadata_nas_status_chk
        CHECK (nas_status IN ('pending', 'syncing', 'synced', 'failed'))
);

-- Columns this project adds to the platform's table.
--   claimed_by / claimed_at / lease_until: which sync run holds a 'syncing' row, until when
--   last_error: why the last sync or re-cache attempt failed
--   nas_verified_at: when the NAS copy's SHA-256 was last checked; eviction requires it
--   recache_requested: written straight to the NAS while SeaweedFS was down; copy it back
--   cache_hits / cache_misses: the file server's access counters per file
DO $$
DECLARE
    col RECORD;
BEGIN
    FOR col IN SELECT * FROM (VALUES
            ('claimed_by', 'TEXT'),
            ('claimed_at', 'TIMESTAMPTZ'),
            ('lease_until', 'TIMESTAMPTZ'),
            ('last_error', 'TEXT'),
            ('nas_verified_at', 'TIMESTAMPTZ'),
            ('recache_requested', 'BOOLEAN NOT NULL DEFAULT false'),
            ('cache_hits', 'BIGINT NOT NULL DEFAULT 0'),
            ('cache_misses', 'BIGINT NOT NULL DEFAULT 0')) AS c(name, type)
    LOOP
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                       WHERE table_schema = current_schema() AND table_name = 'file_metadata'
                         AND column_name = col.name) THEN
            EXECUTE format('ALTER TABLE file_metadata ADD COLUMN %I %s', col.name, col.type);
        END IF;
    END LOOP;
END $$;

DO $$
DECLARE
    ix RECORD;
BEGIN
    FOR ix IN SELECT * FROM (VALUES
            -- the platform's own indexes
            ('file_metadata_nas_status_idx', '(nas_status)', ''),
            ('file_metadata_cache_status_idx', '(cache_status)', ''),
            ('file_metadata_last_accessed_idx', '(last_accessed)', ''),
            -- pending sync: FIFO by created_at, high priority first
            ('file_metadata_sync_queue_idx', '(sync_priority DESC, created_at, id)',
             'WHERE nas_status = ''pending'''),
            ('file_metadata_sync_lease_idx', '(lease_until)', 'WHERE nas_status = ''syncing'''),
            -- eviction candidates, one index per policy (ORDER BY in core/eviction_policy.py)
            ('file_metadata_evict_lru_idx', '(COALESCE(last_accessed, created_at), id)',
             'WHERE cache_status = ''cached'' AND nas_status = ''synced'' '
             'AND nas_verified_at IS NOT NULL'),
            ('file_metadata_evict_lfu_idx',
             '(access_count, COALESCE(last_accessed, created_at), id)',
             'WHERE cache_status = ''cached'' AND nas_status = ''synced'' '
             'AND nas_verified_at IS NOT NULL'),
            ('file_metadata_evict_fifo_idx', '(created_at, id)',
             'WHERE cache_status = ''cached'' AND nas_status = ''synced'' '
             'AND nas_verified_at IS NOT NULL'),
            -- re-cache queue and the audit's sorted merges with listings
            ('file_metadata_recache_idx', '(sync_priority DESC, created_at, id)',
             'WHERE recache_requested AND cache_status IS NULL'),
            ('file_metadata_fid_idx', '(seaweed_fid COLLATE "C")', ''),
            ('file_metadata_nas_path_idx', '(nas_path COLLATE "C")', '')) AS i(name, cols, cond)
    LOOP
        IF to_regclass(quote_ident(ix.name)) IS NULL THEN
            EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON file_metadata %s %s',
                           ix.name, ix.cols, ix.cond);
        END IF;
    END LOOP;
END $$;

-- Circuit breaker per backend, shared by every run (each Dagster run is a new process).
CREATE TABLE IF NOT EXISTS backend_circuit (
    backend              TEXT PRIMARY KEY,
    state                TEXT NOT NULL DEFAULT 'closed'
                         CHECK (state IN ('closed', 'open', 'half_open')),
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    opened_at            DOUBLE PRECISION,   -- seconds since the epoch
    last_error           TEXT NOT NULL DEFAULT '',
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Which file owns which name on the NAS. The pending sync reserves a row's target here before
-- copying (INSERT ... ON CONFLICT), keyed by the name as the NAS compares names (rules/
-- nas_keys.py: separators normalised, NFC, case-folded), so two rows whose paths are one file
-- to Samba can never both be placed there: the second is refused, naming the first. A row
-- that fails for good gives its reservation up; a reservation whose row is gone or 'failed'
-- may be taken over. Rows synced before this table existed hold none: for them the NAS itself
-- answers (the rename never replaces an existing file).
CREATE TABLE IF NOT EXISTS nas_path_reservations (
    canonical_key TEXT COLLATE "C" PRIMARY KEY,
    file_id       UUID NOT NULL,
    nas_path      TEXT NOT NULL,
    reserved_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS nas_path_reservations_file_idx ON nas_path_reservations (file_id);
