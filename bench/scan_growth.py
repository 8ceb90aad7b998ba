"""NAS scan time and memory vs tree size, over real Samba: first scan, rescan of the unchanged
tree, and Samba's own `smbclient -c 'recurse; ls'` (baseline) at 10,000, 50,000, 100,000 and
500,000 files (2,000 and 5,000 with --quick), 50 files per directory as in bench/scan.py,
with the peak RSS of each scan.

The claims: linear growth of the first scan (seconds per 1,000 files flat as the tree grows),
flat memory (peak RSS of the largest scan vs the smallest), and a rescan whose cost follows
the number of inner directories, not the number of files. The 500,000-file tree is built
once and kept under .local/bench-cache (git-ignored); the Samba server serves it from there.

Usage: .venv/bin/python bench/scan_growth.py [--quick] [--sizes 10000 50000 ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _claims import claim  # noqa: E402 - bench/ is on sys.path when a script runs
from _scan_tree import (  # noqa: E402
    cannot_run,
    our_scan,
    our_scan_in_own_process,
    served_tree,
    smbclient_ls,
)

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
    if why := cannot_run():
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    sizes = args.sizes or ([2_000, 5_000] if args.quick else [10_000, 50_000, 100_000, 500_000])
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        for n in sizes:
            with served_tree(*shape(n)) as served:
                # One baseline run for the largest tree: it alone takes tens of seconds.
                smb_s = min(smbclient_ls(served, served.server.port)
                            for _ in range(1 if served.files >= 200_000 else 2))
                nas = served.nas()
                db = Path(tmp_name) / f"catalog-{n}.db"
                first = our_scan_in_own_process(nas, db)
                nas.fs().list_dir("")  # this process's SMB session, set up outside the rescan
                again = our_scan(nas, db)
                assert first.found == again.found == served.files and again.new == 0
                rows.append((served.files, served.dirs, smb_s, first, again))
                how = "cached" if served.cached else "built"
                print(f"{served.files} files in {served.dirs} directories ({how} in "
                      f"{served.built_s:.1f}s): smbclient {smb_s:.2f}s, first scan "
                      f"{first.seconds:.2f}s ({first.peak_rss_mib:.0f} MiB peak, "
                      f"{first.start_rss_mib:.0f} MiB at its start), rescan "
                      f"{again.seconds:.3f}s ({again.peak_rss_mib:.0f} MiB peak)", flush=True)

    print()
    print(f"{'files':>8} {'dirs':>6} {'smbclient s':>12} {'first scan s':>13} "
          f"{'s/1k files':>11} {'vs smbclient':>13} {'rescan s':>9} {'dirs relisted':>14} "
          f"{'peak RSS MiB':>13}")
    for files, dirs, smb_s, first, again in rows:
        print(f"{files:>8} {dirs:>6} {smb_s:12.3f} {first.seconds:13.3f} "
              f"{first.seconds / files * 1e3:11.3f} {first.seconds / smb_s:13.2f} "
              f"{again.seconds:9.3f} {again.listings:14d} {first.peak_rss_mib:13.0f}")
    small, big = rows[0], rows[-1]
    per_k = [r[3].seconds / r[0] * 1e3 for r in (small, big)]
    claims = [
        claim(f"first scan s per 1,000 files: {big[0]} vs {small[0]} files (1 = linear)",
              per_k[1], per_k[0], "s/1k"),
        claim(f"first scan of {big[0]} files vs smbclient recurse ls", big[3].seconds, big[2],
              "s"),
        claim(f"rescan of an unchanged {big[0]}-file tree vs first scan", big[4].seconds,
              big[3].seconds, "s"),
        claim(f"rescan growth {small[0]}->{big[0]} files vs file-count growth",
              big[4].seconds / small[4].seconds, big[0] / small[0], "x"),
        claim(f"peak RSS of the first scan (a process of its own): {big[0]} vs {small[0]} "
              "files (1 = flat)",
              big[3].peak_rss_mib, small[3].peak_rss_mib, "MiB"),
    ]
    print()
    print("BENCH_JSON " + json.dumps({"bench": "scan_growth", "claims": claims}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
