"""Issue #12 item 1: two rows, one NAS path. Two concurrent pending-sync runs (two threads, two
PostgreSQL connections, distinct owners) against the real Samba share and SeaweedFS; a file the
rows do not own already at the target; a nas_path outside the sync's folder."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

from hybrid_pipelines.hybrid_cache.metadata_store import claim_pending
from hybrid_pipelines.hybrid_cache.sync import SyncReport, SyncSettings, run_pending_sync
from hybrid_pipelines.resources import PostgresResource, SeaweedFSResource

from .conftest import Uploader, nas_bytes, partials, rename_hooked, row, sha


class Rendezvous:
    """Holds each run at its rename until the other run has reached its own rename or is done
    with its row, so that two renames onto one NAS name race as closely as threads allow. A
    run that never renames (its row was refused) releases the other through on_file."""

    def __init__(self, parties: int = 2):
        self._cond = threading.Condition()
        self._arrived = 0
        self._parties = parties

    def arrive(self) -> None:
        with self._cond:
            self._arrived += 1
            self._cond.notify_all()

    def arrive_and_wait(self) -> None:
        self.arrive()
        with self._cond:
            self._cond.wait_for(lambda: self._arrived >= self._parties, timeout=30)


def gated(nas_fs: Any, rendezvous: Rendezvous) -> Any:
    """The real NAS file system with the rename held at the rendezvous (no fault injected:
    every NAS call still goes to Samba, only the timing is arranged). Both runs pass every
    check before either renames; the renames themselves then go one after the other (two
    overlapping SMB renames onto one name can fail with a sharing violation, which would hide
    the race instead of showing it)."""
    one_at_a_time = threading.Lock()

    def gate(dst: str, rename: Any) -> None:
        rendezvous.arrive_and_wait()
        with one_at_a_time:
            rename()

    return rename_hooked(nas_fs, gate)


def race(hc_postgres: PostgresResource, s3_resource: SeaweedFSResource, nas: Any,
         rendezvous: Rendezvous, **settings: Any) -> list[SyncReport]:
    reports: list[SyncReport] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def worker(i: int) -> None:
        try:
            with hc_postgres.connect(autocommit=True) as c:
                start.wait(30)
                reports.append(run_pending_sync(
                    c, s3_resource.get_client(), s3_resource.bucket, nas,
                    SyncSettings(**{"batch_size": 1, "retry_delay_s": 0, **settings}),
                    owner=f"racer-{i}", on_file=lambda r, outcome: rendezvous.arrive()))
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(reports) == 2
    return reports


@pytest.mark.fault("two pending rows on one NAS name (same to Samba), two concurrent syncs "
                   "meeting at the rename -> one wins, the other fails naming it, no file lost",
                   kind="concurrency")
@pytest.mark.parametrize("first,second", [
    ("same/clip.bin", "same/clip.bin"),
    ("Uploads/A.PDF", "uploads/a.pdf"),          # Samba compares names case-insensitively
    ("a\\b\\c.bin", "a/b/c.bin"),                # SMB clients send backslashes
    ("a//b/c.bin", "a/b/c.bin"),
], ids=["same", "case", "backslash", "double-slash"])
def test_two_runs_cannot_both_place_a_file_at_one_nas_name(
        conn, upload: Uploader, s3_resource, s3, hc_postgres, nas_fs, prefix,
        first: str, second: str) -> None:
    one = upload(random.Random(1).randbytes(40_000), "one.pdf")
    two = upload(random.Random(2).randbytes(50_000), "two.pdf")
    for f, path in ((one, first), (two, second)):
        sep = "\\" if "\\" in path else "/"
        conn.execute("UPDATE file_metadata SET nas_path = %s WHERE id = %s",
                     (f"{prefix}{sep}{path}", f.id))
    rendezvous = Rendezvous()

    reports = race(hc_postgres, s3_resource, gated(nas_fs, rendezvous), rendezvous)

    assert sum(r.claimed for r in reports) == 2  # each run really held one of the two rows
    rows = {f.id: row(conn, f.id) for f in (one, two)}
    synced = [f for f in (one, two) if rows[f.id]["nas_status"] == "synced"]
    assert len(synced) == 1, {f.id: rows[f.id]["nas_status"] for f in (one, two)}
    winner = synced[0]
    loser = two if winner is one else one
    lost = rows[loser.id]
    assert lost["nas_status"] == "failed" and lost["sync_attempts"] == 1
    assert str(winner.id) in lost["last_error"] and "nas_path" in lost["last_error"]
    # The winner's row points at a NAS file holding its bytes ...
    assert sha(nas_bytes(nas_fs, rows[winner.id]["nas_path"])) == winner.sha256
    # ... and the loser still has its only copy, in the cache, to be given another path.
    assert lost["cache_status"] == "cached"
    held = s3.get_object(Bucket=s3_resource.bucket, Key=loser.key)["Body"].read()
    assert sha(held) == loser.sha256
    assert partials(nas_fs, prefix) == []


@pytest.mark.fault("an editor's own file already at the target -> never overwritten, the row "
                   "fails naming the conflict", kind="state edited")
def test_untracked_file_at_the_target_is_left_untouched(conn, upload: Uploader, s3_resource,
                                                       nas_fs, prefix) -> None:
    target = f"{prefix}/edits/report.pdf"
    nas_fs.makedirs(f"{prefix}/edits")
    with nas_fs.open_write(target) as out:
        out.write(b"the editor's original")
    f = upload(b"the upload's bytes", "report.pdf")
    conn.execute("UPDATE file_metadata SET nas_path = %s WHERE id = %s", (target, f.id))

    report = run_pending_sync(conn, s3_resource.get_client(), s3_resource.bucket, nas_fs,
                              SyncSettings(retry_delay_s=0))

    r = row(conn, f.id)
    assert report.synced == 0 and report.failed_final == 1
    assert r["nas_status"] == "failed" and r["cache_status"] == "cached"
    assert "NAS already holds a different file at" in r["last_error"]
    assert nas_bytes(nas_fs, target) == b"the editor's original"
    assert partials(nas_fs, prefix) == []


@pytest.mark.fault("a file appears at the target between the checks and the rename -> the "
                   "rename does not replace it", kind="state edited")
def test_a_file_written_at_the_target_just_before_the_rename_survives(
        conn, upload: Uploader, s3_resource, nas_fs, prefix) -> None:
    target = f"{prefix}/late/clip.mp4"

    def editor_first(dst: str, rename: Any) -> None:
        # State edited at the worst moment: an editor saves a file under the same name
        # (through the real share) right before our rename.
        with nas_fs.open_write(dst) as out:
            out.write(b"saved by an editor meanwhile")
        rename()

    nas = rename_hooked(nas_fs, editor_first)
    f = upload(b"uploaded clip" * 100, "clip.mp4")
    conn.execute("UPDATE file_metadata SET nas_path = %s WHERE id = %s", (target, f.id))

    run_pending_sync(conn, s3_resource.get_client(), s3_resource.bucket, nas,
                     SyncSettings(retry_delay_s=0))

    r = row(conn, f.id)
    assert r["nas_status"] == "failed" and "NAS already holds a different file at" in \
        r["last_error"]
    assert nas_bytes(nas_fs, target) == b"saved by an editor meanwhile"
    assert partials(nas_fs, prefix) == []


@pytest.mark.fault("run renamed into place then died before marking the row -> the next run "
                   "finds the same bytes there and marks it synced", kind="state edited")
def test_identical_bytes_at_the_target_resume_a_crashed_sync(conn, upload: Uploader,
                                                            s3_resource, nas_fs,
                                                            prefix) -> None:
    data = random.Random(3).randbytes(70_000)
    f = upload(data, "resume.bin")
    # The crashed run's state: the row claimed by it, its copy already renamed into place.
    assert len(claim_pending(conn, "crashed-run", 10, lease_s=600, max_attempts=3)) == 1
    nas_fs.makedirs(f.nas_path.rsplit("/", 1)[0])
    with nas_fs.open_write(f.nas_path) as out:
        out.write(data)
    conn.execute("UPDATE file_metadata SET lease_until = now() - interval '1 second'")

    report = run_pending_sync(conn, s3_resource.get_client(), s3_resource.bucket, nas_fs,
                              SyncSettings(retry_delay_s=0))

    r = row(conn, f.id)
    assert report.synced == 1 and r["nas_status"] == "synced" and r["sync_attempts"] == 0
    assert r["nas_verified_at"] is not None
    assert sha(nas_bytes(nas_fs, f.nas_path)) == f.sha256
    assert partials(nas_fs, prefix) == []


def test_nas_path_outside_the_sync_root_fails_at_once(conn, upload: Uploader, s3_resource,
                                                      nas_fs, prefix) -> None:
    inside = upload(b"inside", "in.bin")
    outside = upload(b"outside", "out.bin")
    conn.execute("UPDATE file_metadata SET nas_path = %s WHERE id = %s",
                 (f"{prefix}/inbox/in.bin", inside.id))
    conn.execute("UPDATE file_metadata SET nas_path = %s WHERE id = %s",
                 (f"{prefix}/Shows/out.bin", outside.id))

    report = run_pending_sync(conn, s3_resource.get_client(), s3_resource.bucket, nas_fs,
                              SyncSettings(retry_delay_s=0, nas_root=f"{prefix}/inbox",
                                           nas_prefix=f"{prefix}/inbox"))

    assert report.synced == 1 and report.failed_final == 1
    assert row(conn, inside.id)["nas_status"] == "synced"
    r = row(conn, outside.id)
    assert r["nas_status"] == "failed" and r["sync_attempts"] == 1
    assert "outside the sync's NAS folder" in r["last_error"] and "nas_root" in r["last_error"]
    assert nas_fs.stat(f"{prefix}/Shows/out.bin") is None


def test_prefix_outside_the_root_is_a_settings_error() -> None:
    with pytest.raises(ValueError, match="nas_prefix"):
        SyncSettings(nas_root="inbox", nas_prefix="uploads")


@pytest.mark.parametrize("name", ["keep.txt", "KEEP.TXT"])
@pytest.mark.parametrize("rooted", [False, True], ids=["share-root", "root-folder"])
def test_smb_rename_never_replaces(nas_resource, nas_fs, prefix, name: str,
                                   rooted: bool) -> None:
    """The rename is one compound request with replace_if_exists off: the server itself
    refuses a taken name (as it compares names: KEEP.TXT is keep.txt), nothing checked before,
    also on a NAS whose root is a folder of the share (the name sent is the share's)."""
    nas_fs.makedirs(prefix)
    with nas_fs.open_write(f"{prefix}/keep.txt") as out:
        out.write(b"original")
    with nas_fs.open_write(f"{prefix}/new.txt") as out:
        out.write(b"newcomer")
    fs, where = nas_fs, f"{prefix}/"
    if rooted:  # the same files through a NAS whose root is the test's folder
        fs = nas_resource.model_copy(update={"root_dir": prefix}).fs()
        where = ""
    with pytest.raises(FileExistsError):
        fs.rename(f"{where}new.txt", f"{where}{name}")
    assert nas_bytes(fs, f"{where}keep.txt") == b"original"
    assert nas_bytes(fs, f"{where}new.txt") == b"newcomer"
    fs.rename(f"{where}new.txt", f"{where}moved.txt")
    assert nas_bytes(nas_fs, f"{prefix}/moved.txt") == b"newcomer"  # seen from the share root
    assert nas_fs.stat(f"{prefix}/new.txt") is None
