"""Issue #15, sync of large files: a file of FOLLOW_MIN_CHUNKS chunks or more is read back from
the NAS while it is still being written (hybrid_cache/follow_read.py), against the real
SeaweedFS, Samba and PostgreSQL; the rules of follow_read on a local file first."""

from __future__ import annotations

import hashlib
import posixpath
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from hybrid_pipelines.hybrid_cache import sync as sync_mod
from hybrid_pipelines.hybrid_cache.follow_read import WriteMark, WriterGone, read_back_following
from hybrid_pipelines.hybrid_cache.sync import FOLLOW_MIN_CHUNKS
from hybrid_pipelines.resources.smb_wire_file import WINDOW_BYTES

from .conftest import Uploader, nas_bytes, partials, row, sha
from .test_sync_in_flight import CHUNK, Timeline, recording_nas, sync

LARGE = (FOLLOW_MIN_CHUNKS + 24) * CHUNK + 123  # not a whole number of chunks


class WatchedFile:
    """A local file handle that records how far each read reached."""

    def __init__(self, path: Path, mark: WriteMark, written: list[int]):
        self._fh = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the reader
        self.reached: list[tuple[int, int]] = []  # (end of the read, bytes reported written)
        self._written = written

    def __enter__(self) -> WatchedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def readinto(self, view: Any) -> int:
        n = self._fh.readinto(view)
        self.reached.append((self._fh.tell(), self._written[0]))
        return n


