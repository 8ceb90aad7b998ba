"""Putting one verified copy at its NAS name: never over another file, only by the run that
still owns the row, and recognising the copy a crashed run already put there.

The name is first reserved in PostgreSQL (nas_path_reservations, keyed as the NAS compares
names), so a second row wanting it is refused with the first one's id. The NAS then has the
last word: the rename never replaces, and a name found taken is ours only if it holds exactly
our bytes (size and SHA-256 read back); anything else is a conflict, left untouched."""

from __future__ import annotations

import logging
from uuid import UUID

import psycopg

from hybrid_pipelines.hybrid_cache import metadata_store as store
from hybrid_pipelines.hybrid_cache.hashing_copy import Progress, sha256_of_stream
from hybrid_pipelines.hybrid_cache.rules.nas_keys import canonical_key
from hybrid_pipelines.hybrid_cache.sync_errors import (
    LeaseLost,
    NASConflictError,
    PermanentSyncError,
)
from hybrid_pipelines.resources.nas_fs import NASEntry, NASFileSystem
from hybrid_pipelines.resources.nas_new_file import NewFile

log = logging.getLogger(__name__)


def reserve(conn: psycopg.Connection, row: store.FileRow, target: str) -> None:
    """Reserve `target` for this row, or fail for good naming the file that holds it."""
    key = canonical_key(target)
    holder: UUID = store.reserve_nas_path(conn, key, row.id, target)
    if holder != row.id:
        raise PermanentSyncError(
            f"file {holder} already holds NAS name {target!r} (the NAS compares names as "
            f"{key!r}): give file {row.id} its own nas_path, then retry it")
    # Rows synced before reservations existed hold none; an exact match still protects them.
    if other := store.nas_path_taken_by(conn, target, row.id):
        raise PermanentSyncError(f"file {other} is already synced at NAS path {target!r}: give "
                                 f"file {row.id} its own nas_path, then retry it")


def place(conn: psycopg.Connection, nas: NASFileSystem, row: store.FileRow, new: NewFile,
          target: str, sha256: str, owner: str, keeper: Progress, chunk_size: int) -> bool:
    """Rename the verified `new` file to `target` (through its own handle, which this
    closes) and mark the row synced, both while the row is locked with our lease still
    valid, so no other run can take the row over between the check and the rename. Returns
    False when `target` already held our bytes (adopted; `new` removed). Raises LeaseLost
    (nothing renamed) or NASConflictError. `conn` is the calling thread's own (sync_pipeline:
    each copy worker places its files on its own connection)."""
    with conn.transaction():
        if not store.lock_own_lease(conn, row.id, owner):
            raise LeaseLost(row.id)
        try:
            new.rename_and_close(target)
            taken = False
        except FileExistsError:
            taken = True
        if not taken:
            if not store.mark_synced(conn, row.id, owner, sha256, target):
                raise LeaseLost(row.id)  # unreachable while we hold the row lock
            return True
    remove_quietly(nas, new.path)
    adopt_existing(conn, nas, row, target, sha256, owner, keeper, chunk_size)
    return False


def adopt_existing(conn: psycopg.Connection, nas: NASFileSystem, row: store.FileRow,
                   target: str, sha256: str, owner: str, keeper: Progress, chunk_size: int,
                   entry: NASEntry | None = None) -> None:
    """`target` exists. Exactly our bytes: a run placed them and stopped before marking the
    row (or the same bytes were put there by hand), so the row is synced. Anything else is
    not ours: fail the row for good and leave the file as it is."""
    entry = entry or nas.stat(target)
    if entry is None:
        raise RuntimeError(f"NAS path {target!r} was taken and freed again during the rename; "
                           "the next attempt places the file")
    if entry.is_dir:
        raise NASConflictError(f"NAS already holds a folder at {target!r}; it was left "
                               f"untouched: give file {row.id} another nas_path, then retry it")
    if entry.size == row.size:
        with nas.open_read(target) as fh:
            held = sha256_of_stream(fh, chunk_size, progress=keeper)
        if held.size == row.size and held.sha256 == sha256:
            if not store.mark_synced(conn, row.id, owner, sha256, target):
                raise LeaseLost(row.id)
            log.info("file %s: NAS already held its verified bytes at %s", row.id, target)
            return
        what = f"same size, SHA-256 {held.sha256[:12]}... not {sha256[:12]}..."
    else:
        what = f"{entry.size} bytes, this file has {row.size}"
    raise NASConflictError(
        f"NAS already holds a different file at {target!r} ({what}); it was left untouched. "
        f"Move that file aside on the NAS or give file {row.id} another nas_path, then retry it")


def remove_quietly(nas: NASFileSystem, path: str) -> None:
    try:
        nas.remove(path)
    except Exception as exc:  # noqa: BLE001 - the reconcile job removes stale temporaries
        log.warning("could not remove temporary NAS file %s: %s", path, exc)
