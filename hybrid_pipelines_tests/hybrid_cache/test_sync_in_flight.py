"""Issue #15, sync: several files in flight per run (file N+1 copied while N is read back and
verified), against the real SeaweedFS, Samba and PostgreSQL. The NAS is the real share seen
through a subclass that only records when each file is written and read back, and holds one
read-back until another file's copy is complete, so the overlap is certain."""

from __future__ import annotations

import posixpath
import random
import threading
import time
from typing import Any

import psycopg
import pytest

from hybrid_pipelines.hybrid_cache import sync as sync_mod
from hybrid_pipelines.hybrid_cache.sync import SyncReport, SyncSettings, run_pending_sync
from hybrid_pipelines.resources import SeaweedFSResource

from .conftest import Uploader, nas_bytes, partials, rename_hooked, row, sha

CHUNK = 16 * 1024


class Handle:
    """A real NAS read handle that reports its close."""

    def __init__(self, fh: Any, on_close: Any):
        self._fh, self._on_close = fh, on_close

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._fh.close()
        self._on_close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


class ReadBack:
    """A real read-back on a NewFile's own handle that reports reaching the end."""

    def __init__(self, reader: Any, at_end: Any):
        self._reader, self._at_end = reader, at_end

    def readinto(self, buffer: Any) -> int:
        n = self._reader.readinto(buffer)
        if not n:
            self._at_end()
        return n

    def read(self, size: int = -1) -> bytes:
        data = self._reader.read(size)
        if not data:
            self._at_end()
        return data


class RecordedFile:
    """A real NewFile whose copy span runs from its creation to its last write."""

    def __init__(self, new: Any, timeline: Timeline, name: str):
        self._new, self._timeline, self._name = new, timeline, name
        self.path, self.reads_back_as_written = new.path, new.reads_back_as_written
        self._span = timeline.span(name, "copy")
        self._verify: list[Any] | None = None

    def write(self, data: Any) -> Any:
        n = self._new.write(data)
        self._span[3] = time.monotonic()
        if self._verify is None and self.reads_back_as_written:
            if self._new.read_back_bytes:
                # A lean SMB file reading itself back between its writes: seen running now.
                self._verify = self._timeline.span(self._name, "verify")
            else:
                # Pacing, not a fault: a real chunk takes a while to come from SeaweedFS, and
                # the file takes the answers that arrived meanwhile at its next write; these
                # 16 KiB chunks come at once, and on a loaded machine every answer could
                # still be on its way when the last write is sent.
                time.sleep(0.002)
        return n

    def reader(self) -> Any:
        self._timeline.event(self._name).set()  # fully copied
        span = self._timeline.verify_span(self._name)
        return ReadBack(self._new.reader(), lambda: span.__setitem__(3, time.monotonic()))

    def hash_on_server(self, progress: Any) -> Any:
        """The read-back over the lean connection (smb_wire_file.py), recorded the same."""
        self._timeline.event(self._name).set()  # fully copied
        span = self._verify or self._timeline.verify_span(self._name)
        try:
            return self._new.hash_on_server(progress)
        finally:
            span[3] = time.monotonic()

    def rename_and_close(self, dst: str) -> None:
        self._timeline.event(self._name).set()
        self._new.rename_and_close(dst)

    def close(self) -> None:
        self._timeline.event(self._name).set()
        self._new.close()

    def discard(self) -> None:
        self._timeline.event(self._name).set()
        self._new.discard()


