"""A sync worker's lean SMB 3 connection (smb_wire.py) and what goes over it: the new files
of smb_wire_file.py, written in one compound when small, and the folders they go into."""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable

from hybrid_pipelines.resources import smb_wire_file as file_
from hybrid_pipelines.resources.nas_new_file import put_in_turn
from hybrid_pipelines.resources.smb_requests import create_body
from hybrid_pipelines.resources.smb_wire import (
    CLOSE,
    CREATE,
    STATUS_SUCCESS,
    WireConnection,
    WireUnsupported,
)
from hybrid_pipelines.resources.smb_wire_hash import READ, read_body
from hybrid_pipelines.shared.nas_paths import safe_relpath

# FILE_READ_DATA | FILE_WRITE_DATA | FILE_READ_ATTRIBUTES | DELETE (smbprotocol's mode "x"
# with nas_fs.SMBNAS._new_raw's access); shared with readers only; FILE_CREATE;
# FILE_NON_DIRECTORY_FILE.
_ACCESS, _SHARE, _CREATE_NEW, _NON_DIRECTORY = 0x10083, 0x1, 0x2, 0x40
_PATH_NOT_FOUND, _NAME_COLLISION = 0xC000003A, 0xC0000035
# smbclient.mkdir's FILE_CREATE (write data, attributes and EAs; shared with nobody), and a
# FILE_OPEN to check a taken name (read attributes, shared with all); FILE_DIRECTORY_FILE.
_MKDIR_ACCESS, _STAT_ACCESS, _OPEN, _DIRECTORY_FILE, _ATTR_DIRECTORY = 0x112, 0x80, 1, 1, 0x10


class WorkerWire:
    """A sync worker's lean connection to the share, opened on first use. An error on it
    drops it (close), and the next file opens a new one.

    Under a client GUID of its own (WireConnection's), not the run's: no other connection
    opens its files, and Samba hands a new connection under a GUID it already serves to that
    GUID's smbd process (SMB 3 multichannel), where the session setup of a lean connection
    went unanswered until the connection timeout in 2 of 16 runs of 300 x 64 KiB (0 of 16
    under its own GUID)."""

    def __init__(self, host: str, port: int, share: str, username: str, password: str,
                 timeout_s: float, chunk: int = 1 << 20):
        self._args = (host, port, share, username, password, timeout_s)
        self._chunk = chunk
        self._conn: WireConnection | None = None
        self._unsupported = False

    @property
    def chunk(self) -> int:
        return self._chunk

    def connection(self) -> WireConnection | None:
        """This thread's lean connection, opened on first use; None where the server needs
        what the lean client does not do."""
        if self._unsupported:
            return None
        if self._conn is None:
            conn = WireConnection(*self._args)
            try:
                conn.connect()
            except WireUnsupported:
                self._unsupported = True
                return None
            self._conn = conn
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def create_new(lean: WorkerWire, path: str, share_name: Callable[[str], str],
               follow: bool = False) -> file_.WireNewFile | None:
    """`path` created exclusively on the worker's lean connection (read back while written
    with `follow`); None where the server needs what the lean client does not do (the
    caller then uses smbprotocol)."""
    name, path = share_name(path), safe_relpath(path)  # refused names raise first
    if (conn := lean.connection()) is None:
        return None
    try:
        opened = conn.exchange_signed(CREATE, _create_new_body(name))
    except BaseException:
        lean.close()
        raise
    if opened.status != STATUS_SUCCESS:
        raise file_.nas_error(opened.status, "creating the file", path)
    return file_.WireNewFile(conn, bytes(opened.message[128:144]), path, share_name,
                             lean.close, lean.chunk, follow)


