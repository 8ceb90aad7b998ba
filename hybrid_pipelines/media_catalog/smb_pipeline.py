"""Directory listings in flight: the scan says which directories it will list next, in walk
order, and several are on the wire while it works through the current one.

Each listing is one related compound on a WireConnection (create + query + query + close;
the second query must answer "no more files", or the directory is listed again: with the
full buffer when a small one was asked for on the caller's word of what it holds, else
through smbprotocol, which pages). The create's answer carries the directory's own
last-write time, read before its entries (list_dir_and_mtime). Requests leave in the
walk's order (a heap on the walk's sort key), at most `window` compounds in flight per
connection and at most `ahead` listings held for later, so memory stays flat however large
the share: when a directory nearer in walk order is announced while the budget (`ahead`
listings, `max_entries` entries) is full, the farthest finished listing is dropped and asked
for again when its turn comes. A listing the walk asks for that was not announced is sent at
once.

Entries come out exactly as the smbprotocol listing gives them (see smb_listing.py). Any
status other than success, "no more files" or "not found" hands the directory to the
fallback listing, which raises what smbprotocol raises. A broken connection raises; the
caller's retry calls reset() and the next listing reconnects, with every announced
directory still announced.
"""

from __future__ import annotations

import heapq
import selectors
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hybrid_pipelines.media_catalog.rules.scan_diff import Entry, path_key
from hybrid_pipelines.media_catalog.smb_listing import (
    filetime_to_epoch,
    parse_directory_information,
)
from hybrid_pipelines.resources.smb_requests import create_body as wire_create_body
from hybrid_pipelines.resources.smb_wire import (
    CLOSE,
    CREATE,
    QUERY_DIRECTORY,
    STATUS_SUCCESS,
    WireConnection,
    WireUnsupported,
)
from hybrid_pipelines.shared.nas_paths import smb_safe_relpath

STATUS_NO_MORE_FILES = 0x80000006
_MISSING = {0xC0000034, 0xC000003A}  # object name / path not found
_RELATED_FID = b"\xff" * 16
_QUERY = struct.Struct("<HBBI16sHHI")
_CLOSE = struct.pack("<HHI16s", 24, 0, 0, _RELATED_FID)
_CREATE_WRITE_TIME = struct.Struct("<24xQ")  # a create answer's LastWriteTime
# A listing the catalog says is small asks for 16 KiB, not the full buffer: Samba answers it
# ~8% sooner (0.40 against 0.44 ms for 21 entries, measured alternating on one connection).
_SMALL_BUFFER = 16 * 1024
_ENTRY_BYTES = 72  # FILE_DIRECTORY_INFORMATION: 64 bytes, the UTF-16 name, 8-byte aligned
_STAR = "*".encode("utf-16-le")
# FILE_LIST_DIRECTORY | FILE_READ_ATTRIBUTES | SYNCHRONIZE, share read/write/delete,
# FILE_OPEN, FILE_DIRECTORY_FILE: what smbclient.scandir asks for.
_ACCESS, _SHARE, _OPEN, _DIR_FILE, _ATTR_DIR = 0x100081, 0x7, 0x1, 0x1, 0x10


def create_body(server_path: str) -> bytes:
    return wire_create_body(server_path, _ACCESS, _ATTR_DIR, _SHARE, _OPEN, _DIR_FILE)


def query_body(restart: bool, buffer_len: int) -> bytes:
    return _QUERY.pack(33, 1, 1 if restart else 0, 0, _RELATED_FID, 64 + _QUERY.size,
                       len(_STAR), buffer_len) + _STAR


class _Listing:
    __slots__ = ("path", "key", "conn", "mids", "answers", "entries", "mtime", "missing",
                 "fallback", "dropped", "buffer_len")

    def __init__(self, path: str, key: tuple[str, ...]):
        self.path, self.key = path, key
        self.conn: WireConnection | None = None
        self.mids: list[int] = []
        self.answers: dict[int, tuple[int, bytes]] = {}
        self.entries: list[Entry] | None = None
        self.mtime: float | None = None  # the directory's own, from the create answer
        self.missing = self.fallback = self.dropped = False
        self.buffer_len = 0

    @property
    def done(self) -> bool:
        return self.entries is not None or self.missing or self.fallback


Connect = Callable[[], WireConnection]


