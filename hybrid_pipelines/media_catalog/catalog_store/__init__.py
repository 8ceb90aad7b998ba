"""Every SQL statement of the media catalog (SQLite). Parameterised, one writer at a time.

The connection comes from SQLiteCatalogResource (autocommit mode, WAL); `transaction()`
opens BEGIN IMMEDIATE so a batch of rows, its checkpoint and its change numbers commit or
roll back together.

The statements are grouped by what they serve, one module each: scan state and checkpoints
(scan_state), probe results (probe_results), the change feed the Firestore sync reads
(change_feed), and the catalog entities (entities); base holds the connection and the change
numbers they all share. CatalogStore puts them back together, so callers see one store on
one connection.
"""

from __future__ import annotations

from hybrid_pipelines.media_catalog.catalog_store.base import (
    PROBE_FIELDS,
    apply_schema,
    has_schema,
    parent_of,
    prefix_bounds,
)
from hybrid_pipelines.media_catalog.catalog_store.change_feed import ChangeFeedStore, ChangeRow
from hybrid_pipelines.media_catalog.catalog_store.entities import EntityStore, json_list
from hybrid_pipelines.media_catalog.catalog_store.probe_results import ProbeStore
from hybrid_pipelines.media_catalog.catalog_store.scan_state import Checkpoint, ScanStore


class CatalogStore(ScanStore, ProbeStore, ChangeFeedStore, EntityStore):
    """Every catalog statement on one connection; the parts share StoreBase's transaction()
    and change numbers, so a scan batch, its checkpoint and its seqs still commit together."""


__all__ = [
    "PROBE_FIELDS",
    "CatalogStore",
    "ChangeRow",
    "Checkpoint",
    "apply_schema",
    "has_schema",
    "json_list",
    "parent_of",
    "prefix_bounds",
]
