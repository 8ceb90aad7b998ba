"""NAS scan time vs tree size, over real Samba: first scan, rescan of the unchanged tree, and
Samba's own `smbclient -c 'recurse; ls'` (baseline) at 10,000, 50,000 and 100,000 files
(2,000 and 5,000 with --quick), 50 files per directory as in bench/scan.py.

The claim is linear growth of the first scan (seconds per 1,000 files flat as the tree grows)
and a rescan whose cost follows the number of inner directories, not the number of files.

Usage: .venv/bin/python bench/scan_growth.py [--quick] [--sizes 10000 50000 ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _claims import claim  # noqa: E402 - bench/ is on sys.path when a script runs

from hybrid_pipelines.dev.stack.process import free_port  # noqa: E402
from hybrid_pipelines.dev.stack.samba import SambaServer  # noqa: E402
from hybrid_pipelines.resources import NASResource  # noqa: E402


def _scan_bench():
    """bench/scan.py's tree builder and measurements (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_scan", HERE / "scan.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PER_DIR = 50


def shape(n: int) -> tuple[int, int, int]:
    """(seasons, episodes, files per directory) for n files, 50 per leaf directory."""
    leaves = max(1, n // PER_DIR)
    seasons = max(d for d in range(1, int(leaves ** 0.5) + 1) if leaves % d == 0)
    return seasons, leaves // seasons, PER_DIR


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 and 5,000 files")
    ap.add_argument("--sizes", type=int, nargs="*", default=None)
    args = ap.parse_args()
    sb = _scan_bench()
    if why := sb.cannot_run():
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    sizes = args.sizes or ([2_000, 5_000] if args.quick else [10_000, 50_000, 100_000])
    tmp = Path(tempfile.mkdtemp(prefix="bench-scan-growth-"))
    server = SambaServer(root=tmp / "samba", port=free_port(), password=secrets.token_hex(12))
    rows = []
    try:
        server.start()
        auth = tmp / "auth.txt"
        auth.write_text(f"username = {server.username}\npassword = {server.password}\n")
        auth.chmod(0o600)
        nas = NASResource(protocol="smb", host="127.0.0.1", port=server.port,
                          share=server.share, username=server.username,
                          password=server.password)
        nas.fs().list_dir("")  # session set up outside the timings
        for n in sizes:
            shutil.rmtree(server.share_dir / sb.FOLDER, ignore_errors=True)
            t0 = time.perf_counter()
            files, dirs = sb.build_tree(server.share_dir, *shape(n))
            built = time.perf_counter() - t0
            smb_s = min(sb.smbclient_ls(server, auth)[0] for _ in range(2))
            db = tmp / f"catalog-{n}.db"
            first_s, first_n, first_dirs, _ = sb.our_scan(nas, db)
            re_s, re_n, re_dirs, re_new = sb.our_scan(nas, db)
            assert first_n == re_n == files and re_new == 0, (first_n, re_n, files)
            rows.append((files, dirs, smb_s, first_s, re_s, first_dirs, re_dirs))
            print(f"{files} files in {dirs} directories (built in {built:.1f}s): smbclient "
                  f"{smb_s:.2f}s, first scan {first_s:.2f}s, rescan {re_s:.3f}s")
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"{'files':>8} {'dirs':>6} {'smbclient s':>12} {'first scan s':>13} "
          f"{'s/1k files':>11} {'vs smbclient':>13} {'rescan s':>9} {'dirs relisted':>14}")
    for files, dirs, smb_s, first_s, re_s, _first_dirs, re_dirs in rows:
        print(f"{files:>8} {dirs:>6} {smb_s:12.3f} {first_s:13.3f} {first_s / files * 1e3:11.3f} "
              f"{first_s / smb_s:13.2f} {re_s:9.3f} {re_dirs:14d}")
    small, big = rows[0], rows[-1]
    per_k = [r[3] / r[0] * 1e3 for r in (small, big)]
    claims = [
        claim(f"first scan s per 1,000 files: {big[0]} vs {small[0]} files (1 = linear)",
              per_k[1], per_k[0], "s/1k"),
        claim(f"first scan of {big[0]} files vs smbclient recurse ls", big[3], big[2], "s"),
        claim(f"rescan of an unchanged {big[0]}-file tree vs first scan", big[4], big[3], "s"),
        claim(f"rescan growth {small[0]}->{big[0]} files vs file-count growth", big[4] / small[4],
              big[0] / small[0], "x"),
    ]
    print()
    print("BENCH_JSON " + json.dumps({"bench": "scan_growth", "claims": claims}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