class PipelinedLister:
    def __init__(self, connect: Connect, fallback: Callable[[str], list[Entry]], *,
                 root_dir: str = "", connections: int = 1, window: int = 8, ahead: int = 64,
                 max_entries: int = 100_000, buffer_len: int = 256 * 1024):
        self._connect, self._fallback = connect, fallback
        self.root_dir = smb_safe_relpath(root_dir)
        self.n_connections, self.window, self.ahead = connections, max(1, window), max(1, ahead)
        self.max_entries = max_entries
        self._held_entries = 0  # entries of finished listings not yet taken
        self.buffer_len = buffer_len
        self._conns: list[WireConnection] = []
        self._sel: selectors.BaseSelector | None = None
        self._queue: list[tuple[tuple[str, ...], str]] = []  # announced, not sent
        self._queued: set[str] = set()
        self._by_path: dict[str, _Listing] = {}  # sent: in flight or finished
        self._by_mid: dict[tuple[int, int], tuple[_Listing, int]] = {}
        self._in_flight: dict[int, int] = {}  # id(conn) -> compounds in flight
        self._position: tuple[str, ...] = ()  # the walk's last listing
        self._expected: dict[str, tuple[int, int]] = {}  # path -> (entries, name characters)
        self._resends: list[_Listing] = []  # outgrew the small buffer: again with the full one
        self.unsupported: str | None = None
        self.fallbacks = self.dropped = self.sent = self.resent = 0

    # ------------------------------------------------------------------ public

    def announce(self, paths: Iterable[str],
                 expected: Mapping[str, tuple[int, int]] | None = None) -> None:
        """Directories the walk will list later (any order); `expected`: what the caller
        knows some of them hold (entries, characters of their names), to size their
        listing's buffer."""
        if self.unsupported is not None:
            return
        if expected:
            self._expected.update(expected)
        for p in paths:
            if p not in self._queued and p not in self._by_path:
                self._queued.add(p)
                heapq.heappush(self._queue, (path_key(p), p))

    def list_dir(self, path: str) -> list[Entry]:
        return self.list_dir_and_mtime(path)[0]

    def list_dir_and_mtime(self, path: str) -> tuple[list[Entry], float | None]:
        """The entries, and the directory's own last-write time as its open answered it,
        before the listing (None when it was listed another way)."""
        base = smb_safe_relpath(path)
        self._position = path_key(base)
        if self.unsupported is None and not self._conns:
            self._open()
        if self.unsupported is not None:
            return self._fallback(base), None
        listing = self._by_path.get(base)
        if listing is None:
            self._queued.discard(base)
            listing = self._send(base, path_key(base), self._least_busy())
        self._pump()
        while not listing.done:
            self._receive()
            self._pump()
        self._forget(listing)
        if listing.missing:
            raise FileNotFoundError(2, "no such directory on the NAS", base)
        if listing.fallback:
            self.fallbacks += 1
            return self._fallback(base), None
        assert listing.entries is not None
        return listing.entries, listing.mtime

    def reset(self) -> None:
        """After a broken connection: close everything, keep what was announced."""
        for listing in self._by_path.values():
            if listing.path not in self._queued:
                self._queued.add(listing.path)
                heapq.heappush(self._queue, (listing.key, listing.path))
        self._by_path.clear()
        self._resends.clear()
        self._held_entries = 0
        self._by_mid.clear()
        self._in_flight.clear()
        self.close()

    def close(self) -> None:
        for conn in self._conns:
            conn.close()
        self._conns = []
        if self._sel is not None:
            self._sel.close()
            self._sel = None

    def describe(self) -> dict[str, Any]:
        first = self._conns[0].describe() if self._conns else {}
        return {**first, "connections": len(self._conns), "sent": self.sent,
                "resent": self.resent, "fallbacks": self.fallbacks, "dropped": self.dropped,
                "unsupported": self.unsupported}

    # ------------------------------------------------------------------ connections

    def _open(self) -> None:
        conns: list[WireConnection] = []
        try:
            for _ in range(self.n_connections):
                conns.append(self._connect())
        except WireUnsupported as exc:
            for c in conns:
                c.close()
            self.unsupported = str(exc)
            self._queue.clear()
            self._queued.clear()
            return
        except BaseException:
            for c in conns:
                c.close()
            raise
        self._conns = conns
        self._sel = selectors.DefaultSelector()
        for c in conns:
            self._sel.register(c.fileno(), selectors.EVENT_READ, c)
            self._in_flight[id(c)] = 0

    def _least_busy(self) -> WireConnection:
        return min(self._conns, key=lambda c: self._in_flight[id(c)])

    # ------------------------------------------------------------------ sending

    def _charge(self, conn: WireConnection) -> int:
        q = conn.credit_charge(self.buffer_len)
        return 2 + 2 * q

    def _buffer_for(self, base: str) -> int:
        known = self._expected.get(base)
        if known is None:
            return self.buffer_len
        entries, name_chars = known
        need = (entries + 2) * _ENTRY_BYTES + 2 * name_chars  # with "." and ".."
        return _SMALL_BUFFER if 2 * need <= _SMALL_BUFFER < self.buffer_len else self.buffer_len

    def _send(self, base: str, key: tuple[str, ...], conn: WireConnection,
              listing: _Listing | None = None) -> _Listing:
        """A listing's compound; `listing` given: sent again, with the full buffer."""
        buffer_len = self._buffer_for(base) if listing is None else self.buffer_len
        listing = listing or _Listing(base, key)
        server_path = "/".join(p for p in (self.root_dir, base) if p)
        while conn.credits_free() < self._charge(conn):
            self._receive()  # a compound in flight returns the credits it holds
        q = conn.credit_charge(buffer_len)
        mids = conn.send_compound([
            (CREATE, create_body(server_path), 1),
            (QUERY_DIRECTORY, query_body(True, buffer_len), q),
            (QUERY_DIRECTORY, query_body(False, buffer_len), q),
            (CLOSE, _CLOSE, 1),
        ], credits=16 if conn.credits_free() < 512 else 0)
        listing.conn, listing.mids, listing.buffer_len = conn, mids, buffer_len
        for i, mid in enumerate(mids):
            self._by_mid[(id(conn), mid)] = (listing, i)
        self._by_path[base] = listing
        self._in_flight[id(conn)] += 1
        self.sent += 1
        return listing

    def _held(self) -> int:
        return len(self._by_path)

    def _forget(self, listing: _Listing) -> None:
        del self._by_path[listing.path]
        self._expected.pop(listing.path, None)
        if listing.entries is not None:
            self._held_entries -= len(listing.entries)

    def _pump(self) -> None:
        """Send announced listings, nearest in walk order first, within the budgets."""
        while self._resends:
            if (conn := self._ready_connection()) is None:
                return
            listing = self._resends.pop(0)
            self._send(listing.path, listing.key, conn, listing)
            self.resent += 1
        while self._queue:
            key, path = self._queue[0]
            if path not in self._queued:  # asked for directly since
                heapq.heappop(self._queue)
                continue
            if (conn := self._ready_connection()) is None:
                return
            full = self._held() >= self.ahead or self._held_entries >= self.max_entries
            if full and not self._drop_farthest(key):
                return
            heapq.heappop(self._queue)
            self._queued.discard(path)
            self._send(path, key, conn)

    def _ready_connection(self) -> WireConnection | None:
        """The least busy connection if it may take one more listing now (its window and
        its credits), else None."""
        conn = self._least_busy()
        if self._in_flight[id(conn)] >= self.window or conn.credits_free() < self._charge(conn):
            return None
        return conn

    def _drop_farthest(self, key: tuple[str, ...]) -> bool:
        """Free a slot for `key` by dropping a finished listing farther in walk order (or one
        the walk has passed without asking for it: it never will)."""
        done = [lst for lst in self._by_path.values() if lst.done]
        passed = [lst for lst in done if lst.key < self._position]
        if passed:
            for lst in passed:
                self._forget(lst)
            return True
        later = [lst for lst in done if lst.key > key]
        if not later:
            return False
        far = max(later, key=lambda lst: lst.key)
        self._forget(far)
        self._queued.add(far.path)
        heapq.heappush(self._queue, (far.key, far.path))
        self.dropped += 1
        return True

    # ------------------------------------------------------------------ receiving

    def _receive(self) -> None:
        """Take in at least one frame from any connection."""
        assert self._sel is not None
        ready = [c for c in self._conns if c.pending_frame()]
        if not ready:
            timeout = max(c.timeout_s for c in self._conns)
            events = self._sel.select(timeout)
            if not events:
                raise TimeoutError(f"the SMB server sent nothing for {timeout:g} s while "
                                   f"{sum(self._in_flight.values())} listings were pending")
            ready = [key.data for key, _ in events]
        for conn in ready:
            for resp in conn.read():
                found = self._by_mid.pop((id(conn), resp.mid), None)
                if found is not None:
                    self._answer(found[0], found[1], resp.status, resp.message)

    def _answer(self, listing: _Listing, index: int, status: int, message: bytes) -> None:
        listing.answers[index] = (status, message)
        if len(listing.answers) < 4:
            return
        assert listing.conn is not None
        self._in_flight[id(listing.conn)] -= 1
        self._finish(listing)

    def _finish(self, listing: _Listing) -> None:
        create, first, second = (listing.answers[i] for i in range(3))
        if create[0] in _MISSING:
            listing.missing = True
            return
        if second[0] == STATUS_SUCCESS and listing.buffer_len < self.buffer_len:
            listing.answers.clear()  # it outgrew what the catalog knew: the full buffer
            self._resends.append(listing)
            return
        if create[0] != STATUS_SUCCESS or first[0] not in (STATUS_SUCCESS, STATUS_NO_MORE_FILES) \
                or second[0] != STATUS_NO_MORE_FILES:
            # Larger than two answers hold, or anything unexpected: smbprotocol decides.
            listing.fallback = True
            return
        entries: list[Entry] = []
        if first[0] == STATUS_SUCCESS:
            msg = first[1]
            offset, length = struct.unpack_from("<HI", msg, 66)
            entries = parse_directory_information(msg[offset: offset + length], listing.path)
        listing.entries = entries
        listing.mtime = filetime_to_epoch(_CREATE_WRITE_TIME.unpack_from(create[1], 64)[0])
        self._held_entries += len(entries)
        listing.answers.clear()
