"""Pending-sync throughput: the hash-verified sync (stream + SHA-256, temporary name, full
re-read and verify on the NAS, rename without replace, Postgres bookkeeping; several files in
flight, each placed by its own worker; a file of 16 MiB or more read back while it is
written) against a raw copy of the same objects SeaweedFS -> NAS without any of that (one file
after another, same client libraries, same I/O size), in the same run on the same servers.

Per file size (64 KiB, 4 MiB, and 1 GiB without --quick) both on loopback and through a
realistic NAS link (bench/_netlink.py: 0.5 ms RTT, 1 Gb/s, in front of the Samba port for
both). Each size is uploaded once; every further measurement syncs the same objects again
under another NAS folder (the rows reset to pending), so all measure the very same bytes.
Sizes below 1 GiB are measured in ROUNDS rounds, raw copy and verified sync alternating, and
each figure is the median of its rounds: a single pair swung by +-0.1 in ratio between runs
on this 2-core machine (the raw copy of 24 x 4 MiB takes under half a second). --quick
measures one round.

    .venv/bin/python bench/sync.py [--quick]

Starts its own PostgreSQL, SeaweedFS and Samba (a local folder stands in for the NAS where
Samba cannot run) on free loopback ports in a temp dir, and stops them at the end."""

from __future__ import annotations

import argparse
import json
import posixpath
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _claims import claim  # noqa: E402 - bench/ is on sys.path when a script runs
from _netlink import NAS_LINK  # noqa: E402

