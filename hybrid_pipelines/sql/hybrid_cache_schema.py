"""The hybrid cache's schema on the file server's database, as online additive steps.

`file_metadata` is the file server's table: created from its verbatim DDL only where it is
missing (a fresh database), never altered beyond adding our columns (each with a default, so
the file server's INSERTs, which name only its own columns, keep working) and our indexes
(built CONCURRENTLY: the file server keeps writing). Its columns keep the platform's types:
TIMESTAMP without zone (UTC, sessions run in UTC), nullable nas_status, VARCHAR lengths.

Columns we add:
  sync_priority: high-priority uploads sync first ('sync_priority: high' in the design)
  claimed_by / claimed_at / lease_until: which sync run holds a 'syncing' row, until when
  last_error: why the last sync or re-cache attempt failed
  nas_verified_at: when the NAS copy's SHA-256 was last checked; eviction requires it
  recache_requested: written straight to the NAS while SeaweedFS was down; copy it back
  cache_hits / cache_misses: the file server's access counters per file
"""

from __future__ import annotations

from hybrid_pipelines.sql.migrations import Step, add_column, create_index, create_table
from hybrid_pipelines.sql.platform import FILE_SERVER, platform_ddl

D = "hybrid_cache"
T = "file_metadata"

# Eviction candidates: cached, synced and verified on the NAS (rules/eviction_policy.ORDER_BY
# reads them in these orders).
_EVICTABLE = ("cache_status = 'cached' AND nas_status = 'synced' "
              "AND nas_verified_at IS NOT NULL")
# The sync queue: the platform writes 'pending'; a NULL status is a row it wrote oddly and is
# treated as not synced, i.e. queued (metadata_store.PENDING).
_QUEUED = "COALESCE(nas_status, 'pending') = 'pending'"

_BACKEND_CIRCUIT = """CREATE TABLE IF NOT EXISTS backend_circuit (
    backend              TEXT PRIMARY KEY,
    state                TEXT NOT NULL DEFAULT 'closed'
                         CHECK (state IN ('closed', 'open', 'half_open')),
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    opened_at            DOUBLE PRECISION,   -- seconds since the epoch
    last_error           TEXT NOT NULL DEFAULT '',
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
)"""

# Which file owns which name on the NAS (rules/nas_keys.canonical_key), so two rows whose paths
# are one file to Samba can never both be placed there.
_RESERVATIONS = """CREATE TABLE IF NOT EXISTS nas_path_reservations (
    canonical_key TEXT COLLATE "C" PRIMARY KEY,
    file_id       UUID NOT NULL,
    nas_path      TEXT NOT NULL,
    reserved_at   TIMESTAMPTZ NOT NULL DEFAULT now()
)"""

STEPS: list[Step] = [
    create_table(D, T, platform_ddl(FILE_SERVER),
                 "create table file_metadata from the file server's DDL (only where missing)"),
    add_column(D, T, "sync_priority", "INTEGER NOT NULL DEFAULT 0"),
    add_column(D, T, "claimed_by", "TEXT"),
    add_column(D, T, "claimed_at", "TIMESTAMPTZ"),
    add_column(D, T, "lease_until", "TIMESTAMPTZ"),
    add_column(D, T, "last_error", "TEXT"),
    add_column(D, T, "nas_verified_at", "TIMESTAMPTZ"),
    add_column(D, T, "recache_requested", "BOOLEAN NOT NULL DEFAULT false"),
    add_column(D, T, "cache_hits", "BIGINT NOT NULL DEFAULT 0"),
    add_column(D, T, "cache_misses", "BIGINT NOT NULL DEFAULT 0"),
    create_table(D, "backend_circuit", _BACKEND_CIRCUIT),
    create_table(D, "nas_path_reservations", _RESERVATIONS),
    create_index(D, "nas_path_reservations_file_idx", "nas_path_reservations", "(file_id)",
                 concurrently=False),
    create_index(D, "file_metadata_pending_idx", T, "(sync_priority DESC, created_at, id)",
                 where=_QUEUED),
    create_index(D, "file_metadata_sync_lease_idx", T, "(lease_until)",
                 where="nas_status = 'syncing'"),
    create_index(D, "file_metadata_evict_lru_idx", T,
                 "(COALESCE(last_accessed, created_at), id)", where=_EVICTABLE),
    create_index(D, "file_metadata_evict_lfu_idx", T,
                 "(access_count, COALESCE(last_accessed, created_at), id)", where=_EVICTABLE),
    create_index(D, "file_metadata_evict_fifo_idx", T, "(created_at, id)", where=_EVICTABLE),
    create_index(D, "file_metadata_recache_idx", T, "(sync_priority DESC, created_at, id)",
                 where="recache_requested AND cache_status IS NULL"),
    # The audit's sorted merges with listings, and every lookup of a key's rows.
    create_index(D, "file_metadata_fid_idx", T, "(seaweed_fid COLLATE \"C\")"),
    create_index(D, "file_metadata_nas_path_idx", T, "(nas_path COLLATE \"C\")"),
]