def put_new(lean: WorkerWire, path: str, share_name: Callable[[str], str], data: bytes
            ) -> tuple[file_.WireNewFile, bytes] | None:
    """Create, write `data` and read it back as one related compound (one round trip); None
    when the lean connection cannot be used or `data` does not fit one request each way."""
    name, path = share_name(path), safe_relpath(path)  # refused names raise first
    if (conn := lean.connection()) is None:
        return None
    n = len(data)
    charges = (1, conn.credit_charge(n), conn.credit_charge(n + 1))
    if not data or n > conn.max_write or n + 1 > conn.max_read \
            or conn.credits_free() < sum(charges):
        if (new := create_new(lean, path, share_name)) is None:
            return None
        return put_in_turn(new, data)
    try:
        mids = conn.send_compound([
            (CREATE, _create_new_body(name), charges[0]),
            (file_.WRITE, file_.write_body(0, data, file_.RELATED_FID), charges[1]),
            (READ, read_body(0, n + 1, file_.RELATED_FID), charges[2])], credits=sum(charges))
        got = file_.all_answers(conn, dict.fromkeys(mids, 0))
        (created, opened), (wrote, write_answer), (read, read_answer) = (got[m] for m in mids)
    except BaseException:
        lean.close()
        raise
    if created != STATUS_SUCCESS:
        raise file_.nas_error(created, "creating the file", path)
    new = file_.WireNewFile(conn, bytes(opened[128:144]), path, share_name, lean.close,
                            lean.chunk, written=n)
    try:
        if wrote != STATUS_SUCCESS:
            raise file_.nas_error(wrote, f"writing {n} bytes", path)
        if (took := struct.unpack_from("<I", write_answer, 64 + 4)[0]) != n:
            raise OSError(errno.EIO, f"the NAS took {took} of {n} bytes in one write", path)
        if read != STATUS_SUCCESS:
            raise file_.nas_error(read, f"reading {n} bytes back", path)
        data_at, _reserved, got = struct.unpack_from("<BBI", read_answer, 64 + 2)
        return new, bytes(read_answer[data_at: data_at + got])
    except BaseException:
        new.discard()
        raise


def _create_new_body(name: str) -> bytes:
    return create_body(name, _ACCESS, 0, _SHARE, _CREATE_NEW, _NON_DIRECTORY)


def makedirs(lean: WorkerWire, name: str, path: str) -> bool:
    """The folder `name` (share-relative, backslashes) and the folders above it made where
    missing, on the worker's lean connection; False where it cannot be used.

    Asked as smbclient.mkdir asks: made, and a name taken checked to be a folder. Samba 4.17
    can panic ("Could not unlock share mode") and drop the connection when two connections
    make the same new folder at once (1 to 6 of 30 races of two lean connections here, 0 of
    30 through smbprotocol): the sync makes a run's folders one worker at a time, and
    SMBNAS.makedirs falls back to smbprotocol when the connection is dropped."""
    if (conn := lean.connection()) is None:
        return False
    status = _folder(lean, conn, name, _CREATE_NEW)
    if status == _PATH_NOT_FOUND and "\\" in name:  # a folder above is missing too
        makedirs(lean, name.rsplit("\\", 1)[0], path)
        status = _folder(lean, conn, name, _CREATE_NEW)
    if status == _NAME_COLLISION:  # there already: a folder?
        status = _folder(lean, conn, name, _OPEN)
    if status != STATUS_SUCCESS:
        raise file_.nas_error(status, f"making the folder {name!r}", path)
    return True


def _folder(lean: WorkerWire, conn: WireConnection, name: str, disposition: int) -> int:
    """The status of creating (or opening) the folder `name`, closed again at once."""
    access, share = (_MKDIR_ACCESS, 0) if disposition == _CREATE_NEW else (_STAT_ACCESS, 7)
    try:
        mids = conn.send_compound([
            (CREATE, create_body(name, access, _ATTR_DIRECTORY, share, disposition,
                                 _DIRECTORY_FILE), 1),
            (CLOSE, file_.close_body(file_.RELATED_FID), 1)])
        return file_.all_answers(conn, dict.fromkeys(mids, 0))[mids[0]][0]
    except BaseException:
        lean.close()
        raise
