"""NAS scan: first scan vs rescan of an unchanged tree, and vs Samba's own client.

Starts a private Samba server on a free port, fills its share with a tree of small files
(>= 50,000 files in ~1,100 directories; ~5,000 with --quick) and measures, on the same tree:

* first scan: our Scanner into an empty SQLite catalog (listing + rows + checkpoints);
* rescan of the unchanged tree: the same Scanner, which lists only directories that hold
  subdirectories (a directory's timestamp is only visible in its parent's listing);
* `smbclient -c 'recurse; ls'`: Samba's C client listing the whole tree (baseline);
* a plain smbprotocol scandir walk, and our lean listing walk (one compound request per
  directory, entries decoded with struct): what the first scan's listing costs without SQLite.

Usage: .venv/bin/python bench/scan.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _claims import claim  # bench/ is on sys.path when a script runs

from hybrid_pipelines.dev.stack.process import free_port  # noqa: E402
from hybrid_pipelines.dev.stack.samba import SambaServer, samba_available  # noqa: E402
from hybrid_pipelines.media_catalog.catalog_store import CatalogStore  # noqa: E402
from hybrid_pipelines.media_catalog.nas_access import NASAccess  # noqa: E402
from hybrid_pipelines.media_catalog.scan import Scanner  # noqa: E402
from hybrid_pipelines.media_catalog.settings import CatalogSettings  # noqa: E402
from hybrid_pipelines.resources import NASResource  # noqa: E402
from hybrid_pipelines.resources.nas_fs import walk_files  # noqa: E402
from hybrid_pipelines.resources.sqlite_catalog import open_catalog  # noqa: E402

FOLDER = "Archive"


def build_tree(share: Path, seasons: int, episodes: int, per_dir: int) -> tuple[int, int]:
    old = time.time() - 86400
    files = 0
    for s in range(seasons):
        for e in range(episodes):
            d = share / FOLDER / f"Season {s:03d}" / f"Episode {e:03d}"
            d.mkdir(parents=True)
            for f in range(per_dir):
                p = d / f"take {f:03d}.mp4"
                p.write_bytes(b"")
                os.utime(p, (old, old))
                files += 1
    return files, 1 + seasons + seasons * episodes


def smbclient_ls(server: SambaServer, auth: Path) -> tuple[float, int]:
    cmd = ["smbclient", f"//127.0.0.1/{server.share}", "-p", str(server.port), "-A", str(auth),
           "-m", "SMB3", "-D", FOLDER, "-c", "recurse; ls"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    elapsed = time.perf_counter() - t0
    files = sum(1 for line in out.splitlines() if line.rstrip().endswith(")") is False
                and " take " in f" {line.strip()}")
    return elapsed, files


def our_scan(nas: NASResource, db: Path) -> tuple[float, int, int, int]:
    conn = open_catalog(db)
    try:
        store = CatalogStore(conn)
        store.conn.executescript(
            (Path(__file__).resolve().parents[1] / "hybrid_pipelines/sql/catalog.sql").read_text())
        access = NASAccess(nas, (1.0, 2.0, 4.0))
        t0 = time.perf_counter()
        report = Scanner(store, access, CatalogSettings()).scan(FOLDER, FOLDER)
        elapsed = time.perf_counter() - t0
        return elapsed, report.found, access.listings, report.new
    finally:
        conn.close()


def plain_walk(nas: NASResource) -> tuple[float, int]:
    fs = nas.fs()
    t0 = time.perf_counter()
    n = sum(1 for _ in walk_files(fs, FOLDER))
    return time.perf_counter() - t0, n


def lean_walk(nas: NASResource) -> tuple[float, int, int]:
    access = NASAccess(nas)
    t0 = time.perf_counter()
    n, stack = 0, [FOLDER]
    while stack:
        for e in access.list_dir(stack.pop()) or []:
            if e.is_dir:
                stack.append(e.path)
            else:
                n += 1
    return time.perf_counter() - t0, n, access.listings


def cannot_run() -> str | None:
    """Why this machine cannot run the scan benches (Samba, and smbclient as the baseline)."""
    if why := samba_available():
        return why
    if not shutil.which("smbclient"):
        return "smbclient is not installed (apt-get install smbclient)"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="~5,000 files, under a minute")
    args = ap.parse_args()
    if why := cannot_run():
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    seasons, episodes, per_dir = (10, 10, 50) if args.quick else (50, 21, 48)
    tmp = Path(tempfile.mkdtemp(prefix="bench-scan-"))
    server = SambaServer(root=tmp / "samba", port=free_port(), password=secrets.token_hex(12))
    try:
        server.start()
        t0 = time.perf_counter()
        n_files, n_dirs = build_tree(server.share_dir, seasons, episodes, per_dir)
        print(f"tree: {n_files} files in {n_dirs} directories "
              f"(built in {time.perf_counter() - t0:.1f}s), Samba on 127.0.0.1:{server.port}")
        auth = tmp / "auth.txt"
        auth.write_text(f"username = {server.username}\npassword = {server.password}\n")
        auth.chmod(0o600)
        nas = NASResource(protocol="smb", host="127.0.0.1", port=server.port,
                          share=server.share, username=server.username,
                          password=server.password)
        nas.fs().list_dir("")  # session set up outside the timings
        smb_s = min(smbclient_ls(server, auth)[0] for _ in range(2))
        walk_s, walk_n = plain_walk(nas)
        lean_s, lean_n, lean_dirs = lean_walk(nas)
        db = tmp / "catalog.db"
        first_s, first_n, first_dirs, first_new = our_scan(nas, db)
        re_s, re_n, re_dirs, re_new = our_scan(nas, db)
        assert first_n == re_n == walk_n == lean_n == n_files, (first_n, re_n, walk_n, lean_n)
        assert first_new == n_files and re_new == 0

        rows = [
            ("smbclient -c 'recurse; ls'", smb_s, n_files, n_dirs),
            ("plain smbprotocol scandir walk", walk_s, walk_n, n_dirs),
            ("lean compound listing walk (ours)", lean_s, lean_n, lean_dirs),
            ("first scan (ours, into SQLite)", first_s, first_n, first_dirs),
            ("rescan, unchanged tree (ours)", re_s, re_n, re_dirs),
        ]
        print()
        print(f"{'measurement':<34} {'seconds':>8} {'files':>7} {'dirs listed':>12} "
              f"{'files/s':>9} {'vs smbclient':>13} {'vs first scan':>14}")
        for label, secs, files, dirs in rows:
            print(f"{label:<34} {secs:8.3f} {files:7d} {dirs:12d} {files / secs:9.0f} "
                  f"{secs / smb_s:13.3f} {secs / first_s:14.3f}")
        claims = [
            claim(f"rescan of an unchanged {n_files}-file tree vs first scan", re_s, first_s,
                  "s"),
            claim("rescan of an unchanged tree vs smbclient recurse ls", re_s, smb_s, "s"),
            claim("first scan into SQLite vs smbclient recurse ls", first_s, smb_s, "s"),
            claim("directories listed: rescan vs first scan", re_dirs, first_dirs, "dirs"),
            claim("listing walk: lean compound query vs smbprotocol scandir", lean_s, walk_s,
                  "s"),
        ]
        print()
        print("BENCH_JSON " + json.dumps({"bench": "scan", "claims": claims}))
        return 0
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
