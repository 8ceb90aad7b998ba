"""Pending sync vs queue size: hash-verified sync (stream + SHA-256, temporary name, re-read
and verify on the NAS, rename, Postgres bookkeeping) and a raw copy of the same objects, at
100, 300 and 1,000 files of 64 KiB (20 and 80 with --quick), on the same servers.

Small files make the per-file cost visible: the claim is that files/s stays flat as the
queue grows (claiming batches with FOR UPDATE SKIP LOCKED does not slow down with the table),
and how far the verified sync stays behind a raw copy. Reuses bench/sync.py's servers and
raw copy; a local folder stands in for the NAS where Samba cannot run.

Usage: .venv/bin/python bench/sync_growth.py [--quick] [--counts 100 400 ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _claims import claim  # noqa: E402 - bench/ is on sys.path when a script runs

from hybrid_pipelines.hybrid_cache.runtime import prepare  # noqa: E402
from hybrid_pipelines.hybrid_cache.sync import SyncSettings, run_pending_sync  # noqa: E402
from hybrid_pipelines.hybrid_cache.uploads import PatternStream, upload_to_cache  # noqa: E402

SIZE = 64 * 1024


def _sync_bench():
    """bench/sync.py's server setup and raw copy (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_sync", HERE / "sync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 and 80 files")
    ap.add_argument("--counts", type=int, nargs="*", default=None)
    args = ap.parse_args()
    counts = args.counts or ([20, 80] if args.quick else [100, 300, 1000])
    sb = _sync_bench()
    root = Path(tempfile.mkdtemp(prefix="bench-sync-growth-"))
    t0 = time.monotonic()
    try:
        servers = sb.start_servers(root)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    rows = []
    try:
        pg, sw, nas = sb.resources(servers, root)
        print(f"servers up in {time.monotonic() - t0:.1f}s; NAS: {nas.address}")
        prepare(pg)
        s3, nas_fs = sw.get_client(), nas.fs()
        with pg.connect(autocommit=True) as conn:
            # Connections, sessions and the table's first pages warmed up outside the timings.
            warm = upload_to_cache(conn, s3, sw.bucket, "warm.jpg", PatternStream(SIZE, 0),
                                   key_prefix="warm/", nas_prefix="warm")
            assert warm.key is not None
            sb.raw_copy(s3, sw.bucket, nas_fs, [warm.key], 1 << 20)
            run_pending_sync(conn, s3, sw.bucket, nas_fs)
            for n in counts:
                keys = []
                for i in range(n):
                    f = upload_to_cache(conn, s3, sw.bucket, f"g{n}-{i:05d}.jpg",
                                        PatternStream(SIZE, i), key_prefix=f"growth-{n}/",
                                        nas_prefix=f"growth-{n}")
                    assert f.key is not None
                    keys.append(f.key)
                t = time.monotonic()
                copied = sb.raw_copy(s3, sw.bucket, nas_fs, keys, 1 << 20)
                raw_s = time.monotonic() - t
                assert copied == n * SIZE
                t = time.monotonic()
                report = run_pending_sync(conn, s3, sw.bucket, nas_fs,
                                          SyncSettings(batch_size=50, max_batches=10_000))
                ours_s = time.monotonic() - t
                assert report.synced == n, report.errors[:3]
                total = conn.execute("SELECT count(*) FROM file_metadata").fetchone()
                rows.append((n, total[0] if total else 0, ours_s, raw_s))
                print(f"{n} files: verified sync {ours_s:.2f}s, raw copy {raw_s:.2f}s")
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(root, ignore_errors=True)

    print()
    print(f"{'files':>6} {'table rows':>11} {'verified files/s':>17} {'raw files/s':>12} "
          f"{'verified/raw':>13}")
    for n, total, ours_s, raw_s in rows:
        print(f"{n:>6} {total:>11} {n / ours_s:17.1f} {n / raw_s:12.1f} "
              f"{raw_s / ours_s:13.2f}")
    (n0, _, o0, _), (n1, _, o1, r1) = rows[0], rows[-1]
    claims = [
        claim(f"verified sync files/s, {n1} vs {n0} queued 64 KiB files (1 = flat)", n1 / o1,
              n0 / o0, "files/s"),
        claim(f"verified sync vs raw copy, {n1} files of 64 KiB (higher is better)", n1 / o1,
              n1 / r1, "files/s"),
    ]
    print()
    print("BENCH_JSON " + json.dumps({"bench": "sync_growth", "claims": claims}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
