"""Corrupt and adversarial media through the whole catalog chain (real Samba share, real
ffprobe, SQLite, the Firestore emulator): every bad file is recorded invalid with a reason,
files that are fine under a misleading name are catalogued by their real container, the
run succeeds, reads stay partial, and Firestore holds exactly what SQLite holds.

The media catalog's own chain test already covers random bytes, a truncated moov-at-end
MP4, a zero-byte file and text named .mp4; this suite adds the hostile headers and names."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from hybrid_pipelines.dev import media_fixtures as mf
from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.resources import (
    FFprobeResource,
    FirestoreResource,
    NASResource,
    SQLiteCatalogResource,
)
from hybrid_pipelines_tests.media_catalog.conftest import (
    CHAIN,
    chain_resources,
    instance_with,
    metadata_of,
    put,
    unique,
)

MiB = 1024 * 1024


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _top_boxes(data: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, size, type) of the top-level boxes of a well-formed MP4 held in memory."""
    out, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        out.append((offset, size, kind))
        offset += size
    return out


def adversarial_mp4s(valid_moov_end: bytes) -> dict[str, bytes]:
    """Hand-made hostile headers, each built from a real MP4 so that only one thing is off."""
    boxes = {kind: (off, size) for off, size, kind in _top_boxes(valid_moov_end)}
    moov_off, moov_size = boxes[b"moov"]
    mdat_off, _ = boxes[b"mdat"]
    ftyp = valid_moov_end[:boxes[b"ftyp"][1]]
    noise = random.Random(7).randbytes(moov_size - 8)
    return {
        # A box claiming to be smaller than its own header: a naive walker loops forever.
        "box smaller than its header.mp4": struct.pack(">I", 4) + valid_moov_end[4:],
        # 64-bit size far beyond the end of the file.
        "largesize past eof.mp4": ftyp + struct.pack(">I4sQ", 1, b"mdat", 1 << 62)
        + valid_moov_end[len(ftyp) + 8:],
        # The moov is where it should be, but holds noise.
        "moov of noise.mp4": valid_moov_end[:moov_off + 8] + noise,
        # mdat "extends to the end of the file" (size 0), hiding the moov behind it.
        "mdat to eof hides moov.mp4": valid_moov_end[:mdat_off]
        + struct.pack(">I", 0) + valid_moov_end[mdat_off + 4:],
        # Nothing but the file-type box.
        "ftyp only.mp4": ftyp,
        # A moov that claims 64 MiB in a file that ends right after its header.
        "moov cut after header.mp4": valid_moov_end[:moov_off]
        + struct.pack(">I4s", 64 * MiB, b"moov") + _box(b"mvhd", b"\0" * 100),
    }


@pytest.fixture(scope="module")
def bad_media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    if not mf.ffmpeg_available() or not mf.ffmpeg_available("ffprobe"):
        pytest.skip("the bad-media suite needs ffmpeg and ffprobe (apt-get install ffmpeg)")
    out = tmp_path_factory.mktemp("bad-media")
    mp4 = mf.make_video(out, "mp4_moov_end", duration_s=1.0, width=160, height=120)
    mkv = mf.make_video(out, "mkv", duration_s=1.0, width=160, height=120)
    ts = mf.make_video(out, "ts", duration_s=1.0, width=160, height=120)
    invalid: dict[str, object] = {f"corrupt/{k}.mp4": mf.make_corrupt(out, k)
                                  for k in mf.CORRUPT_KINDS}
    invalid.update({f"hostile/{k}": v for k, v in adversarial_mp4s(mp4.read_bytes()).items()})
    invalid["names/notes.mkv"] = b"plain text, named like a video\n" * 200
    invalid["names/subtitles.ts"] = b"1\n00:00:01,000 --> 00:00:02,000\nhello\n" * 50
    valid = {
        "names/matroska named.mp4": (mkv, "matroska,webm"),
        "names/mp4 named.mkv": (mp4, "mov,mp4,m4a,3gp,3g2,mj2"),
        "names/transport stream named.mov": (ts, "mpegts"),
        "names/NO EXTENSION": (mp4, "mov,mp4,m4a,3gp,3g2,mj2"),
    }
    return {"invalid": invalid, "valid": valid}


def _place_sparse(share_dir: Path, rel: str, size: int) -> None:
    """A file of `size` bytes of zeros that takes no disk space."""
    target = share_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as fh:
        fh.truncate(size)
    old = time.time() - 3600
    os.utime(target, (old, old))


@pytest.fixture()
def hostile_folder(samba_server: SambaServer) -> Iterator[str]:
    """A top-level folder of the shared share, removed afterwards (it holds a 4 GiB file,
    sparse, and other tests list the share's top-level folders)."""
    folder = unique("Hostile")
    yield folder
    shutil.rmtree(samba_server.share_dir / folder, ignore_errors=True)