from hybrid_pipelines.dev.stack.base import LocalServer  # noqa: E402
from hybrid_pipelines.dev.stack.postgres import PostgresServer  # noqa: E402
from hybrid_pipelines.dev.stack.process import LOOPBACK, free_port  # noqa: E402
from hybrid_pipelines.dev.stack.samba import SambaServer, samba_available  # noqa: E402
from hybrid_pipelines.dev.stack.seaweedfs import SeaweedFSServer  # noqa: E402
from hybrid_pipelines.hybrid_cache.runtime import prepare  # noqa: E402
from hybrid_pipelines.hybrid_cache.sync import (  # noqa: E402
    SYNC_CHUNK_SIZE,
    SyncSettings,
    run_pending_sync,
)
from hybrid_pipelines.hybrid_cache.uploads import (  # noqa: E402
    MIB,
    PatternStream,
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


def raw_copy(s3: Any, bucket: str, nas_fs: Any, keys: list[str], chunk: int,
             folder: str = "raw") -> int:
    """The baseline: bytes straight from SeaweedFS to the NAS, no hash, no verify, no DB."""
    total = 0
    made: set[str] = set()
    for key in keys:
        target = posixpath.join(folder, key)
        parent = posixpath.dirname(target)
        if parent not in made:  # as the sync does: each folder made once per run
            nas_fs.makedirs(parent)
            made.add(parent)
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


_LINK_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from _netlink import NAS_LINK, NetLink
with NetLink("127.0.0.1", int(sys.argv[2]), **NAS_LINK) as link:
    print(link.port, flush=True)
    sys.stdin.read()  # relays until the bench closes our stdin
"""


class LinkProcess:
    """bench/_netlink.py's NetLink in a process of its own. In the bench's process its relay
    threads would compete for the GIL with the sync's worker threads (Python switches threads
    every 5 ms), adding delays a real link does not have, and more of them to the run with
    more threads: the proxy must cost the measured client nothing, as a real network does."""

    def __init__(self, port: int):
        self._proc = subprocess.Popen([sys.executable, "-c", _LINK_CHILD, str(HERE), str(port)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        self.port = int(self._proc.stdout.readline())

    def __enter__(self) -> LinkProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def smb_via(nas: NASResource, port: int) -> NASResource:
    """The same share reached through another port (the link's proxy)."""
    return NASResource(protocol="smb", host=nas.host, port=port, share=nas.share,
                       username=nas.username, password=nas.password)


def reset_for(conn: Any, ids: list[Any], folder: str) -> None:
    """The same cached objects queued again under another NAS folder (a second measurement
    of the very same bytes without uploading them again)."""
    conn.execute("UPDATE file_metadata SET nas_status = 'pending', synced_at = NULL,"
                 " nas_verified_at = NULL, nas_path = %s || '/' || nas_path"
                 " WHERE id = ANY(%s)", (folder, ids))


def measure(conn: Any, s3: Any, bucket: str, nas_fs: Any, keys: list[str], ids: list[Any],
            total: int, mode: str) -> tuple[float, float]:
    """Seconds for the raw copy and for the verified sync of the same objects."""
    t = time.monotonic()
    copied = raw_copy(s3, bucket, nas_fs, keys, SYNC_CHUNK_SIZE, folder=f"raw-{mode}")
    raw_s = time.monotonic() - t
    assert copied == total
    t = time.monotonic()
    report = run_pending_sync(conn, s3, bucket, nas_fs,
                              SyncSettings(batch_size=50, max_batches=10_000))
    ours_s = time.monotonic() - t
    assert report.synced == len(keys) and report.bytes_synced == total, report.errors[:3]
    left = conn.execute("SELECT count(*) FROM file_metadata WHERE id = ANY(%s)"
                        " AND nas_status <> 'synced'", (ids,)).fetchone()
    assert left is not None and left[0] == 0
    return raw_s, ours_s


ROUNDS = 3


def label(size: int) -> str:
    return f"{size >> 30} GiB" if size >= 1 << 30 else \
        f"{size >> 20} MiB" if size >= MIB else f"{size >> 10} KiB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer files, no 1 GiB file")
    args = ap.parse_args()
    plan = [(64 << 10, 100), (4 * MIB, 8)] if args.quick else \
        [(64 << 10, 300), (4 * MIB, 24), (1 << 30, 1)]

    root = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    t0 = time.monotonic()
    try:
        servers = start_servers(root)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    results: list[tuple[str, str, int, int, float, float]] = []
    try:
        pg, sw, nas = resources(servers, root)
        print(f"servers up in {time.monotonic() - t0:.1f}s; NAS: {nas.address}")
        prepare(pg)
        s3 = sw.get_client()
        link = LinkProcess(nas.port) if nas.protocol == "smb" else None
        modes = [("loopback", nas)] + ([("link", smb_via(nas, link.port))] if link else [])
        with pg.connect(autocommit=True) as conn, (link or nullcontext()):
            # Sessions and the table's first pages warmed up outside the timings.
            warm = upload_to_cache(conn, s3, sw.bucket, "warm.bin", PatternStream(1000, 0),
                                   key_prefix="warm/", nas_prefix="warm")
            assert warm.key is not None
            for _, res in modes:
                raw_copy(s3, sw.bucket, res.fs(), [warm.key], SYNC_CHUNK_SIZE)
            run_pending_sync(conn, s3, sw.bucket, nas.fs())
            for size, n in plan:
                t = time.monotonic()
                files = [upload_to_cache(conn, s3, sw.bucket, f"s{size}-{i:05d}.bin",
                                         PatternStream(size, i), key_prefix=f"s{size}/",
                                         nas_prefix=f"s{size}") for i in range(n)]
                keys = [f.key for f in files if f.key is not None]
                ids = [f.id for f in files]
                print(f"uploaded {n} x {label(size)} in {time.monotonic() - t:.1f}s")
                rounds = 1 if size >= 1 << 30 or args.quick else ROUNDS
                for mode, res in modes:
                    pairs = []
                    for r in range(rounds):
                        if pairs or mode != modes[0][0]:
                            reset_for(conn, ids, f"{mode}-{r}")
                        pairs.append(measure(conn, s3, sw.bucket, res.fs(), keys, ids,
                                             size * n, f"{mode}-{r}"))
                        print(f"  {mode:<8} round {r + 1}: verified sync {pairs[-1][1]:6.2f}s, "
                              f"raw copy {pairs[-1][0]:6.2f}s")
                    raw_s = statistics.median(p[0] for p in pairs)
                    ours_s = statistics.median(p[1] for p in pairs)
                    results.append((label(size), mode, n, size * n, ours_s, raw_s))
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(root, ignore_errors=True)

    print(f"\nSeaweedFS -> {nas.protocol} NAS; link = {NAS_LINK['rtt_ms']} ms RTT, "
          f"{NAS_LINK['mbit_s']:.0f} Mb/s in front of the Samba port")
    print("one round (--quick)" if args.quick else f"medians of {ROUNDS} rounds (1 GiB: one)")
    print(f"{'size':<8}{'path':<10}{'files':>6}{'ours MB/s':>11}{'raw MB/s':>10}"
          f"{'ours files/s':>14}{'raw files/s':>13}{'ratio':>7}")
    claims = []
    for name, mode, n, total, ours_s, raw_s in results:
        mb = total / 1e6
        print(f"{name:<8}{mode:<10}{n:>6}{mb / ours_s:>11.1f}{mb / raw_s:>10.1f}"
              f"{n / ours_s:>14.1f}{n / raw_s:>13.1f}{raw_s / ours_s:>7.2f}")
        what = f"verified sync vs raw copy, {n} x {label(int(total / n))} files, {mode}"
        claims.append(claim(f"{what}, MB/s (higher is better)", mb / ours_s, mb / raw_s,
                            "MB/s"))
        claims.append(claim(f"{what}, files/s (higher is better)", n / ours_s, n / raw_s,
                            "files/s"))
    print("(verified sync includes a full re-read of every NAS copy and its SHA-256 check)")
    print("BENCH_JSON " + json.dumps({"bench": "sync", "claims": claims}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
