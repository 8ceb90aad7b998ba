"""The local SQLite media catalog (WAL mode)."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources as pkg_resources
from pathlib import Path

import dagster as dg

from hybrid_pipelines.resources.errors import Health, probe_health, require
from hybrid_pipelines.shared.mounts import is_mount_point

ENV_VARS = ("HP_SQLITE_CATALOG_PATH", "HP_SQLITE_CATALOG_REQUIRE_MOUNT")
WAL_CHECKPOINT_PAGES = 8192
CACHE_KIB = 8192

# (catalog file, schema) applied by this process; a file that was deleted since is applied
# again. Process state, not a connection cache.
_APPLIED: set[tuple[str, str]] = set()
_APPLIED_LOCK = threading.Lock()


def require_catalog_mount(path: str | Path) -> None:
    """A deployed catalog lives on its own volume: a pod that lacks the mount must fail, not
    start an empty catalog in the container's scratch space and report every file as new.
    A volume on the root's own device counts too (shared/mounts.py: the kernel's mount table,
    not only a device change)."""
    folder = Path(path).parent
    if not is_mount_point(folder):
        raise RuntimeError(
            f"SQLite catalog folder {folder} is not a mount point (HP_SQLITE_CATALOG_REQUIRE_MOUNT"
            f"=true): this pod lacks the catalog volume; mount it at {folder} (deploy/k8s/"
            "catalog.yaml) or set HP_SQLITE_CATALOG_REQUIRE_MOUNT=false where a plain folder "
            "is meant")


def open_catalog(path: str | Path, timeout_s: float = 30.0,
                 require_mount: bool = False) -> sqlite3.Connection:
    if require_mount:
        require_catalog_mount(path)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=timeout_s, isolation_level=None)
    conn.row_factory = sqlite3.Row
    # WAL lets the Firestore sync read while a scan writes; NORMAL is durable at checkpoints
    # and loses at most the last transactions on power loss, never corrupts.
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    # A checkpoint every WAL_CHECKPOINT_PAGES rather than SQLite's 1,000: each one fsyncs
    # the WAL and the database, and a first scan of 50,000 files crossed a dozen of them
    # (bench/scan.py: ~10% of its time). The WAL file grows to ~32 MiB between them.
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
    # 8 MiB of page cache rather than 2: a scan's rows land at random places of the file_id
    # index, whose pages kept falling out of 2 MiB (bench/scan.py, 50,400 files: first scan
    # ~9% faster).
    # A ceiling, not an allocation: the scan's peak RSS stays flat from 10,000 to 500,000
    # files (bench/scan_growth.py).
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
    return conn


class SQLiteCatalogResource(dg.ConfigurableResource):
    path: str = ".local/catalog/catalog.db"
    timeout_s: float = 30.0
    require_mount: bool = False

    @property
    def address(self) -> str:
        return f"sqlite://{self.path}"

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        conn = open_catalog(self.path, self.timeout_s, self.require_mount)
        try:
            yield conn
        finally:
            conn.close()

    def apply_schema(self, name: str = "catalog", force: bool = False) -> None:
        """Apply `sql/<name>.sql` (idempotent) the first time this process meets this file;
        skipped afterwards unless the file is gone or `force` is set."""
        key = (os.path.abspath(self.path), name)
        with _APPLIED_LOCK:
            if not force and key in _APPLIED and os.path.exists(key[0]):
                return
        sql = pkg_resources.files("hybrid_pipelines.sql").joinpath(f"{name}.sql").read_text()
        with self.connect() as conn:
            conn.executescript(sql)
        with _APPLIED_LOCK:
            _APPLIED.add(key)

    def health(self) -> Health:
        def check() -> str:
            with self.connect() as conn:
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                ok = conn.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise RuntimeError(f"integrity check failed: {ok}")
            return f"journal_mode={mode}"

        return probe_health("SQLite catalog", self.address, check,
                            lambda e: f"{type(e).__name__}: {e}")

    def require_healthy(self) -> None:
        require(self.health(), ENV_VARS)
