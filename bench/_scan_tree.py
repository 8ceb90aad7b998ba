"""What bench/scan.py and bench/scan_growth.py share: the share's tree (built once per shape
and, when large, kept under the git-ignored .local/bench-cache), a private Samba server on it,
the realistic link in a process of its own (its relay threads must not take our scan's
interpreter lock), Samba's own `smbclient -c 'recurse; ls'`, and our measurements with the
peak RSS of each."""

from __future__ import annotations

import multiprocessing
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _netlink import NAS_LINK  # noqa: E402 - bench/ is on sys.path when a script runs

from hybrid_pipelines.dev.stack.process import free_port  # noqa: E402
from hybrid_pipelines.dev.stack.samba import SambaServer, samba_available  # noqa: E402
from hybrid_pipelines.media_catalog.catalog_store import CatalogStore  # noqa: E402
from hybrid_pipelines.media_catalog.nas_access import NASAccess  # noqa: E402
from hybrid_pipelines.media_catalog.scan import Scanner  # noqa: E402
from hybrid_pipelines.media_catalog.settings import CatalogSettings  # noqa: E402
from hybrid_pipelines.resources import NASResource  # noqa: E402
from hybrid_pipelines.resources.sqlite_catalog import open_catalog  # noqa: E402

FOLDER = "Archive"
CACHE = HERE.parent / ".local" / "bench-cache"
CACHE_FROM_FILES = 200_000  # smaller trees build in seconds: a temp folder is enough


def cannot_run() -> str | None:
    """Why this machine cannot run the scan benches (Samba, and smbclient as the baseline)."""
    if why := samba_available():
        return why
    if not shutil.which("smbclient"):
        return "smbclient is not installed (apt-get install smbclient)"
    return None


def build_tree(share: Path, seasons: int, episodes: int, per_dir: int) -> tuple[int, int]:
    """Empty files, finished long ago (stable at first sight), `per_dir` per leaf folder."""
    old = time.time() - 86400
    files = 0
    for s in range(seasons):
        for e in range(episodes):
            d = share / FOLDER / f"Season {s:03d}" / f"Episode {e:03d}"
            d.mkdir(parents=True)
            for f in range(per_dir):
                p = str(d / f"take {f:03d}.mp4")
                os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))
                os.utime(p, (old, old))
                files += 1
    return files, 1 + seasons + seasons * episodes


@dataclass
class Served:
    server: SambaServer
    files: int
    dirs: int
    auth: Path
    built_s: float
    cached: bool

    def nas(self, port: int | None = None) -> NASResource:
        s = self.server
        return NASResource(protocol="smb", host="127.0.0.1", port=port or s.port,
                           share=s.share, username=s.username, password=s.password)


@contextmanager
def served_tree(seasons: int, episodes: int, per_dir: int) -> Iterator[Served]:
    """Samba serving the tree; a large tree is built once and kept in the bench cache (a
    marker written after the last file says it is whole)."""
    n = seasons * episodes * per_dir
    tmp = Path(tempfile.mkdtemp(prefix="bench-scan-"))
    cached = n >= CACHE_FROM_FILES
    root = CACHE / f"scan-{seasons}x{episodes}x{per_dir}" if cached else tmp / "samba"
    marker = root / "tree-complete"
    server = SambaServer(root=root, port=free_port(), password=secrets.token_hex(12))
    try:
        t0 = time.perf_counter()
        reused = cached and marker.exists()
        if not reused:
            marker.unlink(missing_ok=True)
            shutil.rmtree(server.share_dir / FOLDER, ignore_errors=True)
            server.share_dir.mkdir(parents=True, exist_ok=True)
            build_tree(server.share_dir, seasons, episodes, per_dir)
            if cached:
                marker.touch()
        server.start()
        auth = tmp / "auth.txt"
        auth.write_text(f"username = {server.username}\npassword = {server.password}\n")
        auth.chmod(0o600)
        yield Served(server, n, 1 + seasons + seasons * episodes, auth,
                     time.perf_counter() - t0, reused)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def link_to(port: int) -> Iterator[int]:
    """bench/_netlink.py's NAS link (0.5 ms round trip, 1 Gb/s) to 127.0.0.1:port, run in a
    process of its own; yields the port to connect to."""
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); from _netlink import NetLink; "
            f"lk = NetLink('127.0.0.1', {port}, **{NAS_LINK!r}); lk.__enter__(); "
            "print(lk.port, flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(HERE)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def smbclient_ls(served: Served, port: int) -> float:
    s = served.server
    cmd = ["smbclient", f"//127.0.0.1/{s.share}", "-p", str(port), "-A", str(served.auth),
           "-m", "SMB3", "-D", FOLDER, "-c", "recurse; ls"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=True).stdout
    elapsed = time.perf_counter() - t0
    listed = sum(1 for line in out.splitlines() if line.strip().startswith("take "))
    assert listed == served.files, f"smbclient listed {listed} of {served.files} files"
    return elapsed


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := current RSS
    except OSError:
        pass


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib() -> float:
    return _status_mib("VmHWM")


@dataclass
class ScanRun:
    seconds: float
    found: int
    listings: int
    new: int
    peak_rss_mib: float
    start_rss_mib: float  # the process's RSS as the scan began (printed beside the peak)


def our_scan(nas: NASResource, db: Path) -> ScanRun:
    """Scanner.scan of the tree into the SQLite catalog at `db` (first scan when it is new)."""
    conn = open_catalog(db)
    try:
        store = CatalogStore(conn)
        store.conn.executescript(
            (HERE.parent / "hybrid_pipelines/sql/catalog.sql").read_text())
        access = NASAccess(nas, (1.0, 2.0, 4.0))
        _reset_peak_rss()
        start = _status_mib("VmRSS")
        t0 = time.perf_counter()
        report = Scanner(store, access, CatalogSettings()).scan(FOLDER, FOLDER)
        elapsed = time.perf_counter() - t0
        return ScanRun(elapsed, report.found, access.listings, report.new, peak_rss_mib(),
                       start)
    finally:
        conn.close()


def our_scan_in_own_process(nas: NASResource, db: Path) -> ScanRun:
    """our_scan in a process of its own, spawned rather than forked: its peak RSS is the
    scan's (and the imports'), not what this process kept from building the tree or from
    holding smbclient's listing of half a million lines (that alone made the 500,000-file
    scan look 40 MiB heavier: its own peak never rose above the RSS it started from)."""
    settings = {k: getattr(nas, k) for k in ("protocol", "host", "port", "share", "username",
                                               "password")}  # a resource holds locks
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_our_scan_of, (settings, db))


def _our_scan_of(settings: dict[str, object], db: Path) -> ScanRun:
    return our_scan(NASResource(**settings), db)  # type: ignore[arg-type]


def listing_walk(nas: NASResource) -> tuple[float, int]:
    """Our pipelined listing of the whole tree, no SQLite: what the first scan's listing
    costs (files counted)."""
    access = NASAccess(nas)
    t0 = time.perf_counter()
    n = 0
    with access.pipelined():
        stack = [FOLDER]
        while stack:
            entries = sorted(access.list_dir(stack.pop()) or [], key=lambda e: e.path)
            subdirs = [e.path for e in entries if e.is_dir]
            access.announce(subdirs)
            stack.extend(reversed(subdirs))  # depth first, in name order
            n += len(entries) - len(subdirs)
    return time.perf_counter() - t0, n
