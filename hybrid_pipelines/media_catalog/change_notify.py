"""SMB2 CHANGE_NOTIFY on the catalogued root, held open per process (the code server), so
the pending sensor learns within a tick which directories changed, without polling the NAS.

One connection, one directory handle on the root, one outstanding CHANGE_NOTIFY request
with WATCH_TREE: while nothing changes nothing crosses the wire (the request just waits on
the server). Between two requests the server buffers what changed on the open handle
(Samba keeps the handle's notify buffer once a request was made), so nothing is lost
between a response and the next request. A buffer overflow (STATUS_NOTIFY_ENUM_DIR), a
dropped connection or any error marks the watcher `lost`: the caller then learns nothing
from it and the 60 s poll (change_detection, the source of truth) covers everything. The
watcher reconnects on the next `drain` after a pause, never in a loop.

Paths come back relative to the catalogued root, '/'-separated."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from hybrid_pipelines.media_catalog.rules.notify_events import parent_dirs

RETRY_AFTER_S = 30.0  # a lost watcher is rebuilt on a drain at most this often
# smbprotocol waits for the session setup and tree connect answers without a timeout: a setup
# not armed after this many connect timeouts is given up (its connection closed) by a drain.
SETUP_LIMIT_TIMEOUTS = 3
CONSUMED_WITHIN_S = 30.0  # drained less recently: nobody acts on it (pending sensor stopped)
_FILTER = 0x1 | 0x2 | 0x8 | 0x10  # file name, dir name, size, last write


@dataclass
class Drained:
    """What changed since the last drain. `complete` is False when the watcher was lost
    (or started) in between: then the paths are only a hint and the poll must decide."""

    paths: set[str] = field(default_factory=set)
    complete: bool = True
    since: float = 0.0  # the watcher has been complete since then

    @property
    def dirs(self) -> set[str]:
        return parent_dirs(self.paths)


@dataclass(frozen=True)
class WatchTarget:
    host: str
    port: int
    share: str
    username: str
    root: str  # folder inside the share, '/'-separated ('' for the share)


class ShareWatcher:
    """A CHANGE_NOTIFY loop on one directory tree of one share, in a daemon thread."""

    def __init__(self, target: WatchTarget, password: str, timeout_s: float = 10.0):
        self.target, self._password, self.timeout_s = target, password, timeout_s
        self._lock = threading.Lock()
        self._paths: set[str] = set()
        self._complete = False  # until the first request is armed
        self._since = 0.0
        self._error: str | None = None
        self._started_at = 0.0
        self._given_up = 0.0  # the start time of the attempt whose hung setup was given up
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._stop = threading.Event()
        self._recent: dict[str, float] = {}
        self._drained_at = 0.0  # directory -> last notified (for the NAS sensor)
        self.requests = 0  # CHANGE_NOTIFY requests sent (for tests and logs)
        self.responses = 0  # ... and responses received

    # ------------------------------------------------------------------ caller side

    def drain(self) -> Drained:
        """Take what changed; (re)start the watcher when it is not running."""
        self._ensure_running()
        with self._lock:
            self._drained_at = time.time()
            out = Drained(self._paths, self._complete, self._since)
            self._paths = set()
            return out

    @property
    def error(self) -> str | None:
        return self._error

    def recent_dirs(self, within_s: float) -> set[str] | None:
        """Directories notified in the last `within_s` seconds (whoever drained them), or
        None when the watcher is not armed or nobody drains it (the pending sensor is
        stopped): then it vouches for nothing."""
        if not self.armed or time.time() - self._drained_at > CONSUMED_WITHIN_S:
            return None
        cut = time.time() - within_s
        with self._lock:
            self._recent = {d: t for d, t in self._recent.items() if t >= cut}
            return set(self._recent)

    @property
    def armed(self) -> bool:
        """Running with a request on the server (changes are returned or buffered)."""
        return self._complete and self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.disconnect(close=True)
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _ensure_running(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            limit = SETUP_LIMIT_TIMEOUTS * self.timeout_s
            if not self._complete and self._given_up != self._started_at and \
                    time.time() - self._started_at > limit:
                self._given_up = self._started_at  # once per attempt
                self._give_up_setup(limit)
            return
        if self._started_at and time.time() - self._started_at < RETRY_AFTER_S:
            return
        self._started_at = time.time()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hp-smb-notify", daemon=True)
        self._thread.start()

    def _give_up_setup(self, limit: float) -> None:
        """The setup hangs (a server that accepted the connection, then stopped answering):
        close its connection, which ends the wait; the next try is after RETRY_AFTER_S."""
        self._lose(f"watching {self._where()}: no answer to the SMB session setup in "
                   f"{limit:.0f} s; the poll covers it, retried in {RETRY_AFTER_S:.0f} s")
        conn = self._conn
        if conn is not None:
            try:
                conn.disconnect(close=True)
            except Exception:  # noqa: BLE001 - closing a connection that never answered
                pass

    # ------------------------------------------------------------------ watcher thread

    def _lose(self, why: str) -> None:
        with self._lock:
            self._complete = False
            self._error = why

    def _run(self) -> None:
        attempt = self._started_at
        try:
            handle = self._open()
        except Exception as exc:  # noqa: BLE001 - any failure: the poll covers it
            if self._given_up != attempt:  # else the closed connection is ours: said why
                self._lose(f"cannot watch {self._where()}: {type(exc).__name__}: {exc}")
            return
        from smbprotocol.change_notify import ChangeNotifyFlags, FileSystemWatcher

        first = True
        while not self._stop.is_set():
            watcher = FileSystemWatcher(handle)
            self.requests += 1
            try:
                watcher.start(_FILTER, flags=ChangeNotifyFlags.SMB2_WATCH_TREE,
                              output_buffer_length=65536)
            except Exception as exc:  # noqa: BLE001
                self._lose(f"CHANGE_NOTIFY on {self._where()} failed: {exc}")
                return
            if first:
                # Armed: from now on every change is either returned or buffered.
                with self._lock:
                    self._complete, self._since, self._error = True, time.time(), None
                first = False
            while not watcher.response_event.wait(1.0):
                if self._stop.is_set():
                    return
            try:
                actions = watcher.result
            except Exception as exc:  # noqa: BLE001 - a closed connection or server error
                self._lose(f"CHANGE_NOTIFY on {self._where()} ended: {exc}")
                return
            self.responses += 1
            if not actions:  # STATUS_NOTIFY_ENUM_DIR: the server's buffer overflowed
                self._lose(f"too many changes on {self._where()} for one notification")
                with self._lock:  # later changes are buffered again: complete from now
                    self._complete, self._since = True, time.time()
                continue
            names = [a["file_name"].get_value().replace("\\", "/") for a in actions]
            now = time.time()
            with self._lock:
                self._paths.update(n for n in names if n)
                self._recent.update((d, now) for d in parent_dirs(names))

    def _open(self) -> Any:
        from smbprotocol.connection import Connection
        from smbprotocol.open import (
            CreateDisposition,
            CreateOptions,
            DirectoryAccessMask,
            FileAttributes,
            ImpersonationLevel,
            Open,
            ShareAccess,
        )
        from smbprotocol.session import Session
        from smbprotocol.tree import TreeConnect

        t = self.target
        conn = Connection(uuid.uuid4(), t.host, t.port, require_signing=True)
        conn.connect(timeout=self.timeout_s)
        self._conn = conn
        session = Session(conn, t.username, self._password, require_encryption=False)
        session.connect()
        tree = TreeConnect(session, f"\\\\{t.host}\\{t.share}")
        tree.connect()
        handle = Open(tree, t.root.strip("/").replace("/", "\\"))
        handle.create(ImpersonationLevel.Impersonation,
                      DirectoryAccessMask.FILE_LIST_DIRECTORY | DirectoryAccessMask.SYNCHRONIZE,
                      FileAttributes.FILE_ATTRIBUTE_DIRECTORY,
                      ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE
                      | ShareAccess.FILE_SHARE_DELETE,
                      CreateDisposition.FILE_OPEN, CreateOptions.FILE_DIRECTORY_FILE)
        return handle

    def _where(self) -> str:
        t = self.target
        return f"smb://{t.host}:{t.port}/{t.share}/{t.root.strip('/')}"


_WATCHERS: dict[WatchTarget, ShareWatcher] = {}
_WATCHERS_LOCK = threading.Lock()


def watcher_for(target: WatchTarget, password: str, timeout_s: float = 10.0) -> ShareWatcher:
    """The process's watcher of `target` (one per code-server process), created on first
    use. A changed password makes a new one (the old is closed)."""
    with _WATCHERS_LOCK:
        w = _WATCHERS.get(target)
        if w is not None and w._password != password:
            w.close()
            w = None
        if w is None:
            w = _WATCHERS[target] = ShareWatcher(target, password, timeout_s)
        return w


def close_all() -> None:
    with _WATCHERS_LOCK:
        for w in _WATCHERS.values():
            w.close()
        _WATCHERS.clear()


def watcher_of(nas: Any, nas_root: str, enabled: bool = True) -> ShareWatcher | None:
    """The process's watcher of the catalogued root on `nas` (a NASResource), or None where
    notifications do not apply: a locally mounted share, or switched off
    (HP_CATALOG_CHANGE_NOTIFY=0, CatalogSettings.change_notify)."""
    if not enabled or getattr(nas, "protocol", "") != "smb":
        return None
    root = "/".join(p for p in (str(nas.root_dir).strip("/"), nas_root.strip("/")) if p)
    return watcher_for(WatchTarget(nas.host, int(nas.port), nas.share, nas.username, root),
                       nas.password, float(nas.timeout_s))