class Timeline:
    """(file name, 'copy' | 'verify', start, end) for every temporary file the sync wrote and
    every read-back of one, on its own handle or (a large file's) on another."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[list[Any]] = []
        self.copied: dict[str, threading.Event] = {}
        self.hold_verify: dict[str, str] = {}  # file -> the file whose copy it waits for

    def event(self, name: str) -> threading.Event:
        with self.lock:
            return self.copied.setdefault(name, threading.Event())

    def span(self, name: str, kind: str) -> list[Any]:
        now = time.monotonic()
        span = [name, kind, now, now]
        with self.lock:
            self.spans.append(span)
        return span

    def verify_span(self, name: str) -> list[Any]:
        if other := self.hold_verify.get(name):
            # Fault timing: this file's read-back starts only once `other` is fully copied.
            assert self.event(other).wait(30), f"{other} was never copied"
        return self.span(name, "verify")

    def max_overlap(self) -> int:
        """Most spans of different files open at one moment."""
        points = sorted([(s[2], 1) for s in self.spans] + [(s[3], -1) for s in self.spans])
        best = now = 0
        for _, step in points:
            now += step
            best = max(best, now)
        return best

    def copy_during_verify(self) -> bool:
        """Some file's copy ran while another file's read-back was open."""
        copies = [s for s in self.spans if s[1] == "copy"]
        verifies = [s for s in self.spans if s[1] == "verify"]
        return any(c[0] != v[0] and c[2] < v[3] and v[2] < c[3]
                   for c in copies for v in verifies)


def _name(path: str) -> str:
    return posixpath.basename(path).split(".partial-")[0].lstrip(".")


def recording_nas(nas_fs: Any, timeline: Timeline) -> Any:
    """Files of more than one chunk: the one-exchange put of small files is not recorded."""
    base = type(nas_fs)

    class RecordingNAS(base):  # type: ignore[misc, valid-type]
        def create_new(self, path: str, **kw: Any) -> Any:
            return RecordedFile(base.create_new(self, path, **kw), timeline, _name(path))

        def open_read(self, path: str, **kw: Any) -> Any:
            if ".partial-" not in path:
                return base.open_read(self, path, **kw)
            span = timeline.verify_span(_name(path))
            return Handle(base.open_read(self, path, **kw),
                          lambda: span.__setitem__(3, time.monotonic()))

    # The same real share and session settings; the sync gives each worker its own copy.
    nas = object.__new__(RecordingNAS)
    nas.__dict__.update(nas_fs.__dict__)
    return nas


def sync(conn: psycopg.Connection, s3_resource: SeaweedFSResource, nas: Any,
         **kw: Any) -> SyncReport:
    settings = SyncSettings(**{"chunk_size": CHUNK, "retry_delay_s": 0, **kw})
    return run_pending_sync(conn, s3_resource.get_client(), s3_resource.bucket, nas, settings)


def test_files_in_flight_overlap_and_every_copy_is_verified(conn, upload: Uploader,
                                                            s3_resource, nas_fs,
                                                            prefix) -> None:
    rng = random.Random(15)
    files = [upload(rng.randbytes(8 * CHUNK + i), f"f{i:02d}.bin") for i in range(12)]
    timeline = Timeline()

    report = sync(conn, s3_resource, recording_nas(nas_fs, timeline), files_in_flight=4,
                  batch_size=5)

    assert report.synced == len(files) and report.claimed == len(files), report.errors
    assert report.synced_ids == [f.id for f in files]  # reported in queue order
    assert report.bytes_synced == sum(f.size for f in files)
    for f in files:
        r = row(conn, f.id)
        assert r["nas_status"] == "synced" and r["nas_verified_at"] is not None
        assert sha(nas_bytes(nas_fs, r["nas_path"])) == f.sha256
    # Every file was written once and read back whole once, and files overlapped.
    names = {posixpath.basename(f.nas_path) for f in files}
    for kind in ("copy", "verify"):
        assert sorted(s[0] for s in timeline.spans if s[1] == kind) == sorted(names)
    assert timeline.max_overlap() >= 2
    assert timeline.copy_during_verify()
    assert partials(nas_fs, prefix) == []


def test_one_file_at_a_time_still_works(conn, upload: Uploader, s3_resource, nas_fs,
                                        prefix) -> None:
    files = [upload(random.Random(i).randbytes(3 * CHUNK), f"s{i}.bin") for i in range(3)]
    timeline = Timeline()

    report = sync(conn, s3_resource, recording_nas(nas_fs, timeline), files_in_flight=1)

    assert report.synced == 3 and report.synced_ids == [f.id for f in files]
    assert timeline.max_overlap() == 1  # the setting really bounds the files in flight


@pytest.mark.fault("file N's NAS copy is corrupt and fails its read-back while file N+1 is "
                   "already copied -> N+1 is placed and marked, N is not: re-queued with one "
                   "attempt charged, its temporary copy removed, synced by the next run",
                   kind="patched exception")
def test_a_verify_failure_leaves_the_next_file_in_flight_correct(conn, upload: Uploader,
                                                                 s3_resource, nas_fs, prefix,
                                                                 monkeypatch) -> None:
    rng = random.Random(16)
    bad, after, third = (upload(rng.randbytes(6 * CHUNK + i), f"v{i}.bin") for i in range(3))
    bad_name, after_name = (posixpath.basename(f.nas_path) for f in (bad, after))
    timeline = Timeline()
    timeline.hold_verify[bad_name] = after_name  # N's read-back waits for N+1's full copy
    real_copy = sync_mod.copy_with_sha256

    def corrupt_bad(src: Any, dst: Any, chunk_size: int, **kw: Any) -> Any:
        # Fault injection: Samba never corrupts a write on demand, so file N's temporary copy
        # is damaged after its streamed copy, through the same SMB handle.
        result = real_copy(src, dst, chunk_size, **kw)
        if result.size == bad.size:
            dst.write(b"\x00garbage")
        return result

    monkeypatch.setattr(sync_mod, "copy_with_sha256", corrupt_bad)
    report = sync(conn, s3_resource, recording_nas(nas_fs, timeline), files_in_flight=2)

    assert report.synced == 2 and report.failed_attempts == 1, report.errors
    b = row(conn, bad.id)
    assert b["nas_status"] == "pending" and b["sync_attempts"] == 1
    assert "corrupt" in b["last_error"] and b["nas_verified_at"] is None
    assert nas_fs.stat(bad.nas_path) is None  # nothing renamed into place for N
    for f in (after, third):
        r = row(conn, f.id)
        assert r["nas_status"] == "synced" and r["sync_attempts"] == 0
        assert sha(nas_bytes(nas_fs, r["nas_path"])) == f.sha256
    # N+1's copy had finished before N's read-back began: they really were in flight together.
    after_copy = next(s for s in timeline.spans if s[0] == after_name and s[1] == "copy")
    bad_verify = next(s for s in timeline.spans if s[0] == bad_name and s[1] == "verify")
    assert after_copy[3] <= bad_verify[2]
    assert partials(nas_fs, prefix) == []

    monkeypatch.undo()
    again = sync(conn, s3_resource, nas_fs)
    assert again.synced == 1 and row(conn, bad.id)["nas_status"] == "synced"
    assert sha(nas_bytes(nas_fs, bad.nas_path)) == bad.sha256


@pytest.mark.fault("the run fails while files are in flight -> copies stop, their temporary "
                   "files are removed, every row not yet placed goes back to the queue "
                   "uncharged, the placed ones stay synced", kind="patched exception")
def test_a_run_that_fails_mid_flight_hands_back_what_it_holds(conn, upload: Uploader,
                                                              s3_resource, nas_fs,
                                                              prefix) -> None:
    files = [upload(random.Random(i).randbytes(40 * CHUNK), f"h{i}.bin") for i in range(6)]
    timeline = Timeline()
    seen: list[str] = []

    def fail_after_first(file_row: Any, outcome: str) -> None:
        seen.append(outcome)
        raise RuntimeError("the run's own code failed")  # fault injection: a bug mid-run

    with pytest.raises(RuntimeError, match="own code"):
        run_pending_sync(conn, s3_resource.get_client(), s3_resource.bucket,
                         recording_nas(nas_fs, timeline),
                         SyncSettings(chunk_size=CHUNK, files_in_flight=3),
                         on_file=fail_after_first)

    assert seen == ["synced"]
    statuses = [row(conn, f.id) for f in files]
    # Workers place their own files: others may have been placed before the failure reached
    # them; those are verified copies, synced for good. Nothing else was placed.
    assert sum(r["nas_status"] == "synced" for r in statuses) >= 1
    for f, r in zip(files, statuses, strict=True):
        assert r["sync_attempts"] == 0
        if r["nas_status"] == "synced":
            assert sha(nas_bytes(nas_fs, r["nas_path"])) == f.sha256
            continue
        assert r["nas_status"] == "pending" and r["claimed_by"] is None
        assert "the run stopped" in r["last_error"]
        assert nas_fs.stat(r["nas_path"]) is None
    assert partials(nas_fs, prefix) == []


@pytest.mark.fault("one file's NAS write never returns (a server that stops answering one "
                   "request) -> after stall_timeout_s the run gives that file up (re-queued, one "
                   "attempt charged), syncs the others and ends; released later, the stuck copy "
                   "finds its lease gone and removes its temporary file", kind="patched exception")
def test_a_copy_that_never_returns_cannot_hold_the_run(conn, upload: Uploader, s3_resource,
                                                       nas_fs, prefix, monkeypatch) -> None:
    from hybrid_pipelines.hybrid_cache import sync_pipeline

    monkeypatch.setattr(sync_pipeline, "STOP_GRACE_S", 2.0)  # the stuck thread is left behind
    monkeypatch.setattr(sync_pipeline, "STALL_CHECK_S", 0.5)
    files = [upload(random.Random(30 + i).randbytes(4 * CHUNK), f"n{i}.bin") for i in range(3)]
    stuck_name = posixpath.basename(files[0].nas_path)
    release = threading.Event()
    base = type(nas_fs)

    class HangingNAS(base):  # type: ignore[misc, valid-type]
        def create_new(self, path: str, **kw: Any) -> Any:
            if stuck_name in path and ".partial-" in path:
                # Fault injection: Samba answers every request, so a call that does not return
                # (smbprotocol waits for some answers without a timeout) is made here.
                release.wait(120)
            return base.create_new(self, path, **kw)

    nas = object.__new__(HangingNAS)
    nas.__dict__.update(nas_fs.__dict__)
    try:
        report = sync(conn, s3_resource, nas, files_in_flight=2, stall_timeout_s=3)
    finally:
        release.set()

    assert report.synced == 2 and report.failed_attempts == 1, report.errors
    stuck = row(conn, files[0].id)
    assert (stuck["nas_status"], stuck["sync_attempts"], stuck["claimed_by"]) == \
        ("pending", 1, None)
    assert "no progress" in stuck["last_error"]
    for f in files[1:]:
        r = row(conn, f.id)
        assert r["nas_status"] == "synced"
        assert sha(nas_bytes(nas_fs, r["nas_path"])) == f.sha256
    deadline = time.monotonic() + 30
    while partials(nas_fs, prefix) and time.monotonic() < deadline:
        time.sleep(0.2)  # the released copy's next chunk meets its lost lease
    assert partials(nas_fs, prefix) == []
    assert nas_fs.stat(files[0].nas_path) is None

    again = sync(conn, s3_resource, nas_fs)
    assert again.synced == 1 and row(conn, files[0].id)["nas_status"] == "synced"
    assert sha(nas_bytes(nas_fs, files[0].nas_path)) == files[0].sha256


@pytest.mark.fault("one file's rename into place never returns while its worker holds the row "
                   "lock (its own PostgreSQL connection) -> the server ends that idle "
                   "transaction, the run gives the file up (re-queued, one attempt charged) and "
                   "ends while the rename is still stuck; released later, the late rename "
                   "replaces nothing and the next run recognises the copy by its bytes",
                   kind="patched exception")
def test_a_rename_that_never_returns_cannot_hold_the_row_lock(conn, upload: Uploader,
                                                              s3_resource, nas_fs, prefix,
                                                              monkeypatch) -> None:
    from hybrid_pipelines.hybrid_cache import sync_pipeline, worker_db

    monkeypatch.setattr(worker_db, "PLACING_IDLE_TIMEOUT_MS", 1500)
    monkeypatch.setattr(sync_pipeline, "STOP_GRACE_S", 2.0)  # the stuck thread is left behind
    monkeypatch.setattr(sync_pipeline, "STALL_CHECK_S", 0.5)
    files = [upload(random.Random(70 + i).randbytes(2 * CHUNK), f"r{i}.bin") for i in range(3)]
    stuck_target = files[0].nas_path
    release, entered = threading.Event(), threading.Event()


    def hang(dst: str, rename: Any) -> None:
        if dst == stuck_target:
            # Fault injection: Samba answers every request; a rename that does not return
            # (a NAS that stops answering) is made here, row lock held.
            entered.set()
            release.wait(120)
        rename()

    nas = rename_hooked(nas_fs, hang)
    try:
        report = sync(conn, s3_resource, nas, files_in_flight=2, stall_timeout_s=3)
        still_stuck = entered.is_set() and not release.is_set()
    finally:
        release.set()

    assert still_stuck  # the run ended while the rename was still hanging
    assert report.synced == 2 and report.failed_attempts == 1, report.errors
    stuck = row(conn, files[0].id)
    assert (stuck["nas_status"], stuck["sync_attempts"], stuck["claimed_by"]) == \
        ("pending", 1, None)
    for f in files[1:]:
        assert row(conn, f.id)["nas_status"] == "synced"
    # The late rename may have put the verified copy in place; the next run adopts it by its
    # bytes (or places its own copy), never replacing anything.
    deadline = time.monotonic() + 30
    while partials(nas_fs, prefix) and time.monotonic() < deadline:
        time.sleep(0.2)
    again = sync(conn, s3_resource, nas_fs)
    assert again.synced == 1 and row(conn, files[0].id)["nas_status"] == "synced"
    assert sha(nas_bytes(nas_fs, stuck_target)) == files[0].sha256
    assert partials(nas_fs, prefix) == []
