"""The sync's read-back over the lean SMB connection (resources/smb_wire_hash.py), against
the real Samba: it hashes exactly the bytes the NAS holds, whatever the size and however many
reads are in flight, under the writer's own open handle (the rename into place still works
after it); an extra byte past the writer's end, an answer whose signature was tampered with,
or a read-back given up midway are all refused or recovered from."""

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
from hybrid_pipelines.resources.smb_wire_hash import WireHasher

MIB = 1 << 20


@pytest.fixture()
def worker(nas_resource: NASResource) -> Iterator[SMBNAS]:
    """A sync worker's view of the share: its own session and a lean hasher, one GUID;
    both closed after the test, as a run closes them."""
    import smbclient

    fs = nas_resource.fs()
    assert isinstance(fs, SMBNAS)
    clone, cache = fs.with_own_connection(uuid.uuid4())
    assert clone.wire_hasher is not None
    yield clone
    clone.wire_hasher.close()
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
    data = random.Random(size).randbytes(size)
    path = f"wire-hash/{chunk}/{size}.bin"
    fs.makedirs("wire-hash/" + str(chunk))
    new = written(fs, f"{path}.partial", data)
    hasher = WireHasher(fs.host, fs.port, fs.share, nas_resource.username,
                        nas_resource.password, 30, uuid.uuid4().bytes, chunk=chunk)
    try:
        # Many reads in flight (144 of 64 KiB for 9 MiB): credits, order and the end check.
        got = fs.wire_hasher.sha256(fs._share_name(f"{path}.partial"))  # type: ignore[union-attr]
        assert got == (size, hashlib.sha256(data).hexdigest())
        new.rename_and_close(path)  # same GUID: Samba still accepts the writer's close
        assert hasher.sha256(fs._share_name(path)) == got
    finally:
        hasher.close()
        fs.wire_hasher.close()  # type: ignore[union-attr]
    assert fs.stat(path) is not None and fs.stat(path).size == size  # type: ignore[union-attr]


def test_bytes_past_the_writers_end_are_counted(worker: SMBNAS) -> None:
    fs = worker
    data = random.Random(3).randbytes(3 * MIB)
    new = written(fs, "wire-hash-extra.partial", data)
    new.write(b"\x00garbage")  # what a corrupt copy looks like: longer than the object
    try:
        size, digest = new.hash_on_server(lambda n: None)
        assert size == len(data) + 8 and digest != hashlib.sha256(data).hexdigest()
    finally:
        new.discard()
        fs.wire_hasher.close()  # type: ignore[union-attr]


@pytest.mark.fault("an answer to a read-back arrives with a damaged signature -> refused, "
                   "nothing hashed from it", kind="patched exception")
def test_a_read_answer_with_a_bad_signature_is_refused(worker: SMBNAS,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fs = worker
    new = written(fs, "wire-hash-tampered.partial", random.Random(4).randbytes(2 * MIB))
    hasher = fs.wire_hasher
    assert hasher is not None
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
    try:
        with pytest.raises(WireError, match="signature"):
            hasher.sha256(fs._share_name(new.path))
        monkeypatch.undo()
        assert hasher.sha256(fs._share_name(new.path))[0] == 2 * MIB  # a new connection
    finally:
        new.discard()
        hasher.close()


def test_a_read_back_stopped_midway_leaves_the_next_one_working(worker: SMBNAS) -> None:
    """The run's progress callback raises (a lost lease, a stopping run) with reads still
    in flight: the connection is dropped, and the next read-back opens a new one."""
    fs = worker
    data = random.Random(5).randbytes(6 * MIB)
    new = written(fs, "wire-hash-stopped.partial", data)
    hasher = fs.wire_hasher
    assert hasher is not None

    class Stop(Exception):
        pass

    def stop_after_two(n: int, seen: list[int] = []) -> None:  # noqa: B006 - per test
        seen.append(n)
        if len(seen) == 2:
            raise Stop

    try:
        with pytest.raises(Stop):
            hasher.sha256(fs._share_name(new.path), stop_after_two)
        assert hasher.sha256(fs._share_name(new.path)) == (len(data),
                                                           hashlib.sha256(data).hexdigest())
    finally:
        new.discard()
        hasher.close()
