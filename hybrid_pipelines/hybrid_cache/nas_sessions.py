"""One NAS session per copy worker (and per reader) thread of a sync run.

smbprotocol cannot share one SMB connection between threads that issue requests at once: each
request sizes itself by the credits it sees, and a second thread spending them in between
makes the first fail ("Request requires 1 credits but only 0 credits are available"). So each
worker thread gets its own connection (its own smbclient connection cache, i.e. its own TCP
connection and session), opened on first use and logged off when the run ends, all under one
client GUID per run (a writer and the reader of its file must share it: nas_fs.py). A mounted NAS
(LocalNAS) has no such limit and is shared as it is."""

from __future__ import annotations

import uuid
from typing import IO, Any

from hybrid_pipelines.resources.nas_fs import SMBNAS, NASEntry, NASFileSystem
from hybrid_pipelines.resources.nas_new_file import NewFile
from hybrid_pipelines.shared.per_thread import PerThread


class PerThreadNAS:
    """A NASFileSystem whose calls go through the calling thread's own session."""

    def __init__(self, nas: NASFileSystem):
        self._nas = nas
        self.description = nas.description
        client_guid = uuid.uuid4()
        self._sessions: PerThread[tuple[NASFileSystem, dict[str, Any]]] | None = None
        if isinstance(nas, SMBNAS):
            self._sessions = PerThread(lambda: nas.with_own_connection(client_guid),
                                       _log_off)

    def _fs(self) -> NASFileSystem:
        return self._nas if self._sessions is None else self._sessions.get()[0]

    def close(self) -> None:
        """Log off and disconnect every session the workers opened."""
        if self._sessions is not None:
            self._sessions.close()

    def list_dir(self, path: str) -> list[NASEntry]:
        return self._fs().list_dir(path)

    def stat(self, path: str) -> NASEntry | None:
        return self._fs().stat(path)

    def open_read(self, path: str, *, while_written: bool = False) -> IO[bytes]:
        return self._fs().open_read(path, while_written=while_written)

    def open_write(self, path: str) -> IO[bytes]:
        return self._fs().open_write(path)

    def create_new(self, path: str, *, followed: bool = False) -> NewFile:
        return self._fs().create_new(path, followed=followed)

    def put_new(self, path: str, data: bytes) -> tuple[NewFile, bytes]:
        return self._fs().put_new(path, data)

    def rename(self, src: str, dst: str) -> None:
        self._fs().rename(src, dst)

    def remove(self, path: str) -> None:
        self._fs().remove(path)

    def makedirs(self, path: str) -> None:
        self._fs().makedirs(path)


def _log_off(session: tuple[NASFileSystem, dict[str, Any]]) -> None:
    import smbclient

    if isinstance(session[0], SMBNAS) and session[0].worker_wire is not None:
        session[0].worker_wire.close()
    smbclient.reset_connection_cache(fail_on_error=False, connection_cache=session[1])
