"""Shared plumbing of the AI-tier jobs: advisory locks and the tier protocol (no Dagster)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import psycopg

# Two-key advisory locks: (namespace, hashtext(name)). The namespaces keep our keys apart from
# other users of single-key advisory locks (apply_schema takes one). A hashtext collision only
# makes two unrelated items wait for each other, never run together.
NS_MODEL = 7301
NS_OUTPUT = 7302
NS_EFS_OBJECT = 7303
NS_CONTEXT_EXPIRY = 7304
NS_CONVERSATION = 7305


class PosixTier(Protocol):
    """What a job needs of a mounted tier (JuiceFSResource, EFSResource)."""

    def root(self) -> Path: ...

    def path(self, rel: str) -> Path: ...

    def require_healthy(self) -> None: ...


@contextmanager
def advisory_lock(conn: psycopg.Connection, namespace: int, name: str) -> Iterator[None]:
    """A session-level lock held across several transactions (copy, verify, update, delete).
    The server drops it if the connection dies, so a killed run never leaves it held."""
    conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (namespace, name))
    try:
        yield
    finally:
        if not conn.closed and not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (namespace, name))


def try_advisory_lock(conn: psycopg.Connection, namespace: int, name: str) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                       (namespace, name)).fetchone()
    return bool(row and row[0])


def unlock(conn: psycopg.Connection, namespace: int, name: str) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (namespace, name))
