"""The sync's temporary files (resources/nas_new_file.py): created without ever taking an
existing name, written and read back on their own handle, renamed into place without ever
replacing a file, against the real Samba share and a local folder standing in for a mount."""

from __future__ import annotations

import errno
import secrets
import uuid
from typing import Any

import pytest

from hybrid_pipelines.resources import NASResource

from .conftest import nas_bytes


@pytest.fixture(params=["smb", "smb-lean", "local"])
def fs(request: pytest.FixtureRequest) -> Any:
    """smb: smbprotocol's handle; smb-lean: a sync worker's view, whose new files go over its
    lean connection (resources/smb_wire_file.py); local: a folder standing in for a mount."""
    nas: NASResource = request.getfixturevalue(
        "local_nas_resource" if request.param == "local" else "nas_resource")
    fs = nas.fs()
    cache: Any = None
    if request.param == "smb-lean":
        fs, cache = fs.with_own_connection(uuid.uuid4())
    fs.makedirs(folder := f"new-file-{secrets.token_hex(4)}")
    fs.folder = folder
    yield fs
    fs.remove(folder)
    if cache is not None:
        import smbclient

        fs.worker_wire.close()
        smbclient.reset_connection_cache(fail_on_error=False, connection_cache=cache)


@pytest.mark.parametrize("size", [1, 65536, 1 << 20, 9 << 20])
def test_put_new_reads_back_what_the_nas_holds_and_renames_into_place(fs: Any,
                                                                       size: int) -> None:
    # 9 MiB: over Samba's 8 MiB per request, so written and read back request by request.
    data = secrets.token_bytes(size)
    tmp, dst = f"{fs.folder}/.clip.partial-x", f"{fs.folder}/clip.bin"

    new, back = fs.put_new(tmp, data)
    assert back == data
    new.rename_and_close(dst)

    assert nas_bytes(fs, dst) == data and fs.stat(tmp) is None


def test_an_empty_file_is_put_and_read_back(fs: Any) -> None:
    new, back = fs.put_new(f"{fs.folder}/.empty.partial-x", b"")
    assert back == b""
    new.rename_and_close(f"{fs.folder}/empty.bin")
    assert nas_bytes(fs, f"{fs.folder}/empty.bin") == b""


def test_a_streamed_file_is_read_back_whole_on_its_own_handle(fs: Any) -> None:
    parts = [secrets.token_bytes(70_000) for _ in range(5)]
    with fs.create_new(f"{fs.folder}/.big.partial-x") as new:
        for part in parts:
            assert new.write(part) == len(part)
        reader = new.reader()
        got = b"".join(iter(lambda: reader.read(100_000), b""))
    assert got == b"".join(parts)


def test_a_taken_name_is_never_created_over(fs: Any) -> None:
    taken = f"{fs.folder}/taken.bin"
    with fs.open_write(taken) as out:
        out.write(b"an editor's file")

    with pytest.raises(FileExistsError):
        fs.put_new(taken, b"ours")
    with pytest.raises(FileExistsError):
        fs.create_new(taken)
    assert nas_bytes(fs, taken) == b"an editor's file"


def test_the_rename_never_replaces_and_still_closes_the_file(fs: Any) -> None:
    taken, tmp = f"{fs.folder}/clip.bin", f"{fs.folder}/.clip.partial-x"
    with fs.open_write(taken) as out:
        out.write(b"an editor's file")
    new, _ = fs.put_new(tmp, b"our verified copy")

    with pytest.raises(FileExistsError):
        new.rename_and_close(taken)

    assert nas_bytes(fs, taken) == b"an editor's file"
    assert nas_bytes(fs, tmp) == b"our verified copy"
    fs.remove(tmp)  # closed: over SMB an open handle would refuse the delete
    assert fs.stat(tmp) is None


@pytest.mark.fault("the NAS refuses the write of a file it has just created -> the error is "
                   "raised and the file is removed, nothing left under its name",
                   kind="patched exception")
def test_a_failed_write_leaves_no_file_behind(fs: Any, monkeypatch) -> None:
    tmp = f"{fs.folder}/.clip.partial-x"
    if getattr(fs, "worker_wire", None) is not None:
        from hybrid_pipelines.resources import smb_wire_file

        real_body = smb_wire_file.write_body

        def past_any_file_size(offset: int, data: Any, fid: bytes) -> Any:
            # Fault injection, as below: Samba refuses a write past any file size.
            return real_body((1 << 63) - 1, data, fid)

        monkeypatch.setattr(smb_wire_file, "write_body", past_any_file_size)
    elif fs.description.startswith("smb://"):
        from smbprotocol.open import Open

        real_write = Open.write

        def past_any_file_size(self: Any, data: bytes, offset: int = 0, **kw: Any) -> Any:
            # Fault injection: the request is real and Samba itself refuses it (a write at
            # an offset past any file size), after the create in the same compound succeeded.
            return real_write(self, data, (1 << 63) - 1, **kw)

        monkeypatch.setattr(Open, "write", past_any_file_size)
    else:
        from hybrid_pipelines.resources.nas_new_file import LocalNewFile

        def disk_full(self: Any, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device (injected)")

        monkeypatch.setattr(LocalNewFile, "write", disk_full)

    with pytest.raises(OSError):
        fs.put_new(tmp, b"x" * 70_000)
    new = fs.create_new(tmp + "-streamed")  # written request by request instead
    with pytest.raises(Exception):  # noqa: B017 - smbprotocol's refusal is not an OSError
        for _ in range(4):  # several writes in flight when the first answer is a refusal
            new.write(b"y" * (3 << 20))
        new.hash_on_server(lambda n: None) or new.reader().read()
    new.discard()

    monkeypatch.undo()
    assert fs.stat(tmp) is None
    assert [e.path for e in fs.list_dir(fs.folder)] == []
