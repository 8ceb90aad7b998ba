"""Firestore catalog sync: the media catalog's batched, incremental sync vs one write per
document, on the real Firestore emulator.

Builds a SQLite catalog of N files the way the chain does (a local NAS tree scanned by the
Scanner, probe results recorded, catalog entities derived), then measures, each into an empty
project of the same emulator, on loopback and again through a 30 ms link (bench/_netlink.py
FIRESTORE_LINK, a TCP proxy in front of the emulator's port, for all three alike):

* ours: FirestoreSync.sync_partition, commits of up to 500 writes with a cursor, up to 8 in
  flight (firestore_bulk);
* the same sync one commit at a time (what parallel commits add);
* baseline: the very same documents written one `set()` per document, in order, with the
  same client (the first 600 of them on loopback, 150 through the link; 300 and 60 with
  --quick: the rate is what is compared);
* a second sync of the unchanged catalog (ours: nothing to send) vs rewriting every document.

Usage: .venv/bin/python bench/firestore.py [--quick] [--files N]   (N = 2,000; 600 quick)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _claims import claim  # bench/ is on sys.path when a script runs
from _netlink import FIRESTORE_LINK, NetLink

from hybrid_pipelines.dev.stack.firestore import FirestoreEmulator, emulator_unavailable  # noqa: E402
from hybrid_pipelines.dev.stack.process import free_port  # noqa: E402
from hybrid_pipelines.media_catalog.catalog_build import build_catalog  # noqa: E402
from hybrid_pipelines.media_catalog.catalog_store import CatalogStore  # noqa: E402
from hybrid_pipelines.media_catalog.firestore_sync import FirestoreSync  # noqa: E402
from hybrid_pipelines.media_catalog.nas_access import NASAccess  # noqa: E402
from hybrid_pipelines.media_catalog.scan import Scanner  # noqa: E402
from hybrid_pipelines.media_catalog.settings import CatalogSettings  # noqa: E402
from hybrid_pipelines.resources import FirestoreResource, NASResource  # noqa: E402
from hybrid_pipelines.resources.sqlite_catalog import open_catalog  # noqa: E402

FOLDER = "Bench Catalog"


def build_tree(root: Path, n: int) -> None:
    """n files in series of 25 episodes, with player names, all long finished (stable)."""
    old = time.time() - 7200
    for i in range(n):
        series, ep = divmod(i, 25)
        d = root / FOLDER / f"Series {series:04d}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"Episode {ep:02d} - Player {i % 97} vs Player {(i * 7) % 89}.mp4"
        p.write_bytes(b"")
        os.utime(p, (old, old))


def probe_result(i: int) -> dict[str, Any]:
    """What a probe of an hour-long 1080p H.264/AAC MP4 records."""
    return {"ok": True, "bytes_read": 65_536 + i, "format": "mov,mp4,m4a,3gp,3g2,mj2",
            "duration": 3600.0 + i % 60, "bit_rate": 8_000_000, "video_codec": "h264",
            "width": 1920, "height": 1080, "fps": 29.97, "audio_codec": "aac", "channels": 2,
            "sample_rate": 48_000, "error": None}


def make_catalog(tmp: Path, n: int) -> CatalogStore:
    build_tree(tmp / "nas", n)
    conn = open_catalog(tmp / "catalog.db")
    conn.executescript((Path(__file__).resolve().parents[1]
                        / "hybrid_pipelines/sql/catalog.sql").read_text())
    store = CatalogStore(conn)
    settings = CatalogSettings()
    (tmp / "nas" / ".hybrid-pipelines-nas").touch()  # NAS_SENTINEL: stands in for a mount
    nas = NASResource(protocol="local", local_root=str(tmp / "nas"))
    report = Scanner(store, NASAccess(nas), settings).scan(FOLDER, FOLDER)
    assert report.found == n, report
    todo = store.files_to_probe(FOLDER)
    store.write_probe_results([(path, size, mtime, probe_result(i))
                               for i, (path, size, mtime) in enumerate(todo)])
    build_catalog(store, settings, FOLDER)
    return store


def documents(sync: FirestoreSync, store: CatalogStore) -> list[tuple[Any, dict[str, Any]]]:
    """(reference, document) for every change the sync sends, built by the sync's own code
    so that both sides write exactly the same documents."""
    out = []
    changes = store.partition_changes(FOLDER, 0, 10**9) + store.player_changes(0, 10**9)
    by_kind: dict[str, list[str]] = {}
    for ch in changes:
        by_kind.setdefault(ch.kind, []).append(ch.doc_id)
    rows = {kind: store.rows_by_id(kind, ids) for kind, ids in by_kind.items()}
    for ch in changes:
        row = rows[ch.kind][ch.doc_id]
        doc = sync._doc(ch.kind, row, FOLDER)  # noqa: SLF001 - same documents as the sync
        if doc is not None:
            out.append((sync._ref(ch.kind, row), doc))  # noqa: SLF001
    return out


def measure(store: CatalogStore, emulator: FirestoreEmulator, host: str, tag: str,
            sample_docs: int) -> dict[str, Any]:
    """Ours, ours one commit at a time, and the baseline, each into an empty project of the
    emulator reached at `host` (the emulator itself, or a NetLink in front of it)."""
    fs = {name: FirestoreResource(project=f"bench-{tag}-{name}", emulator_host=host)
          for name in ("ours", "sequential", "baseline")}
    for res in fs.values():  # connect and warm the JVM up outside the timings
        res.client().collection("warmup").document("w").set({"x": 1})
    out: dict[str, Any] = {}
    for name, in_flight in (("ours", 8), ("sequential", 1)):
        sync = FirestoreSync(store, fs[name], timeout_s=60, max_in_flight=in_flight)
        store.set_state(f"firestore:{FOLDER}", 0)
        store.set_state("firestore:players", 0)
        t0 = time.perf_counter()
        report = sync.sync_partition(FOLDER)
        out[f"{name}_s"] = time.perf_counter() - t0
        out[f"{name}_docs"] = report.synced + report.deleted + 2  # + the two cursor documents
        out[f"{name}_commits"] = report.batches
        out[f"{name}_peak"] = report.peak_in_flight
        counts = sync.firestore_counts(FOLDER)
        assert counts == store.live_counts(FOLDER), (name, counts)
        if name == "ours":
            t0 = time.perf_counter()
            again = FirestoreSync(store, fs[name], timeout_s=60).sync_partition(FOLDER)
            out["resync_s"] = time.perf_counter() - t0
            assert again.synced == 0
    base = FirestoreSync(store, fs["baseline"], timeout_s=60)
    docs = documents(base, store)
    assert len(docs) == out["ours_docs"] - 2, (len(docs), out["ours_docs"])
    sample = docs[:sample_docs]
    t0 = time.perf_counter()
    for ref, doc in sample:  # the same client, one round trip per document
        ref.set(doc, timeout=60)
    out["baseline_s"] = time.perf_counter() - t0
    out["baseline_docs"] = len(sample)
    out["all_docs"] = len(docs)
    for name in ("ours", "sequential", "baseline"):
        out[f"{name}_rate"] = out[f"{name}_docs"] / out[f"{name}_s"]
    return out


def table(label: str, r: dict[str, Any]) -> None:
    print(f"\n{label}")
    print(f"{'measurement':<48} {'docs':>6} {'seconds':>8} {'docs/s':>9}")
    rows = [("ours: parallel batched sync "
             f"(<= {r['ours_peak']} in flight, {r['ours_commits']} commits)", "ours"),
            ("ours, one commit at a time", "sequential"),
            ("baseline: one set() per document", "baseline")]
    for text, key in rows:
        print(f"{text:<48} {r[key + '_docs']:6d} {r[key + '_s']:8.2f} {r[key + '_rate']:9.0f}")
    if r["baseline_docs"] < r["all_docs"]:
        print(f"  (baseline timed on the first {r['baseline_docs']} of {r['all_docs']} "
              "documents: the rate is what is compared)")
    print(f"ratio ours/baseline: {r['ours_rate'] / r['baseline_rate']:.1f}x   "
          f"(one commit at a time: {r['sequential_rate'] / r['baseline_rate']:.1f}x)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="600 files instead of 2,000")
    ap.add_argument("--files", type=int, default=None)
    args = ap.parse_args()
    if why := emulator_unavailable():
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    n = args.files or (600 if args.quick else 2000)
    tmp = Path(tempfile.mkdtemp(prefix="bench-firestore-"))
    emulator = FirestoreEmulator(root=tmp / "emulator", port=free_port())
    try:
        t0 = time.monotonic()
        emulator.start()
        print(f"Firestore emulator on {emulator.address} up in {time.monotonic() - t0:.1f}s")
        t0 = time.monotonic()
        store = make_catalog(tmp, n)
        print(f"SQLite catalog of {n} files built in {time.monotonic() - t0:.1f}s")
        # The emulator's JIT makes its first big sync slower than any later one: one
        # untimed sync first, so that neither side pays the warm-up.
        warm = FirestoreResource(project="bench-warmup", emulator_host=emulator.address)
        FirestoreSync(store, warm, timeout_s=60).sync_partition(FOLDER)
        loop = measure(store, emulator, emulator.address, "loopback",
                       300 if args.quick else 600)
        with NetLink("127.0.0.1", emulator.port, **FIRESTORE_LINK) as link:
            wan = measure(store, emulator, f"127.0.0.1:{link.port}", "link",
                          60 if args.quick else 150)
    finally:
        emulator.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    table(f"loopback ({n} files -> {loop['all_docs']} documents)", loop)
    table(f"through a {FIRESTORE_LINK['rtt_ms']:.0f} ms / {FIRESTORE_LINK['mbit_s']:.0f} Mbit/s "
          "link (bench/_netlink.py)", wan)
    rewrite_s = loop["all_docs"] / loop["baseline_rate"]
    print(f"\nsecond sync of the unchanged catalog: {loop['resync_s']:.3f}s "
          f"(rewriting every document one by one: {rewrite_s:.1f}s)")
    claims = [
        claim(f"Firestore sync, {n} catalog files, loopback: docs/s, parallel batches vs "
              "1 write/doc", loop["ours_rate"], loop["baseline_rate"], "docs/s"),
        claim(f"Firestore sync, {n} catalog files, 30 ms link: docs/s, parallel batches vs "
              "1 write/doc", wan["ours_rate"], wan["baseline_rate"], "docs/s"),
        claim("Firestore sync, 30 ms link: parallel vs one commit at a time", wan["ours_rate"],
              wan["sequential_rate"], "docs/s"),
        claim("re-sync of an unchanged catalog vs rewriting every document", loop["resync_s"],
              rewrite_s, "s"),
    ]
    print()
    print("BENCH_JSON " + json.dumps({"bench": "firestore", "claims": claims}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
