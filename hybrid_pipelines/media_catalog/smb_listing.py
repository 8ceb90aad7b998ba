"""A lean SMB directory listing for scans.

smbclient.scandir costs four round trips per directory (create, query, query, close) and
decodes every entry through smbprotocol's generic structures, which makes a scan CPU-bound
in the client (backend-notes: 7.1 s for 50,000 files where Samba's own client takes 1.6 s).
Here one compound request carries create + query + query + close, and the entries are
decoded with one struct call each. A directory too large for two 64 KiB answers, a DFS
referral or anything unexpected falls back to the generic listing, so the result is always
the same as smbclient.scandir's (names, sizes, directory flags, and mtimes rounded to the
microsecond exactly as smbprotocol does)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from hybrid_pipelines.media_catalog.rules.scan_diff import Entry
from hybrid_pipelines.shared.nas_paths import safe_relpath, smb_safe_relpath

FILETIME_EPOCH = 116444736000000000
_DIR_INFO = struct.Struct("<IIqqqqqqII")  # FILE_DIRECTORY_INFORMATION, 64 bytes + name
_ATTR_DIRECTORY = 0x10
_QUERY_BUFFER = 65536  # one credit per request
STATUS_NO_MORE_FILES = 0x80000006


def filetime_to_epoch(value: int) -> float:
    """What smbprotocol's DateTimeField(...).timestamp() gives: microsecond precision."""
    return ((value - FILETIME_EPOCH) // 10) / 1_000_000


def parse_directory_information(buf: bytes, base: str) -> list[Entry]:
    out: list[Entry] = []
    off = 0
    size = len(buf)
    while off + _DIR_INFO.size <= size:
        (nxt, _index, _ctime, _atime, mtime, _change, eof, _alloc, attrs,
         name_len) = _DIR_INFO.unpack_from(buf, off)
        name = buf[off + 64: off + 64 + name_len].decode("utf-16-le")
        if name not in (".", ".."):
            is_dir = bool(attrs & _ATTR_DIRECTORY)
            out.append(Entry(f"{base}/{name}" if base else name, is_dir, 0 if is_dir else eof,
                             filetime_to_epoch(mtime)))
        if nxt == 0:
            break
        off += nxt
    return out


class LeanSMBLister:
    def __init__(self, host: str, port: int, share: str, username: str, password: str,
                 timeout_s: float, cache: dict[str, Any],
                 fallback: Callable[[str], list[Entry]], root_dir: str = ""):
        self.host, self.share = host, share
        self.root_dir = smb_safe_relpath(root_dir)  # every path lies beneath it (SMBNAS's)
        self._kw: dict[str, Any] = dict(username=username, password=password, port=port,
                                        connection_timeout=timeout_s, connection_cache=cache)
        self.fallback = fallback
        self.fallbacks = 0
        self._tree: Any = None

    def _share_tree(self) -> Any:
        """The share's tree connect on the resource's session, through smbprotocol's public
        API. register_session returns the cached session while it lives, a new one after a
        reconnect: a new session gets a new tree connect."""
        from smbclient import register_session
        from smbprotocol.tree import TreeConnect

        session = register_session(self.host, **self._kw)
        if self._tree is None or self._tree.session is not session:
            tree = TreeConnect(session, f"\\\\{self.host}\\{self.share}")
            tree.connect()
            self._tree = tree
        return self._tree

    def list_dir(self, path: str) -> list[Entry]:
        from smbprotocol.exceptions import (
            NoMoreFiles,
            NoSuchFile,
            ObjectNameNotFound,
            ObjectPathNotFound,
            PathNotCovered,
        )
        from smbprotocol.open import (
            CreateDisposition,
            CreateOptions,
            DirectoryAccessMask,
            FileAttributes,
            ImpersonationLevel,
            Open,
            QueryDirectoryFlags,
            ShareAccess,
            SMB2CloseRequest,
            SMB2QueryDirectoryRequest,
        )
        from smbprotocol.query_info import FileInformationClass

        base = safe_relpath(path)
        tree = self._share_tree()
        server_path = "/".join(p for p in (self.root_dir, smb_safe_relpath(base)) if p)
        fd = Open(tree, server_path.replace("/", "\\"))
        create, unpack_create = fd.create(
            ImpersonationLevel.Impersonation,
            DirectoryAccessMask.FILE_LIST_DIRECTORY | DirectoryAccessMask.FILE_READ_ATTRIBUTES
            | DirectoryAccessMask.SYNCHRONIZE,
            FileAttributes.FILE_ATTRIBUTE_DIRECTORY,
            ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE
            | ShareAccess.FILE_SHARE_DELETE,
            CreateDisposition.FILE_OPEN, CreateOptions.FILE_DIRECTORY_FILE, send=False)
        queries = []
        for flags in (QueryDirectoryFlags.SMB2_RESTART_SCANS, 0):
            q = SMB2QueryDirectoryRequest()
            q["file_information_class"] = FileInformationClass.FILE_DIRECTORY_INFORMATION
            q["flags"] = flags
            q["file_index"] = 0
            q["file_id"] = b"\xff" * 16  # related compound: the handle the create opens
            q["output_buffer_length"] = _QUERY_BUFFER
            q["buffer"] = "*".encode("utf-16-le")
            queries.append(q)
        close = SMB2CloseRequest()
        close["file_id"] = b"\xff" * 16
        conn = tree.session.connection
        sent = conn.send_compound([create, *queries, close], tree.session.session_id,
                                  tree.tree_connect_id, related=True)
        # Every response must be received (smbprotocol's transaction rule), whatever fails.
        error: BaseException | None = None
        try:
            unpack_create(sent[0])
        except (ObjectNameNotFound, ObjectPathNotFound) as exc:
            error = FileNotFoundError(2, "no such directory on the NAS", base)
            error.__cause__ = exc
        except PathNotCovered:
            error = _Fallback()
        except BaseException as exc:  # noqa: BLE001 - re-raised after the other receives
            error = exc
        buffers: list[bytes | None] = []
        for req in sent[1:3]:
            try:
                resp = conn.receive(req)
                data = resp["data"].get_value()
                offset, length = struct.unpack_from("<HI", data, 2)
                buffers.append(data[offset - 64: offset - 64 + length])
            except (NoMoreFiles, NoSuchFile):
                buffers.append(None)
            except BaseException as exc:  # noqa: BLE001 - see above
                error = error or exc
                buffers.append(None)
        try:
            conn.receive(sent[3])
        except BaseException as exc:  # noqa: BLE001 - see above
            error = error or exc
        if isinstance(error, _Fallback) or (error is None and buffers[1] is not None):
            # More entries than two answers hold (or DFS): the generic listing pages through.
            self.fallbacks += 1
            return self.fallback(base)
        if error is not None:
            raise error
        out: list[Entry] = []
        if buffers[0] is not None:
            out.extend(parse_directory_information(buffers[0], base))
        return out


class _Fallback(Exception):
    pass
