"""The sync's new files on the worker's lean SMB connection (resources/smb_wire_file.py, reads
in smb_wire_hash.py), against the real Samba: writes in flight are all answered before the
read-back, which hashes exactly the bytes the NAS holds, whatever the size and however many
reads are in flight, on the file's own handle (the rename into place works after it); an
extra byte past the expected end, an answer whose signature was tampered with, or a read-back
given up midway are all refused or recovered from."""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from hybrid_pipelines.resources import NASResource
from hybrid_pipelines.resources.nas_fs import SMBNAS
from hybrid_pipelines.resources.smb_wire import WireError
from hybrid_pipelines.resources.smb_wire_file import WireNewFile

MIB = 1 << 20


@pytest.fixture()
def worker(nas_resource: NASResource) -> Iterator[SMBNAS]:
    """A sync worker's view of the share: its own session and a lean hasher, one GUID;
    both closed after the test, as a run closes them."""
    import smbclient

    fs = nas_resource.fs()
    assert isinstance(fs, SMBNAS)
    clone, cache = fs.with_own_connection(uuid.uuid4())
    assert clone.worker_wire is not None
    yield clone
    clone.worker_wire.close()
    smbclient.reset_connection_cache(fail_on_error=False, connection_cache=cache)


def written(fs: SMBNAS, path: str, data: bytes) -> Any:
    new = fs.create_new(path)
    for at in range(0, len(data), MIB):
        new.write(data[at: at + MIB])
    return new


@pytest.mark.parametrize("size", [1, 65536, MIB, MIB + 1, 9 * MIB + 7])
@pytest.mark.parametrize("chunk", [64 << 10, MIB])
def test_the_hash_is_that_of_the_bytes_on_the_nas(worker: SMBNAS, nas_resource: NASResource,
                                                  size: int, chunk: int) -> None:
    fs = worker
    assert fs.worker_wire is not None
    fs.worker_wire._chunk = chunk  # many reads in flight (144 of 64 KiB for 9 MiB)
    data = random.Random(size).randbytes(size)
    path = f"wire-hash/{chunk}/{size}.bin"
    fs.makedirs("wire-hash/" + str(chunk))
    new = written(fs, f"{path}.partial", data)
    assert isinstance(new, WireNewFile)  # the lean connection, not smbprotocol
    got = new.hash_on_server(lambda n: None)
    assert got == (size, hashlib.sha256(data).hexdigest())
    new.rename_and_close(path)
    with fs.open_read(path) as fh:  # what another session reads under the final name
        assert hashlib.sha256(fh.read()).hexdigest() == got[1]


@pytest.mark.fault("the NAS holds bytes past the end the writer counted -> the read-back "
                   "counts them, so the size no longer matches", kind="state edited")
def test_bytes_past_the_writers_end_are_counted(worker: SMBNAS) -> None:
    fs = worker
    data = random.Random(3).randbytes(3 * MIB)
    new = written(fs, "wire-hash-extra.partial", data + b"\x00garbage")
    assert isinstance(new, WireNewFile)
    new._written -= 8  # fault injection: what a copy longer than its object looks like
    try:
        size, digest = new.hash_on_server(lambda n: None)
        assert size > len(data) and digest == hashlib.sha256(data).hexdigest()
    finally:
        new.discard()
    assert fs.stat("wire-hash-extra.partial") is None  # removed through its handle


def _then_a_new_file_works(fs: SMBNAS, name: str) -> None:
    data = random.Random(name).randbytes(MIB + 3)
    again = written(fs, name, data)
    assert again.hash_on_server(lambda n: None) == (len(data), hashlib.sha256(data).hexdigest())
    again.rename_and_close(name + ".done")


@pytest.mark.fault("an answer to a read-back arrives with a damaged signature -> refused, "
                   "nothing hashed from it", kind="patched exception")
def test_a_read_answer_with_a_bad_signature_is_refused(worker: SMBNAS,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fs = worker
    new = written(fs, "wire-hash-tampered.partial", random.Random(4).randbytes(2 * MIB))
    from hybrid_pipelines.resources import smb_wire

    real = smb_wire.WireConnection.receive_frame

    def tampered(self: Any) -> bytearray:
        # Fault injection: Samba never sends a bad signature on demand, so one byte of each
        # big answer (a read's data) is flipped on its way in.
        frame = real(self)
        if len(frame) > 4096:
            frame[-1] ^= 0x01
        return frame

    monkeypatch.setattr(smb_wire.WireConnection, "receive_frame", tampered)
    with pytest.raises(WireError, match="signature"):
        new.hash_on_server(lambda n: None)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="closed"):
        new.rename_and_close("wire-hash-tampered.bin")  # its handle went with the connection
    assert fs.stat("wire-hash-tampered.bin") is None
    _then_a_new_file_works(fs, "wire-hash-after-tampered")


def test_a_read_back_stopped_midway_leaves_the_next_one_working(worker: SMBNAS) -> None:
    """The run's progress callback raises (a lost lease, a stopping run) with reads still
    in flight: the answers still due are taken, so the handle still removes its file, and
    the next file works on the same connection."""
    fs = worker
    new = written(fs, "wire-hash-stopped.partial", random.Random(5).randbytes(6 * MIB))

    class Stop(Exception):
        pass

    def stop_after_two(n: int, seen: list[int] = []) -> None:  # noqa: B006 - per test
        seen.append(n)
        if len(seen) == 2:
            raise Stop

    assert fs.worker_wire is not None
    conn = fs.worker_wire.connection()
    with pytest.raises(Stop):
        new.hash_on_server(stop_after_two)
    new.discard()
    assert fs.stat("wire-hash-stopped.partial") is None  # removed, not left to the reconcile
    assert fs.worker_wire.connection() is conn
    _then_a_new_file_works(fs, "wire-hash-after-stop")