def test_corrupt_and_adversarial_media_are_recorded_invalid_with_a_reason(
        samba_server: SambaServer, nas_resource: NASResource,
        firestore_resource: FirestoreResource, bad_media: dict, hostile_folder: str,
        tmp_path: Path) -> None:
    from google.cloud.firestore_v1.base_query import FieldFilter

    folder = hostile_folder
    invalid: dict[str, object] = dict(bad_media["invalid"])
    valid: dict[str, tuple[Path, str]] = bad_media["valid"]
    for rel, src in {**invalid, **{r: v[0] for r, v in valid.items()}}.items():
        put(samba_server.share_dir, f"{folder}/{rel}", src)  # type: ignore[arg-type]
    sparse = "hostile/four GiB of zeros.mov"
    _place_sparse(samba_server.share_dir, f"{folder}/{sparse}", 4 * 1024 * MiB)
    invalid[sparse] = None
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    resources = chain_resources(nas_resource, catalog, firestore_resource)

    result = dg.materialize(CHAIN, partition_key=folder, instance=instance_with(folder),
                            resources=resources)
    assert result.success
    probes = metadata_of(result, "media_probes")
    total = len(invalid) + len(valid)
    assert (probes["probed"], probes["valid"], probes["invalid"]) == \
        (total, len(valid), len(invalid))
    assert [c.passed for c in result.get_asset_check_evaluations()] == [True]

    with sqlite3.connect(catalog.path) as conn:
        rows = {r[0].removeprefix(folder + "/"): r[1:] for r in conn.execute(
            "SELECT path, status, probe_error, format, bytes_read, size FROM files")}
    assert set(rows) == set(invalid) | set(valid)
    for rel in invalid:
        status, error, _fmt, _read, _size = rows[rel]
        assert status == "invalid" and error and len(error) > 5, (rel, rows[rel])
    for rel, (_src, fmt) in valid.items():
        assert rows[rel][:3] == ("valid", None, fmt), (rel, rows[rel])
    # Hostile sizes never turn into big reads: the 4 GiB file and the "64 MiB moov" are
    # refused from their first bytes.
    assert rows[sparse][3] <= MiB and rows[sparse][4] == 4 * 1024 * MiB
    assert rows["hostile/moov cut after header.mp4"][3] <= MiB
    assert probes["bytes_read"] < 16 * MiB

    q = firestore_resource.client().collection("files").where(
        filter=FieldFilter("partition", "==", folder))
    docs = {d.get("path").removeprefix(folder + "/"): d.to_dict() for d in q.stream()}
    assert {rel: (d["status"], d["probe_error"]) for rel, d in docs.items()} == \
        {rel: r[:2] for rel, r in rows.items()}

    # The next run has nothing to redo: bad files are not probed again and again.
    again = dg.materialize(CHAIN, partition_key=folder, instance=instance_with(folder),
                           resources=resources)
    assert metadata_of(again, "media_probes")["probed"] == 0
    assert metadata_of(again, "firestore_catalog")["synced"] == 0


def test_special_files_on_a_mounted_share_are_refused_not_waited_on(tmp_path: Path) -> None:
    root = tmp_path / "nas"
    d = root / "Specials" / "S1"
    d.mkdir(parents=True)
    (d / "ok.mp4").write_bytes(b"not media either" * 64)
    fifo = d / "named pipe.mp4"
    os.mkfifo(fifo)
    os.symlink("/etc/passwd", d / "link out of the share.mp4")
    os.symlink("/dev/zero", d / "endless device.mp4")
    old = time.time() - 7200
    for p in d.iterdir():
        os.utime(p, (old, old), follow_symlinks=False)
    (root / ".hybrid-pipelines-nas").touch()  # NAS_SENTINEL: a dir standing in for a mount
    nas = NASResource(protocol="local", local_root=str(root))
    catalog = SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))
    resources = {"nas": nas, "sqlite_catalog": catalog, "ffprobe": FFprobeResource()}
    outcome: dict[str, object] = {}

    def run() -> None:
        outcome["result"] = dg.materialize(CHAIN[:3], partition_key="Specials",
                                           instance=instance_with("Specials"),
                                           resources=resources, raise_on_error=False)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=10)  # four tiny files: a second or two, unless something waits
    hung = worker.is_alive()
    if hung:
        # Unblock the reader waiting on the pipe so this thread does not outlive the test.
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        worker.join(timeout=60)
    assert not hung, "media_probes waited forever on a named pipe"
    result = outcome["result"]
    assert isinstance(result, dg.ExecuteInProcessResult) and result.success
    with sqlite3.connect(catalog.path) as conn:
        rows = dict(conn.execute("SELECT path, status FROM files").fetchall())
    # Either never catalogued, or catalogued as invalid: never valid, never stuck.
    for path, status in rows.items():
        assert status == "invalid", (path, status)
