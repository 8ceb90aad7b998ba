"""One NAS session per copy worker (and per reader) thread of a sync run.

smbprotocol cannot share one SMB connection between threads that issue requests at once: each
request sizes itself by the credits it sees, and a second thread spending them in between
makes the first fail ("Request requires 1 credits but only 0 credits are available"). So each
worker thread gets its own connection (its own smbclient connection cache, i.e. its own TCP
connection and session), opened on first use and logged off when the run ends, all under one
client GUID per run (a writer and the reader of its file must share it: nas_fs.py). A mounted NAS
(LocalNAS) has no such limit and is shared as it is."""

from __future__ import annotations

import threading
import uuid
from typing import IO, Any

from hybrid_pipelines.resources.nas_fs import SMBNAS, NASEntry, NASFileSystem


class PerThreadNAS:
    """A NASFileSystem whose calls go through the calling thread's own session."""

    def __init__(self, nas: NASFileSystem):
        self._nas = nas
        self.description = nas.description
        self._local = threading.local()
        self._caches: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._client_guid = uuid.uuid4()

    def _fs(self) -> NASFileSystem:
        if not isinstance(self._nas, SMBNAS):
            return self._nas
        fs = getattr(self._local, "fs", None)
        if fs is None:
            fs, cache = self._nas.with_own_connection(self._client_guid)
            with self._lock:
                self._caches.append(cache)
            self._local.fs = fs
        return fs

    def close(self) -> None:
        """Log off and disconnect every session the workers opened."""
        with self._lock:
            caches, self._caches = self._caches, []
        if caches:
            import smbclient

            for cache in caches:
                smbclient.reset_connection_cache(fail_on_error=False, connection_cache=cache)

    def list_dir(self, path: str) -> list[NASEntry]:
        return self._fs().list_dir(path)

    def stat(self, path: str) -> NASEntry | None:
        return self._fs().stat(path)

    def open_read(self, path: str, *, while_written: bool = False) -> IO[bytes]:
        return self._fs().open_read(path, while_written=while_written)

    def open_write(self, path: str) -> IO[bytes]:
        return self._fs().open_write(path)

    def rename(self, src: str, dst: str) -> None:
        self._fs().rename(src, dst)

    def remove(self, path: str) -> None:
        self._fs().remove(path)

    def makedirs(self, path: str) -> None:
        self._fs().makedirs(path)
