-- The local media catalog (SQLite, WAL). Applied on every run: every statement is idempotent.
-- Paths are share-relative, '/'-separated, NFC; TEXT keeps every script byte for byte.
-- `seq` is a catalog-wide change counter: every write that Firestore must see takes a new
-- value, and the Firestore sync follows it with a cursor (sync_state).

CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters (name, value) VALUES ('seq', 0);

-- One row per Dagster partition (a top-level NAS folder).
CREATE TABLE IF NOT EXISTS folders (
    partition_key TEXT PRIMARY KEY,
    folder        TEXT NOT NULL UNIQUE,       -- share-relative path of the top-level folder
    added_at      REAL NOT NULL,
    last_scan_at  REAL,
    last_scan_id  TEXT
);

-- Directories as last listed: the timestamp decides whether a rescan lists them again.
CREATE TABLE IF NOT EXISTS dirs (
    path          TEXT PRIMARY KEY,
    partition_key TEXT NOT NULL,
    parent        TEXT NOT NULL,
    mtime         REAL NOT NULL,
    has_subdirs   INTEGER NOT NULL,
    listed_at     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dirs_parent ON dirs (parent);
CREATE INDEX IF NOT EXISTS dirs_partition ON dirs (partition_key, has_subdirs);

CREATE TABLE IF NOT EXISTS files (
    path            TEXT PRIMARY KEY,
    file_id         TEXT NOT NULL UNIQUE,     -- Firestore document id (hash of the path)
    partition_key   TEXT NOT NULL,
    dir             TEXT NOT NULL,
    name            TEXT NOT NULL,
    size            INTEGER NOT NULL,
    mtime           REAL NOT NULL,
    status          TEXT NOT NULL
                    CHECK (status IN ('pending', 'stable', 'valid', 'invalid', 'deleted')),
    seen_at         REAL NOT NULL,            -- when this size/mtime was first seen
    first_scan_id   TEXT,
    deleted_scan_id TEXT,
    deleted_at      REAL,
    renamed_to      TEXT,
    probed_at       REAL,
    bytes_read      INTEGER,
    format          TEXT,
    duration        REAL,
    bit_rate        INTEGER,
    video_codec     TEXT,
    width           INTEGER,
    height          INTEGER,
    fps             REAL,
    audio_codec     TEXT,
    channels        INTEGER,
    sample_rate     INTEGER,
    probe_error     TEXT,
    -- Re-probing (rules/reprobe.py): the ffprobe that gave the verdict, why it failed
    -- (corrupt | unsupported | budget | memory | refused | timeout | transient), how many
    -- retryable failures in a row, and when the next probe is due (NULL: nothing due).
    -- Existing catalogs get them from catalog_store/schema_upgrade.py (ADD_COLUMNS).
    probe_tool_version  TEXT,
    probe_failure_class TEXT,
    probe_attempts      INTEGER NOT NULL DEFAULT 0,
    probe_retry_after   REAL,
    catalog_id      TEXT,
    series_id       TEXT,
    content_id      TEXT,
    updated_at      REAL NOT NULL,
    seq             INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS files_dir ON files (dir, status);
CREATE INDEX IF NOT EXISTS files_partition_status ON files (partition_key, status);
CREATE INDEX IF NOT EXISTS files_partition_seq ON files (partition_key, seq);
CREATE INDEX IF NOT EXISTS files_content ON files (content_id, status);
CREATE INDEX IF NOT EXISTS files_series ON files (series_id, status);

CREATE TABLE IF NOT EXISTS catalogs (
    catalog_id    TEXT PRIMARY KEY,
    partition_key TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    series_count  INTEGER NOT NULL DEFAULT 0,
    content_count INTEGER NOT NULL DEFAULT 0,
    file_count    INTEGER NOT NULL DEFAULT 0,
    total_bytes   INTEGER NOT NULL DEFAULT 0,
    deleted       INTEGER NOT NULL DEFAULT 0,
    updated_at    REAL NOT NULL,
    seq           INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS series (
    series_id     TEXT PRIMARY KEY,
    catalog_id    TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    name          TEXT NOT NULL,
    content_count INTEGER NOT NULL DEFAULT 0,
    file_count    INTEGER NOT NULL DEFAULT 0,
    deleted       INTEGER NOT NULL DEFAULT 0,
    updated_at    REAL NOT NULL,
    seq           INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS series_partition_seq ON series (partition_key, seq);

CREATE TABLE IF NOT EXISTS contents (
    content_id    TEXT PRIMARY KEY,
    series_id     TEXT NOT NULL,
    catalog_id    TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    title         TEXT NOT NULL,
    file_count    INTEGER NOT NULL DEFAULT 0,
    duration      REAL,
    player_ids    TEXT NOT NULL DEFAULT '[]',  -- JSON list, in file-name order
    deleted       INTEGER NOT NULL DEFAULT 0,
    updated_at    REAL NOT NULL,
    seq           INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS contents_partition_seq ON contents (partition_key, seq);

CREATE TABLE IF NOT EXISTS players (
    player_id     TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    content_count INTEGER NOT NULL DEFAULT 0,
    deleted       INTEGER NOT NULL DEFAULT 0,
    updated_at    REAL NOT NULL,
    seq           INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS players_seq ON players (seq);

CREATE TABLE IF NOT EXISTS content_players (
    content_id    TEXT NOT NULL,
    player_id     TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    PRIMARY KEY (content_id, player_id)
);
CREATE INDEX IF NOT EXISTS content_players_player ON content_players (player_id);

-- One row per scan; a scan killed mid-way is resumed from last_path by the next run.
-- Written in the same transaction as each batch of files.
-- scan_id, last_path, processed_files and status are the archive analyzer design's columns,
-- with its values: status 'in_progress' until the scan completes, then 'completed' (a
-- failed scan is still in progress: the next run resumes it). `state` is ours, finer:
-- running | done | failed. A catalog made before `state` existed had our values in
-- `status` under a CHECK that refuses the design's: catalog_store.schema_upgrade rebuilds
-- that one table once, in one transaction, keeping every row.
CREATE TABLE IF NOT EXISTS scan_checkpoints (
    scan_id         TEXT PRIMARY KEY,
    partition_key   TEXT NOT NULL,
    mode            TEXT NOT NULL CHECK (mode IN ('incremental', 'full')),
    status          TEXT NOT NULL CHECK (status IN ('in_progress', 'completed')),
    state           TEXT NOT NULL DEFAULT 'running'
                    CHECK (state IN ('running', 'done', 'failed')),
    last_path       TEXT,
    processed_files INTEGER NOT NULL DEFAULT 0,
    new_files       INTEGER NOT NULL DEFAULT 0,
    changed_files   INTEGER NOT NULL DEFAULT 0,
    deleted_files   INTEGER NOT NULL DEFAULT 0,
    dirs_listed     INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 1,
    error           TEXT,
    started_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    finished_at     REAL
);
CREATE INDEX IF NOT EXISTS scan_checkpoints_partition ON scan_checkpoints (partition_key, status);

-- Cursors: 'firestore:<partition>', 'firestore:players', 'catalog:<partition>'.
CREATE TABLE IF NOT EXISTS sync_state (
    stream     TEXT PRIMARY KEY,
    cursor     INTEGER NOT NULL DEFAULT 0,
    detail     TEXT,
    updated_at REAL NOT NULL
);
