"""End-to-end catalog build over SMB: scan -> probe -> SQLite catalog -> Firestore, through
the project's own code paths (the functions the Dagster assets call: Scanner.scan,
probe_partition, build_catalog, FirestoreSync.sync_partition), on 1,000 real small media
files (30 with --quick) on a private Samba share, into a private Firestore emulator.

Baseline: the same chain with the probe step replaced by the fixed read ladder (512 KiB head
-> 5 MB head -> last 1 MiB -> whole file, each step read over the same SMB connection and fed
to ffprobe on stdin, stopping at the first answer that validates), same workers, same scan,
catalog and sync. Reported: files/s of the whole build and bytes read per file by the probe,
on loopback and through realistic links (bench/_netlink.py: NAS_LINK 0.5 ms / 1 Gb/s in front
of Samba, FIRESTORE_LINK 30 ms in front of the emulator).

The corpus: one short clip of each container the fixtures make (MP4 faststart / moov at the
end / fragmented, MOV, MKV, WebM, TS, AVI, MXF where ffmpeg writes it, M4A, MP3, WAV, FLAC,
Ogg), copied under distinct names into series folders until there are N files.

Usage: .venv/bin/python bench/catalog_e2e.py [--quick] [--files N]
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from google.api_core.retry import Retry, if_exception_type

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _claims import claim  # bench/ is on sys.path when a script runs
from _netlink import FIRESTORE_LINK, NAS_LINK, NetLink

from hybrid_pipelines.dev import media_fixtures as mf  # noqa: E402
from hybrid_pipelines.dev.stack.firestore import FirestoreEmulator, emulator_unavailable  # noqa: E402
from hybrid_pipelines.dev.stack.process import free_port  # noqa: E402
from hybrid_pipelines.dev.stack.samba import SambaServer, samba_available  # noqa: E402
from hybrid_pipelines.media_catalog.catalog_build import build_catalog  # noqa: E402
from hybrid_pipelines.media_catalog.catalog_store import CatalogStore  # noqa: E402
from hybrid_pipelines.media_catalog.firestore_sync import FirestoreSync  # noqa: E402
from hybrid_pipelines.media_catalog.nas_access import NASAccess  # noqa: E402
from hybrid_pipelines.media_catalog.probe import parse_ffprobe_json, validate_ffprobe  # noqa: E402
from hybrid_pipelines.media_catalog.probing import probe_partition  # noqa: E402
from hybrid_pipelines.media_catalog.scan import Scanner  # noqa: E402
from hybrid_pipelines.media_catalog.settings import CatalogSettings  # noqa: E402
from hybrid_pipelines.resources import FirestoreResource, NASResource  # noqa: E402
from hybrid_pipelines.resources.sqlite_catalog import open_catalog  # noqa: E402

FOLDER = "E2E Catalog"
MiB = 1024 * 1024
LADDER = (("head", 512 * 1024), ("head", 5_000_000), ("tail", MiB), ("whole", 0))
FFPROBE = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams"]
WORKERS = 2  # the probe's default worker count (CatalogSettings.probe_workers)
ROOT = Path(__file__).resolve().parents[1]


def corpus(media_dir: Path) -> list[Path]:
    kinds = [k for k in mf.VIDEO_KINDS if k != "mxf" or mf.ffmpeg_has_muxer("mxf")]
    jobs: dict[str, Callable[[], Path]] = {
        k: (lambda k=k: mf.make_video(media_dir, k, duration_s=2.0)) for k in kinds}
    jobs.update({k: (lambda k=k: mf.make_audio(media_dir, k, duration_s=2.0))
                 for k in mf.AUDIO_KINDS})
    return sorted(mf.generate_many(jobs).values())


def fill_share(share: Path, clips: list[Path], n: int) -> int:
    """n files, 25 per series folder, mtimes two hours old (stable at the first scan)."""
    old = time.time() - 7200
    total = 0
    for i in range(n):
        clip = clips[i % len(clips)]
        series, ep = divmod(i, 25)
        d = share / FOLDER / f"Series {series:03d}"
        d.mkdir(parents=True, exist_ok=True)
        target = d / f"Episode {ep:02d} - Player {i % 97} vs Player {(i * 7) % 89}{clip.suffix}"
        shutil.copyfile(clip, target)
        os.utime(target, (old, old))
        total += target.stat().st_size
    return total


def ladder_probe(nas: NASAccess, path: str) -> dict[str, Any]:
    """The fixed read ladder over the NAS, each step through ffprobe on stdin."""
    reader = nas.nas.open_reader(path)
    try:
        size, head, tail = reader.size, 0, 0
        res: dict[str, Any] = {"ok": False, "error": "ladder exhausted"}
        for kind, n in LADDER:
            n = size if kind == "whole" else min(n, size)
            if kind == "tail":
                data, tail = reader.read_at(size - n, n), max(tail, n)
            else:
                data, head = reader.read_at(0, n), max(head, n)
            if kind == "whole":  # as a file: ffprobe seeks (moov at the end, indexes)
                with tempfile.NamedTemporaryFile(suffix=Path(path).suffix) as fh:
                    fh.write(data)
                    fh.flush()
                    proc = subprocess.run([*FFPROBE, "file:" + fh.name], capture_output=True,
                                          timeout=60, check=False)
            else:
                proc = subprocess.run([*FFPROBE, "pipe:0"], input=data, capture_output=True,
                                      timeout=60, check=False)
            try:
                out = json.loads(proc.stdout or b"{}")
            except ValueError:
                out = {}
            whole = n >= size
            why = "ffprobe failed" if proc.returncode else validate_ffprobe(
                out, proc.stderr.decode(errors="replace"), partial=not whole)
            if not why:
                res = parse_ffprobe_json(out, path=path, size=size,
                                         trust_bit_rate=False).to_json_dict()
                break
            res = {"ok": False, "error": why}
            if whole:
                break
        res["bytes_read"] = size if head + tail >= size else head + tail
        return res
    finally:
        reader.close()


def ladder_partition(store: CatalogStore, nas: NASAccess) -> tuple[int, int]:
    todo = store.files_to_probe(FOLDER)
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda t: ladder_probe(nas, t[0]), todo))
    store.write_probe_results([(p, s, m, r) for (p, s, m), r in zip(todo, results, strict=True)])
    return len(todo), sum(int(r["bytes_read"]) for r in results)


def build(tmp: Path, nas_res: NASResource, fs: FirestoreResource, use_ladder: bool,
          n: int) -> dict[str, float]:
    db = tmp / f"catalog-{secrets.token_hex(4)}.db"
    conn = open_catalog(db)
    conn.executescript((ROOT / "hybrid_pipelines/sql/catalog.sql").read_text())
    store = CatalogStore(conn)
    settings = CatalogSettings()
    nas = NASAccess(nas_res, settings.retry_delays_s)
    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    found = Scanner(store, nas, settings).scan(FOLDER, FOLDER).found
    stages["scan"] = time.perf_counter() - t0
    t = time.perf_counter()
    if use_ladder:
        probed, bytes_read = ladder_partition(store, nas)
    else:
        rep = probe_partition(store, nas, FOLDER, ffprobe_path="ffprobe", timeout_s=60,
                              workers=WORKERS)
        probed, bytes_read = rep.probed, rep.bytes_read
    stages["probe"] = time.perf_counter() - t
    t = time.perf_counter()
    build_catalog(store, settings, FOLDER)
    stages["catalog"] = time.perf_counter() - t
    t = time.perf_counter()
    sync = FirestoreSync(store, fs, timeout_s=60)
    docs = sync.sync_partition(FOLDER).synced
    stages["firestore"] = time.perf_counter() - t
    stages["total"] = time.perf_counter() - t0
    counts = sync.firestore_counts(FOLDER)
    live = store.live_counts(FOLDER)
    valid = conn.execute("SELECT count(*) FROM files WHERE status = 'valid'").fetchone()[0]
    conn.close()
    assert found == probed == n and counts == live, (found, probed, n, counts, live)
    return {**stages, "files": n, "valid": valid, "docs": docs, "bytes_per_file": bytes_read / n,
            "files_per_s": n / stages["total"]}


def run_mode(tmp: Path, label: str, nas_res: NASResource, fs_host: str, project: str,
             n: int) -> dict[str, dict[str, float]]:
    out = {}
    for name, ladder in (("ours", False), ("ladder", True)):
        fs = FirestoreResource(project=f"{project}-{name}", emulator_host=fs_host)
        # A cold emulator JIT on a busy machine: the first write may take minutes.
        fs.client().collection("warmup").document("w").set(
            {"x": 1}, timeout=300, retry=Retry(timeout=300, initial=1.0,
                                               predicate=if_exception_type(Exception)))
        out[name] = build(tmp, nas_res, fs, ladder, n)
        r = out[name]
        print(f"{label:<10} {name:<7} {r['total']:7.2f}s  scan {r['scan']:5.2f}  probe "
              f"{r['probe']:6.2f}  catalog {r['catalog']:5.2f}  firestore {r['firestore']:5.2f}"
              f"  {r['files_per_s']:6.1f} files/s  {r['bytes_per_file'] / 1024:8.1f} KiB/file"
              f"  valid {r['valid']}/{r['files']}", flush=True)
    return out


def cannot_run() -> str | None:
    for why in (samba_available(), emulator_unavailable()):
        if why:
            return why
    for tool in ("ffmpeg", "ffprobe"):
        if not shutil.which(tool):
            return f"{tool} is not installed (apt-get install ffmpeg)"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="30 files instead of 1,000")
    ap.add_argument("--files", type=int, default=None)
    args = ap.parse_args()
    if why := cannot_run():
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    n = args.files or (30 if args.quick else 1000)
    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    samba = SambaServer(root=tmp / "samba", port=free_port(), password=secrets.token_hex(12))
    emulator = FirestoreEmulator(root=tmp / "emulator", port=free_port())
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        t0 = time.perf_counter()
        samba.start()
        emulator.start()
        clips = corpus(tmp / "media")
        total = fill_share(samba.share_dir, clips, n)
        print(f"{n} files ({len(clips)} containers, {total / n / 1024:.0f} KiB on average) on "
              f"Samba 127.0.0.1:{samba.port}, emulator {emulator.address}; set up in "
              f"{time.perf_counter() - t0:.1f}s\n", flush=True)

        def nas_at(port: int) -> NASResource:
            return NASResource(protocol="smb", host="127.0.0.1", port=port, share=samba.share,
                               username=samba.username, password=samba.password)

        results["loopback"] = run_mode(tmp, "loopback", nas_at(samba.port), emulator.address,
                                       "e2e-loop", n)
        with NetLink("127.0.0.1", samba.port, **NAS_LINK) as nas_link, \
                NetLink("127.0.0.1", emulator.port, **FIRESTORE_LINK) as fs_link:
            results["link"] = run_mode(tmp, "link", nas_at(nas_link.port),
                                       f"127.0.0.1:{fs_link.port}", "e2e-link", n)
    finally:
        emulator.stop()
        samba.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    claims = []
    print()
    for mode, text in (("loopback", "loopback"),
                       ("link", f"NAS {NAS_LINK['rtt_ms']} ms / {NAS_LINK['mbit_s']:.0f} "
                                f"Mbit/s, Firestore {FIRESTORE_LINK['rtt_ms']:.0f} ms")):
        ours, base = results[mode]["ours"], results[mode]["ladder"]
        print(f"{text}: {ours['files_per_s']:.1f} vs {base['files_per_s']:.1f} files/s "
              f"({ours['files_per_s'] / base['files_per_s']:.2f}x); probe bytes/file "
              f"{ours['bytes_per_file'] / 1024:.1f} vs {base['bytes_per_file'] / 1024:.1f} KiB "
              f"({ours['bytes_per_file'] / base['bytes_per_file']:.3f}x)")
        claims += [
            claim(f"catalog build of {n} media files over SMB, {text}: files/s, ours vs "
                  "read ladder", ours["files_per_s"], base["files_per_s"], "files/s"),
            claim(f"catalog build, {text}: probe bytes read per file, ours vs read ladder",
                  ours["bytes_per_file"], base["bytes_per_file"], "bytes"),
        ]
    print()
    print("BENCH_JSON " + json.dumps({"bench": "catalog_e2e", "claims": claims}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
