"""smbclient sessions set up within a deadline, and connection caches for them.

smbclient waits for a session setup's answer without a limit. Samba 4.17 hands a new
connection under a client GUID it already serves to that GUID's smbd process (SMB 3
multichannel), and there, now and then, the session setup is dropped ("client used more
credits than granted") without an answer or a disconnect: a probe thread waited on it for
good, and its run with it (seen in a full test run). So the setup is cut off after the
NAS timeout: its connection is shut down, which wakes the waiting thread, and the caller
gets a TimeoutError, which the jobs' NAS retry policy treats as connection trouble."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class SessionSetupTimeout(TimeoutError):
    pass


def connection_key(host: str, port: int) -> str:
    """smbclient's key for a server's connection in a connection cache."""
    return f"{host.lower()}:{port}"


def has_live_session(cache: dict[str, Any], key: str) -> bool:
    # dict.get: a ConnectOnFirstUse cache would connect on its own get().
    conn = dict.get(cache, key)
    return conn is not None and conn.transport.connected and bool(conn.session_table)


def register_within(host: str, port: int, timeout_s: float, cache: dict[str, Any],
                    where: str, **kw: Any) -> None:
    """smbclient.register_session, its connection shut down if the session is not set up
    within `timeout_s` (SessionSetupTimeout then, naming the NAS and the setting)."""
    import smbclient

    key = connection_key(host, port)
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def expire() -> None:
        with lock:
            if state["done"]:
                return
            state["fired"] = True
            conn = dict.get(cache, key)
        if conn is not None:
            conn.transport.close()  # wakes the thread waiting for the answer

    timer = threading.Timer(timeout_s, expire)
    timer.daemon = True
    timer.start()
    try:
        smbclient.register_session(host, port=port, connection_timeout=timeout_s,
                                   connection_cache=cache, **kw)
    except Exception as exc:
        if state["fired"]:
            raise SessionSetupTimeout(
                f"the NAS at {where} did not answer the SMB session setup within "
                f"{timeout_s:g} s (HP_NAS_TIMEOUT_MS); the connection was closed and the next "
                "call opens a new one. If it keeps happening, check the server's load and "
                "log") from exc
        raise
    finally:
        with lock:
            state["done"] = True
        timer.cancel()


class ConnectOnFirstUse(dict[str, Any]):
    """An smbclient connection cache whose one connection is made when smbclient first
    looks it up (smbclient would make it under a client GUID of its own)."""

    def __init__(self, key: str, connect: Callable[[], Any]):
        super().__init__()
        self._key, self._connect = key, connect

    def get(self, key: str, default: Any = None) -> Any:
        if key == self._key and key not in self:
            self[key] = self._connect()
        return super().get(key, default)
