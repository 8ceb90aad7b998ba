"""NAS calls with reconnect and backoff, and a counter of directory listings.

A dropped SMB connection is retried after 1, 2 and 4 s (configurable), reconnecting each
time (smbclient opens a new session when the pooled one is closed); after the last try the
run fails with a BackendError naming the NAS, the cause and the variables to check.

Inside `pipelined()` (the scan), SMB listings go through smb_pipeline: the walk announces
the directories it will list and several are in flight at once on lean connections of
their own, closed when the block ends."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from hybrid_pipelines.media_catalog.rules.scan_diff import Entry
from hybrid_pipelines.media_catalog.smb_listing import LeanSMBLister
from hybrid_pipelines.media_catalog.smb_pipeline import PipelinedLister
from hybrid_pipelines.resources import BackendError, NASResource
from hybrid_pipelines.resources.nas import ENV_VARS, explain_nas_error
from hybrid_pipelines.resources.nas_fs import SMBNAS
from hybrid_pipelines.resources.smb_wire import WireConnection

T = TypeVar("T")
DEFAULT_RETRY_DELAYS_S: tuple[float, ...] = (1.0, 2.0, 4.0)
_TRANSIENT_ERRNOS = {errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.EPIPE,
                     errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH}


def is_transient(exc: BaseException) -> bool:
    """Connection trouble worth a reconnect, as opposed to a definitive answer (missing
    path, wrong password) that no retry can change."""
    from smbprotocol.exceptions import LogonFailure, SMBConnectionClosed, SMBException, SMBOSError

    if isinstance(exc, LogonFailure):
        return False
    if isinstance(exc, SMBConnectionClosed | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, ValueError) and "Failed to connect" in str(exc):
        return True
    if isinstance(exc, SMBOSError):
        return False
    if isinstance(exc, OSError):
        return exc.errno in _TRANSIENT_ERRNOS
    # Generic smbprotocol failures mid-exchange (broken pipe while signing, lost responses).
    return type(exc) is SMBException


def is_missing(exc: BaseException) -> bool:
    from smbprotocol.exceptions import SMBOSError

    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return True
    return isinstance(exc, SMBOSError) and exc.errno in (errno.ENOENT, errno.ENOTDIR)


class EarlyConnection:
    """`connect()` started on a thread of its own at once; `take()` hands that connection
    over (or raises what connecting raised) the first time, and connects anew after."""

    def __init__(self, connect: Callable[[], WireConnection]):
        self._connect = connect
        self._result: WireConnection | BaseException | None = None
        self._thread: threading.Thread | None = threading.Thread(
            target=self._run, name="nas-early-connect", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._connect()
        except BaseException as exc:  # noqa: BLE001 - raised to whoever takes it
            self._result = exc

    def _claim(self) -> WireConnection | BaseException | None:
        thread, self._thread = self._thread, None
        if thread is None:
            return None
        thread.join()
        result, self._result = self._result, None
        return result

    def take(self) -> WireConnection:
        result = self._claim()
        if isinstance(result, BaseException):
            raise result
        return result if result is not None else self._connect()

    def discard(self) -> None:
        """Close the early connection if nobody took it."""
        result = self._claim()
        if result is not None and not isinstance(result, BaseException):
            result.close()


class NASAccess:
    """One NAS resource plus the retry policy and counters of a run."""

    def __init__(self, nas: NASResource, retry_delays_s: Sequence[float] = DEFAULT_RETRY_DELAYS_S,
                 log: Callable[[str], None] = lambda m: None,
                 sleep: Callable[[float], None] = time.sleep, lean_smb: bool = True):
        self.nas = nas
        self.delays = tuple(float(d) for d in retry_delays_s)
        self.log, self.sleep = log, sleep
        self.listings = 0
        self.reconnects = 0
        self._fs = nas.fs()
        self._lean: LeanSMBLister | None = None
        self._pipe: PipelinedLister | None = None
        if lean_smb and isinstance(self._fs, SMBNAS):
            self._lean = LeanSMBLister(
                nas.host, nas.port, nas.share, nas.username, nas.password, nas.timeout_s,
                nas.connection_cache(),
                fallback=self._generic_list, root_dir=self._fs.root_dir)

    def _generic_list(self, path: str) -> list[Entry]:
        return [Entry(e.path, e.is_dir, e.size, e.mtime) for e in self._fs.list_dir(path)]

    @property
    def lean_fallbacks(self) -> int:
        return self._lean.fallbacks if isinstance(self._lean, LeanSMBLister) else 0

    @property
    def address(self) -> str:
        return self.nas.address

    @contextmanager
    def pipelined(self, connections: int = 1, window: int = 8, ahead: int = 64
                  ) -> Iterator[None]:
        """List SMB directories through the pipeline inside this block (see announce): at
        most `window` listings in flight per connection, `ahead` listed before they are
        asked for."""
        lean = self._lean
        if lean is None or self._pipe is not None:
            yield
            return
        nas = self.nas

        def connect() -> WireConnection:
            conn = WireConnection(nas.host, nas.port, nas.share, nas.username, nas.password,
                                  nas.timeout_s)
            conn.connect()
            return conn

        # The first connection is set up while the caller reads its own state (a rescan
        # reads the catalog's directories first): its round trips cost nothing then.
        early = EarlyConnection(connect)
        pipe = PipelinedLister(early.take, lean.list_dir, root_dir=lean.root_dir,
                               connections=connections, window=window, ahead=ahead)
        self._pipe = pipe
        try:
            yield
        finally:
            self._pipe = None
            pipe.close()
            early.discard()
            if pipe.unsupported:
                self.log(f"NAS {self.address}: listed through smbprotocol, not the lean "
                         f"pipeline: {pipe.unsupported}")

    def announce(self, paths: Iterable[str],
                 expected: Mapping[str, tuple[int, int]] | None = None) -> None:
        """Directories the caller will list soon, in any order (a no-op outside pipelined);
        `expected`: (entries, characters of their names) the caller knows some of them hold."""
        if self._pipe is not None:
            self._pipe.announce(paths, expected)

    def pipeline_stats(self) -> dict[str, Any]:
        return self._pipe.describe() if self._pipe is not None else {}

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run `fn`, retrying connection errors after each configured delay."""
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - classified below
                if not is_transient(exc):
                    raise
                if attempt >= len(self.delays):
                    tries = len(self.delays) + 1
                    waits = ", ".join(f"{d:g}" for d in self.delays) or "none"
                    raise BackendError(
                        "NAS", self.address,
                        f"{explain_nas_error(exc)} while {what}; gave up after {tries} attempts "
                        f"(waited {waits} s between them). The scan checkpoint is kept: the "
                        "next run resumes where this one stopped", ENV_VARS) from exc
                delay = self.delays[attempt]
                attempt += 1
                self.reconnects += 1
                self.log(f"NAS {self.address}: {explain_nas_error(exc)} while {what}; "
                         f"reconnecting in {delay:g} s (try {attempt + 1} of "
                         f"{len(self.delays) + 1})")
                if self._pipe is not None:
                    self._pipe.reset()
                self.sleep(delay)
                self._fs = self.nas.fs()

    def list_dir(self, path: str) -> list[Entry] | None:
        """The directory's entries, or None when it no longer exists."""
        def run() -> list[Entry]:
            if self._pipe is not None:
                return self._pipe.list_dir(path)
            if self._lean is not None:
                return self._lean.list_dir(path)
            return self._generic_list(path)

        return self._listing(path, run)

    def _listing(self, path: str, run: Callable[[], T]) -> T | None:
        """`run()` (a listing of `path`) with the retry policy, counted; None when the
        directory no longer exists."""
        try:
            got = self.call(f"listing {path or '/'!r}", run)
        except Exception as exc:
            if is_missing(exc):
                return None
            raise
        self.listings += 1
        return got

    def list_dir_and_mtime(self, path: str) -> tuple[list[Entry] | None, float | None] | None:
        """Through the SMB pipeline only: (entries, the directory's own last-write time taken
        before the listing, or None), (None, None) when it no longer exists. None outside the
        pipeline, without listing anything: the directory's time is then in its parent's
        listing."""
        pipe = self._pipe
        if pipe is None or pipe.unsupported is not None:
            return None
        got = self._listing(path, lambda: pipe.list_dir_and_mtime(path))
        return (None, None) if got is None else got

    def stat(self, path: str) -> Entry | None:
        e = self.call(f"reading the attributes of {path!r}", lambda: self._fs.stat(path))
        return None if e is None else Entry(e.path, e.is_dir, e.size, e.mtime)


