"""A NAS that stops answering during the SMB session setup: the call fails within the NAS
timeout, naming the NAS and the setting, and the next call sets up a new session.

Found in a full test run: Samba 4.17 hands a new connection under a client GUID it already
serves to that GUID's smbd, which now and then drops the session setup ("client used more
credits than granted", in its log) without answering or hanging up. smbclient waits for that
answer without a limit, so a media probe thread, and its Dagster run, waited for good. Here
the real Samba's answers after the negotiate are withheld by a relay on the connection
(`TcpRelay.answers_passed`), which is what the client saw."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.media_catalog.nas_access import is_transient
from hybrid_pipelines.resources import NASResource
from hybrid_pipelines.resources.smb_session import SessionSetupTimeout

from .wire import TcpRelay

TIMEOUT_S = 2.0


def _within(seconds: float, fn: Any) -> Any:
    """fn's result or exception, or a failure if it has not returned after `seconds` (a
    daemon thread: a hung call cannot hold the test session)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        pytest.fail(f"the NAS call still waits after {seconds:g} s: it hangs")
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.mark.fault("the NAS's answers withheld after the negotiate (a server frozen on the "
                   "connection during the session setup) -> the call fails within the NAS "
                   "timeout, as connection trouble, naming the NAS and HP_NAS_TIMEOUT_MS; the "
                   "next call sets up a new session", kind="server stopped")
def test_a_session_setup_left_unanswered_fails_within_the_timeout(
        samba_server: SambaServer) -> None:
    folder = samba_server.share_dir / f"setup-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"abc")
    path = f"{folder.name}/a.bin"
    with TcpRelay(samba_server.port) as relay:
        nas = NASResource(protocol="smb", host="127.0.0.1", port=relay.port,
                          share=samba_server.share, username=samba_server.username,
                          password=samba_server.password, timeout_s=TIMEOUT_S)
        fs = nas.fs()
        relay.answers_passed = 1  # the negotiate's answer only
        started = time.monotonic()
        with pytest.raises(SessionSetupTimeout) as failed:
            _within(30, lambda: fs.stat(path))
        took = time.monotonic() - started
        assert relay.withheld > 0  # the session setup's answer came, and was held back
        assert TIMEOUT_S <= took < TIMEOUT_S + 10, took
        message = str(failed.value)
        assert nas.address in message and "HP_NAS_TIMEOUT_MS" in message, message
        assert is_transient(failed.value)  # the jobs' NAS retry policy reconnects on it

        relay.answers_passed = None  # the server answers again
        entry = _within(30, lambda: fs.stat(path))
        assert entry is not None and entry.size == 3
