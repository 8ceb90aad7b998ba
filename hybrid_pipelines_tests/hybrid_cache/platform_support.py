"""The file server simulated beside a hybrid-cache job (dev/platform_sim/file_server.py):
run it in a thread, then check that every row it wrote still holds what it wrote."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from hybrid_pipelines.dev.platform_sim.file_server import FileServerSim

from .conftest import row

# The file server's own columns that our jobs only read.
PLATFORM_OWNED = ("original_name", "stored_name", "mime_type", "size", "hash", "seaweed_fid",
                  "nas_path")


def file_server(postgres: Any, s3: Any, s3_resource: Any, prefix: str) -> FileServerSim:
    return FileServerSim(postgres.conninfo(), s3, s3_resource.bucket, s3_resource.master_url,
                         key_prefix=f"{prefix}/sim/", nas_prefix=f"{prefix}/sim")


@contextmanager
def writing(sim: FileServerSim, seed: int = 1, interval_s: float = 0.02) -> Iterator[None]:
    """The writer ticking in a thread for the duration of the block; its error fails the
    test (a write the platform could not make is a finding, not noise)."""
    stop = threading.Event()
    errors: list[BaseException] = []
    before = len(sim.uploads)

    def target() -> None:
        try:
            sim.run(stop, interval_s, random.Random(seed))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
    assert not errors, f"the simulated file server failed while the job ran: {errors[0]!r}"
    assert len(sim.uploads) > before, "the writer wrote nothing while the job ran"


def assert_platform_rows_intact(conn: psycopg.Connection, sim: FileServerSim) -> None:
    """Every row the writer inserted is there, its own columns as written, its access
    counters exactly what its downloads made them, its status columns platform values."""
    for up in sim.uploads.values():
        r = row(conn, up.id)
        for col in PLATFORM_OWNED:
            assert r[col] == getattr(up, col), (up.id, col, r[col], getattr(up, col))
        assert r["access_count"] == sim.downloads.get(up.id, 0), up.id
        assert (r["last_accessed"] is not None) == (up.id in sim.downloads), up.id
        assert r["created_at"].tzinfo is None  # still the platform's TIMESTAMP
        assert r["nas_status"] in ("pending", "syncing", "synced", "failed"), r["nas_status"]
        assert r["cache_status"] in ("cached", None)
        if r["nas_status"] == "synced":
            assert r["synced_at"] is not None and r["last_sync_at"] is not None
