"""Pending-sync throughput: the hash-verified sync (stream + SHA-256, temporary name, re-read
and verify on the NAS, rename, Postgres bookkeeping) against a raw copy of the same objects
SeaweedFS -> NAS without any of that, in the same run on the same servers.

    .venv/bin/python bench/sync.py [--quick] [--files N]

Starts its own PostgreSQL, SeaweedFS and Samba (a local folder stands in for the NAS where
Samba cannot run) on free loopback ports in a temp dir, and stops them at the end."""

from __future__ import annotations

import argparse
import json
import posixpath
import secrets
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hybrid_pipelines.dev.stack.base import LocalServer  # noqa: E402
from hybrid_pipelines.dev.stack.postgres import PostgresServer  # noqa: E402
from hybrid_pipelines.dev.stack.process import LOOPBACK, free_port  # noqa: E402
from hybrid_pipelines.dev.stack.samba import SambaServer, samba_available  # noqa: E402
from hybrid_pipelines.dev.stack.seaweedfs import SeaweedFSServer  # noqa: E402
from hybrid_pipelines.hybrid_cache.runtime import prepare  # noqa: E402
from hybrid_pipelines.hybrid_cache.sync import SyncSettings, run_pending_sync  # noqa: E402
from hybrid_pipelines.hybrid_cache.uploads import (  # noqa: E402
    EXTENSIONS,
    MIB,
    PatternStream,
    mixed_sizes,
    upload_to_cache,
)
from hybrid_pipelines.resources import (  # noqa: E402
    NASResource,
    PostgresResource,
    SeaweedFSResource,
)


def start_servers(root: Path) -> dict[str, LocalServer]:
    servers: dict[str, LocalServer] = {
        "postgres": PostgresServer(root=root / "pg", port=free_port(),
                                   password=secrets.token_hex(8), durable=False),
        "seaweedfs": SeaweedFSServer.on_free_ports(root / "sw", "bench" + secrets.token_hex(4),
                                                   secrets.token_hex(12)),
    }
    if samba_available() is None:
        servers["samba"] = SambaServer(root=root / "smb", port=free_port(),
                                       password=secrets.token_hex(8))
    try:
        with ThreadPoolExecutor(len(servers)) as pool:
            for fut in [pool.submit(s.start) for s in servers.values()]:
                fut.result()
    except BaseException:
        for s in servers.values():
            s.stop()
        raise
    return servers


def resources(servers: dict[str, LocalServer], root: Path) -> tuple[PostgresResource,
                                                                     SeaweedFSResource,
                                                                     NASResource]:
    pg, sw = servers["postgres"], servers["seaweedfs"]
    assert isinstance(pg, PostgresServer) and isinstance(sw, SeaweedFSServer)
    pres = PostgresResource(host=LOOPBACK, port=pg.port, user=pg.user, password=pg.password)
    swres = SeaweedFSResource(endpoint_url=sw.address, master_url=sw.master_url,
                              aws_access_key_id=sw.access_key,
                              aws_secret_access_key=sw.secret_key)
    smb = servers.get("samba")
    if isinstance(smb, SambaServer):
        nas = NASResource(protocol="smb", host=LOOPBACK, port=smb.port, share=smb.share,
                          username=smb.username, password=smb.password)
    else:
        (root / "nas").mkdir()
        (root / "nas" / ".hybrid-pipelines-nas").touch()  # NAS_SENTINEL: stands in for a mount
        nas = NASResource(protocol="local", local_root=str(root / "nas"))
    return pres, swres, nas


def raw_copy(s3: Any, bucket: str, nas_fs: Any, keys: list[str], chunk: int) -> int:
    """The baseline: bytes straight from SeaweedFS to the NAS, no hash, no verify, no DB."""
    total = 0
    for key in keys:
        target = posixpath.join("raw", key)
        nas_fs.makedirs(posixpath.dirname(target))
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        with nas_fs.open_write(target) as out:
            while True:
                data = body.read(chunk)
                if not data:
                    break
                out.write(data)
                total += len(data)
        body.close()
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="~100 files instead of 1,000")
    ap.add_argument("--files", type=int, default=None)
    args = ap.parse_args()
    n = args.files or (100 if args.quick else 1000)

    root = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    t0 = time.monotonic()
    try:
        servers = start_servers(root)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        pg, sw, nas = resources(servers, root)
        print(f"servers up in {time.monotonic() - t0:.1f}s; NAS: {nas.address}")
        prepare(pg)
        s3, nas_fs = sw.get_client(), nas.fs()
        with pg.connect(autocommit=True) as conn:
            t = time.monotonic()
            sizes = list(mixed_sizes(n, seed=42))
            keys = []
            for i, size in enumerate(sizes):
                f = upload_to_cache(conn, s3, sw.bucket, f"bench-{i:05d}{EXTENSIONS[i % 7]}",
                                    PatternStream(size, i), key_prefix="bench/",
                                    nas_prefix="bench")
                assert f.key is not None
                keys.append(f.key)
            total = sum(sizes)
            print(f"uploaded {n} files, {total / MIB:.1f} MiB (sizes {min(sizes)} B .. "
                  f"{max(sizes) / MIB:.1f} MiB) in {time.monotonic() - t:.1f}s")

            t = time.monotonic()
            copied = raw_copy(s3, sw.bucket, nas_fs, keys, 1 << 20)
            raw_s = time.monotonic() - t
            assert copied == total

            t = time.monotonic()
            report = run_pending_sync(conn, s3, sw.bucket, nas_fs,
                                      SyncSettings(batch_size=50, max_batches=10_000))
            ours_s = time.monotonic() - t
            assert report.synced == n and report.bytes_synced == total, report.errors[:3]
            left = conn.execute("SELECT count(*) FROM file_metadata WHERE nas_status <> "
                                "'synced'").fetchone()
            assert left is not None and left[0] == 0
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(root, ignore_errors=True)

    mb = total / 1e6
    rows = [("MB/s", mb / ours_s, mb / raw_s), ("files/s", n / ours_s, n / raw_s)]
    print(f"\n{n} files, {mb:.1f} MB, SeaweedFS -> {nas.protocol} NAS")
    print(f"{'metric':<10}{'verified sync':>16}{'raw copy':>12}{'ratio':>8}")
    for unit, ours, base in rows:
        print(f"{unit:<10}{ours:>16.1f}{base:>12.1f}{ours / base:>8.2f}")
    print(f"(verified sync: {ours_s:.2f}s incl. a full re-read of every NAS copy; raw copy: "
          f"{raw_s:.2f}s)")
    claims = [{"claim": f"sync throughput, {n} mixed-size files, hash-verified vs raw copy "
                        "(higher is better)", "ours": round(o, 2), "baseline": round(b, 2),
               "unit": unit, "ratio": round(o / b, 3)} for unit, o, b in rows]
    print("BENCH_JSON " + json.dumps({"bench": "sync", "claims": claims}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
