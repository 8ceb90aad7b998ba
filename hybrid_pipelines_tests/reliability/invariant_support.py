"""Helpers of the storage-invariant state machine (test_storage_invariant.py): the NAS as Samba
resolves a path, the servers the machine kills and restarts, and a clean slate per example.

NAS bytes are read from the share's disk, underneath Samba, so the invariants can be checked
while smbd is down. Samba (default `case sensitive = auto`) serves SMB3 clients
case-insensitively: `inv/uploads/a.pdf` opens the file stored as `inv/Uploads/A.PDF`, and a
rename onto either name replaces that one file (checked on this stack). `samba_resolve` follows
the same rule, so "the file at a row's nas_path" means what a client of the share would get."""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql as pgsql

from hybrid_pipelines.dev.stack.process import wait_until
from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.dev.stack.seaweedfs import SeaweedFSServer
from hybrid_pipelines.resources import NASResource, PostgresResource, SeaweedFSResource
from hybrid_pipelines.resources.nas_fs import NASFileSystem
from hybrid_pipelines.shared.nas_paths import UnsafePathError, safe_relpath
from hybrid_pipelines_tests.conftest import nas_resource_for

BUCKET = "media-cache"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- the share as Samba resolves it ----------------------------------------------------------

def _parts(nas_path: str | None) -> list[str] | None:
    if not nas_path:
        return None
    try:
        clean = safe_relpath(nas_path)  # the project's own normalisation: `a\b`, `a//b` -> a/b
    except UnsafePathError:
        return None
    return clean.split("/") if clean else None


def _child(directory: Path, name: str) -> Path | None:
    """An exact match first, else a case-insensitive one, as Samba looks a name up."""
    exact = directory / name
    if os.path.lexists(exact):
        return exact
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return None
    folded = name.casefold()
    for other in names:
        if other.casefold() == folded:
            return directory / other
    return None


def samba_resolve(share_dir: Path, nas_path: str | None) -> Path | None:
    """The regular file a client of the share opens at `nas_path`, or None."""
    parts = _parts(nas_path)
    if parts is None:
        return None
    cur: Path | None = share_dir
    for part in parts:
        cur = _child(cur, part) if cur is not None else None
        if cur is None:
            return None
    if cur is None or cur.is_symlink() or not cur.is_file():
        return None
    return cur


def samba_target(share_dir: Path, nas_path: str | None) -> Path | None:
    """Where a client writing `nas_path` creates the file: existing folders are reused
    whatever their case, missing ones take the case given."""
    parts = _parts(nas_path)
    if parts is None:
        return None
    cur = share_dir
    for part in parts[:-1]:
        found = _child(cur, part)
        if found is not None and not found.is_dir():
            return None  # a file stands where a folder is wanted: no client could write there
        cur = found if found is not None else cur / part
    return _child(cur, parts[-1]) or cur / parts[-1]


def file_sha(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return sha(path.read_bytes())
    except OSError:
        return None


# ---- servers ---------------------------------------------------------------------------------

def _smbd_tree(pid: int) -> list[int]:
    """smbd and the children it forked per client connection."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            kids = task / "children"
            todo.extend(int(c) for c in (kids.read_text().split() if kids.exists() else []))
    return out


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_samba(server: SambaServer) -> None:
    """SIGKILL smbd and its per-connection children at once, as a crashed NAS vanishes. As
    root: signal the tree and wait for it to die (stop_pid's wait for orphaned children takes
    ~1.5 s a kill, too slow for a machine that kills smbd often); as a normal user smbd runs
    through sudo and its own kill() signals it that way."""
    pid = server.pid
    if pid is None:
        return
    if os.geteuid() != 0:
        server.kill()
        return
    tree = _smbd_tree(pid)
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_until(lambda: all(map(_gone, tree)), 10, "smbd and its children to die")
    try:
        os.waitpid(pid, os.WNOHANG)  # smbd is our child: reap it
    except ChildProcessError:
        pass
    server.pid = None


def seaweed_serving(server: SeaweedFSServer) -> bool:
    if not server.s3_ready():
        return False
    try:  # volume servers re-register a moment after the gateway answers
        client = server.s3_client()
        client.put_object(Bucket=BUCKET, Key="probe/ready", Body=b"1")
        client.delete_object(Bucket=BUCKET, Key="probe/ready")
        return True
    except Exception:  # noqa: BLE001 - not yet
        return False


def restart_seaweed(server: SeaweedFSServer) -> None:
    """Start it again on the same data directory. weed killed moments after a start sometimes
    dies once on restart (its filer panics: "raft.Server: Not current leader"); a second start
    serves, and the data is what the invariants then check."""
    for attempt in range(3):
        try:
            if server.pid is not None:
                server.kill()
            server.start()
            wait_until(lambda: seaweed_serving(server), 60, "SeaweedFS serving after a restart")
            return
        except RuntimeError:
            if attempt == 2:
                raise


@dataclass
class Stack:
    """The machine's private servers (it kills two of them). SeaweedFS clients are kept per
    role ("A"/"B" for the two sync runs, as two runs have their own) and dropped when the
    server restarts, which may move it to new ports; a boto3 client costs ~0.1 s to make."""

    pg: PostgresResource
    samba: SambaServer
    seaweed: SeaweedFSServer
    _sw: dict[str, SeaweedFSResource] = field(default_factory=dict)

    def sw(self, role: str = "main") -> SeaweedFSResource:
        s = self.seaweed
        res = self._sw.get(role)
        if res is None or res.endpoint_url != s.address:
            # One attempt, short timeouts: a dead server is an error at once, not after
            # back-off.
            res = self._sw[role] = SeaweedFSResource(
                endpoint_url=s.address, master_url=s.master_url, aws_access_key_id=s.access_key,
                aws_secret_access_key=s.secret_key, bucket=BUCKET, max_attempts=1,
                connect_timeout_s=2, read_timeout_s=10)
        return res

    def s3(self) -> Any:
        return self.sw("main").get_client()

    def seaweed_restarted(self) -> None:
        self._sw.clear()

    @contextmanager
    def nas(self) -> Iterator[tuple[NASResource, NASFileSystem]]:
        """A NAS resource with its own SMB sessions (as one Dagster run has), closed after."""
        res = nas_resource_for(self.samba).model_copy(update={"timeout_s": 5.0})
        try:
            yield res, res.fs()
        finally:
            import smbclient

            smbclient.reset_connection_cache(fail_on_error=False,
                                             connection_cache=res.connection_cache())

    @contextmanager
    def conn(self) -> Iterator[psycopg.Connection]:
        with self.pg.connect(autocommit=True) as c:
            yield c

    def reset(self) -> None:
        """A clean slate for the next example: tables, bucket and share emptied."""
        with self.conn() as c:
            # Every table of this private database: the hybrid cache's schema only, including
            # whatever tables the fixes add (nas_path_reservations, ...).
            tables = [r[0] for r in c.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
            c.execute(pgsql.SQL("TRUNCATE {}").format(
                pgsql.SQL(", ").join(map(pgsql.Identifier, tables))))
        client = self.s3()
        keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET) for o in page.get("Contents", [])]
        for i in range(0, len(keys), 1000):
            client.delete_objects(Bucket=BUCKET, Delete={
                "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
        share = self.samba.share_dir
        for child in share.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()


def call_by_name(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Call `fn` with the keyword arguments its current signature names, so the machine keeps
    working while the fixes under way add or move parameters (eviction gained the NAS, to
    re-check it). A parameter it requires and we lack still fails, naming it."""
    params = inspect.signature(fn).parameters
    return fn(**{k: v for k, v in kwargs.items() if k in params})
