"""A built catalog of 150 small files (3 seasons x 50 episodes, Korean in every name) on a
local share, as the Firestore sync tests start from; and a private Firestore emulator for
tests that kill theirs. The catalog is built once per module and copied for each test with
SQLite's backup API: the scan and build are not what these tests measure."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hybrid_pipelines.dev.stack.firestore import FirestoreEmulator
from hybrid_pipelines.media_catalog.catalog_build import build_catalog
from hybrid_pipelines.media_catalog.catalog_store import CatalogStore
from hybrid_pipelines.media_catalog.nas_access import NASAccess
from hybrid_pipelines.media_catalog.scan import Scanner
from hybrid_pipelines.media_catalog.settings import CatalogSettings
from hybrid_pipelines.resources import NASResource, SQLiteCatalogResource
from hybrid_pipelines.resources.nas_fs import NAS_SENTINEL
from hybrid_pipelines.resources.sqlite_catalog import open_catalog
from hybrid_pipelines_tests.conftest import ServerFactory
from hybrid_pipelines_tests.media_catalog.conftest import put


def build_small_catalog(root: Path, folder: str) -> Path:
    """Scan and build `folder` (150 files) into root/catalog.db; returns the database path."""
    nas_root = root / "nas"
    for s in range(3):
        for e in range(50):
            put(nas_root, f"{folder}/Season {s}/Ep {e:02d} - 선수 {e} vs B.ts", b"x" * (e + 1))
    (nas_root / NAS_SENTINEL).touch()  # a plain directory standing in for the mounted share
    res = SQLiteCatalogResource(path=str(root / "catalog.db"))
    res.apply_schema("catalog")
    conn = open_catalog(res.path)
    try:
        store, settings = CatalogStore(conn), CatalogSettings()
        nas = NASResource(protocol="local", local_root=str(nas_root))
        Scanner(store, NASAccess(nas, (0.05,)), settings).scan(folder, folder)
        build_catalog(store, settings, folder)
    finally:
        conn.close()
    return root / "catalog.db"


@contextmanager
def catalog_copy(template: Path, dest: Path) -> Iterator[CatalogStore]:
    """A private copy of a built catalog (consistent even with the template in WAL mode)."""
    src, dst = sqlite3.connect(template), sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    conn = open_catalog(str(dest))
    try:
        yield CatalogStore(conn)
    finally:
        conn.close()


def private_emulator(server_factory: ServerFactory) -> FirestoreEmulator:
    server = server_factory("firestore")  # private: the test kills it
    assert isinstance(server, FirestoreEmulator)
    return server
