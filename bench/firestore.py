"""Firestore catalog sync: the media catalog's batched, incremental sync vs one write per
document, on the real Firestore emulator.

Builds a SQLite catalog of N files the way the chain does (a local NAS tree scanned by the
Scanner, probe results recorded, catalog entities derived), then measures, each into an empty
project of the same emulator:

* ours: FirestoreSync.sync_partition, commits of up to 500 writes with a cursor;
* baseline: the very same documents written one `set()` per document, in order (with --quick
  only the first 1,000 of them: the rate is what is compared);
* a second sync of the unchanged catalog (ours: nothing to send) vs rewriting every document.

Usage: .venv/bin/python bench/firestore.py [--quick] [--files N]   (N = 5,000; 1,000 quick)
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 files instead of 5,000")
    ap.add_argument("--files", type=int, default=None)
    args = ap.parse_args()
    if why := emulator_unavailable():
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    n = args.files or (1000 if args.quick else 5000)
    tmp = Path(tempfile.mkdtemp(prefix="bench-firestore-"))
    emulator = FirestoreEmulator(root=tmp / "emulator", port=free_port())
    try:
        t0 = time.monotonic()
        emulator.start()
        print(f"Firestore emulator on {emulator.address} up in {time.monotonic() - t0:.1f}s")
        t0 = time.monotonic()
        store = make_catalog(tmp, n)
        print(f"SQLite catalog of {n} files built in {time.monotonic() - t0:.1f}s")
        ours_fs = FirestoreResource(project="bench-ours", emulator_host=emulator.address)
        base_fs = FirestoreResource(project="bench-baseline", emulator_host=emulator.address)
        # Warm the JVM and the client up outside the timings.
        for fs in (ours_fs, base_fs):
            fs.client().collection("warmup").document("w").set({"x": 1})

        sync = FirestoreSync(store, ours_fs, timeout_s=60)
        t0 = time.perf_counter()
        report = sync.sync_partition(FOLDER)
        ours_s = time.perf_counter() - t0
        written = report.synced + report.deleted + 2  # + the two cursor documents
        t0 = time.perf_counter()
        again = FirestoreSync(store, ours_fs, timeout_s=60).sync_partition(FOLDER)
        resync_s = time.perf_counter() - t0
        assert again.synced == 0

        docs = documents(FirestoreSync(store, base_fs, timeout_s=60), store)
        assert len(docs) == report.synced, (len(docs), report.synced)
        sample = docs[:1000] if args.quick else docs
        t0 = time.perf_counter()
        for ref, doc in sample:
            ref.set(doc, timeout=60)
        base_s = time.perf_counter() - t0
        counts = sync.firestore_counts(FOLDER)
        assert counts == store.live_counts(FOLDER), counts
    finally:
        emulator.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    ours_rate, base_rate = written / ours_s, len(sample) / base_s
    rewrite_s = len(docs) / base_rate  # measured when not sampled
    print()
    print(f"{'measurement':<44} {'docs':>6} {'seconds':>8} {'docs/s':>9}")
    print(f"{'ours: batched incremental sync':<44} {written:6d} {ours_s:8.2f} {ours_rate:9.0f}")
    print(f"{'baseline: one set() per document':<44} {len(sample):6d} {base_s:8.2f} "
          f"{base_rate:9.0f}")
    if len(sample) < len(docs):
        print(f"  (all {len(docs)} documents one by one: {rewrite_s:.1f}s at that rate)")
    print(f"{'ours: second sync, catalog unchanged':<44} {0:6d} {resync_s:8.3f} {'-':>9}")
    print(f"({n} files -> {counts['files']} file, {counts['contents']} content, "
          f"{counts['series']} series documents, {report.players_synced} players; "
          f"{report.batches} commits)")
    print(f"docs/s ratio ours/baseline: {ours_rate / base_rate:.1f}x")
    claims = [
        claim(f"Firestore sync, {n} catalog files: docs/s, batched vs 1 write/doc",
              ours_rate, base_rate, "docs/s"),
        claim("re-sync of an unchanged catalog vs rewriting every document", resync_s,
              rewrite_s, "s"),
    ]
    print()
    print("BENCH_JSON " + json.dumps({"bench": "firestore", "claims": claims}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