def test_the_reader_never_reads_past_what_was_written(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(10 * CHUNK + 7)
    path = tmp_path / "f.bin"
    path.write_bytes(b"")
    mark, written = WriteMark(), [0]
    fh = WatchedFile(path, mark, written)
    result: list[Any] = []
    reader = threading.Thread(target=lambda: result.append(
        read_back_following(fh, mark, CHUNK, wait_s=0.05)))
    reader.start()
    with open(path, "ab", buffering=0) as out:
        for i in range(0, len(data), 3 * CHUNK // 2):
            piece = data[i:i + 3 * CHUNK // 2]
            out.write(piece)
            written[0] += len(piece)
            mark.advance(len(piece))
    mark.finished()
    reader.join(10)

    assert result and result[0].size == len(data)
    assert result[0].sha256 == hashlib.sha256(data).hexdigest()
    assert all(end <= seen or end == len(data) for end, seen in fh.reached)


def test_a_failed_writer_ends_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * CHUNK)
    mark = WriteMark()
    mark.advance(CHUNK)
    mark.failed()
    with pytest.raises(WriterGone):
        read_back_following(open(path, "rb", buffering=0), mark, CHUNK)  # noqa: SIM115


def test_a_large_file_is_read_back_while_it_is_written(conn, upload: Uploader, s3_resource,
                                                       nas_fs, prefix) -> None:
    files = [upload(random.Random(40 + i).randbytes(LARGE + i), f"big{i}.bin")
             for i in range(2)]
    timeline = Timeline()

    # One file at a time: any overlap seen is a file's read-back during its own copy.
    report = sync(conn, s3_resource, recording_nas(nas_fs, timeline), files_in_flight=1)

    assert report.synced == 2 and report.bytes_synced == sum(f.size for f in files), \
        report.errors
    for f in files:
        r = row(conn, f.id)
        assert r["nas_status"] == "synced" and r["nas_verified_at"] is not None
        assert sha(nas_bytes(nas_fs, r["nas_path"])) == f.sha256
        name = posixpath.basename(f.nas_path)
        copy = next(s for s in timeline.spans if s[0] == name and s[1] == "copy")
        verify = next(s for s in timeline.spans if s[0] == name and s[1] == "verify")
        assert verify[2] < copy[3], "the read-back began only after the copy's last write"
        assert verify[3] >= copy[3]  # and read on to the end of the finished file
    assert partials(nas_fs, prefix) == []


@pytest.mark.fault("one chunk of a large file is altered on its way to the NAS while the copy "
                   "is read back as it is written -> the read-back's hash differs: the row is "
                   "re-queued with one attempt charged, nothing placed, the temporary copy "
                   "removed; the next run syncs it", kind="patched exception")
def test_a_chunk_altered_on_its_way_is_caught(conn, upload: Uploader, s3_resource, nas_fs,
                                              prefix, monkeypatch) -> None:
    f = upload(random.Random(50).randbytes(LARGE), "altered.bin")
    real_copy = sync_mod.copy_with_sha256

    class Flipping:
        """Fault injection: Samba stores what it is sent, so the third chunk is damaged on
        its way through the real SMB handle (the hash was taken of the bytes read)."""

        def __init__(self, dst: Any):
            self._dst, self._n = dst, 0

        def write(self, data: Any) -> Any:
            self._n += 1
            if self._n == 3:
                data = bytes([data[0] ^ 0xFF]) + bytes(data[1:])
            return self._dst.write(data)

    monkeypatch.setattr(sync_mod, "copy_with_sha256",
                        lambda src, dst, chunk, **kw: real_copy(src, Flipping(dst), chunk, **kw))
    report = sync(conn, s3_resource, nas_fs)

    assert report.synced == 0 and report.failed_attempts == 1
    r = row(conn, f.id)
    assert (r["nas_status"], r["sync_attempts"]) == ("pending", 1)
    assert "corrupt" in r["last_error"] and r["nas_verified_at"] is None
    assert nas_fs.stat(f.nas_path) is None and partials(nas_fs, prefix) == []

    monkeypatch.undo()
    again = sync(conn, s3_resource, nas_fs)
    assert again.synced == 1 and sha(nas_bytes(nas_fs, f.nas_path)) == f.sha256


@pytest.mark.fault("the read-back of a large file fails mid-copy (a NAS read error) -> the copy "
                   "stops at its next chunk instead of writing the rest, the temporary copy is "
                   "removed, the row re-queued with one attempt charged", kind="patched exception")
def test_a_read_error_stops_the_copy_early(conn, upload: Uploader, s3_resource, nas_fs, prefix,
                                           monkeypatch) -> None:
    from hybrid_pipelines.resources import smb_wire_hash

    real_read_body, lean_reads = smb_wire_hash.read_body, [0]

    def closed_handle_on_third(offset: int, length: int, fid: bytes) -> bytes:
        # Fault injection on the lean SMB read-back (smb_wire_file.py): the third read asks
        # for a handle that is not open, and Samba itself answers it with an error.
        lean_reads[0] += 1
        return real_read_body(offset, length, bytes(16) if lean_reads[0] == 3 else fid)

    monkeypatch.setattr(smb_wire_hash, "read_body", closed_handle_on_third)
    # Three write windows: the failing read queues behind at most one window of writes, and
    # the writer sends at most one more before its answer is back. A file within one window
    # can be sent whole before any answer (it was, once, in CI): that says nothing here.
    size = 3 * WINDOW_BYTES + 123
    f = upload(random.Random(60).randbytes(size), "unreadable.bin")
    base = type(nas_fs)
    written = [0]

    class FailingReads(base):  # type: ignore[misc, valid-type]
        def create_new(self, path: str, **kw: Any) -> Any:
            new = base.create_new(self, path, **kw)
            real_write = new.write

            def counted(data: Any) -> Any:
                n = real_write(data)
                written[0] += n or 0
                return n

            new.write = counted
            return new

        def open_read(self, path: str, **kw: Any) -> Any:
            fh = base.open_read(self, path, **kw)
            real_readinto, reads = fh.readinto, [0]

            def readinto(view: Any) -> int:
                reads[0] += 1
                if reads[0] == 3:  # fault injection (a mount): the third read fails
                    raise OSError(5, "read error on the NAS (injected)")
                return real_readinto(view)

            fh.readinto = readinto
            return fh

    nas = object.__new__(FailingReads)
    nas.__dict__.update(nas_fs.__dict__)
    report = sync(conn, s3_resource, nas, files_in_flight=1)

    assert report.synced == 0 and report.failed_attempts == 1, report.errors
    r = row(conn, f.id)
    assert (r["nas_status"], r["sync_attempts"]) == ("pending", 1)
    assert "read error" in r["last_error"]
    assert 0 < written[0] < size  # stopped early, not after writing the whole file
    assert nas_fs.stat(f.nas_path) is None and partials(nas_fs, prefix) == []
    if nas_fs.description.startswith("smb://"):
        assert lean_reads[0] >= 3  # the lean read-back, between the writes, failed
