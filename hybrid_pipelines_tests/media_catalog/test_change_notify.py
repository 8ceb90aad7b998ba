"""SMB2 CHANGE_NOTIFY against the real Samba: an upload over SMB anywhere below the watched
root is reported within a second, changes between two drains are buffered by the server,
an idle watcher sends nothing, and a watcher that cannot connect says so (the poll covers)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from hybrid_pipelines.dev.stack.process import free_port
from hybrid_pipelines.dev.stack.samba import SambaServer
from hybrid_pipelines.media_catalog.change_notify import (
    Drained,
    ShareWatcher,
    WatchTarget,
    close_all,
    watcher_of,
)
from hybrid_pipelines.resources import NASResource

from .conftest import unique


@pytest.fixture()
def smb_upload(nas_resource: NASResource) -> Iterator:
    import smbclient

    cache: dict = {}
    kw = dict(username=nas_resource.username, password=nas_resource.password,
              port=nas_resource.port, connection_cache=cache)
    base = f"\\\\{nas_resource.host}\\{nas_resource.share}"

    def upload(rel: str, data: bytes) -> None:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            d = base + "\\" + "\\".join(parts[:i])
            try:
                smbclient.mkdir(d, **kw)
            except FileExistsError:
                pass
            except OSError as exc:  # exists (smbprotocol raises its own subclass)
                if "exist" not in str(exc).lower():
                    raise
        with smbclient.open_file(base + "\\" + rel.replace("/", "\\"), mode="wb", **kw) as fh:
            fh.write(data)

    yield upload
    smbclient.reset_connection_cache(connection_cache=cache)


@pytest.fixture()
def watched(samba_server: SambaServer, nas_resource: NASResource) -> Iterator[dict]:
    root = unique("mc-notify")
    (samba_server.share_dir / root).mkdir()
    w = watcher_of(nas_resource, root)
    assert isinstance(w, ShareWatcher)
    yield {"root": root, "watcher": w}
    close_all()


def _drain_until(w: ShareWatcher, want: str, timeout: float = 10.0) -> Drained:
    got = Drained()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = w.drain()
        got.paths |= d.paths
        got.complete = d.complete
        if want in got.paths:
            return got
        time.sleep(0.1)
    return got


def _armed(w: ShareWatcher, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if w.drain().complete:
            return
        time.sleep(0.05)
    raise AssertionError(f"the watcher never armed: {w.error}")


def test_an_upload_deep_below_the_root_is_reported(watched: dict, smb_upload) -> None:
    w = watched["watcher"]
    _armed(w)
    smb_upload(f"{watched['root']}/Show/S1/E1.mp4", b"x" * 70_000)
    got = _drain_until(w, "Show/S1/E1.mp4")
    assert "Show/S1/E1.mp4" in got.paths and got.complete
    assert "Show/S1" in got.dirs


def test_changes_between_drains_are_buffered_by_the_server(watched: dict, smb_upload) -> None:
    w = watched["watcher"]
    _armed(w)
    # Several changes in a row while nobody drains: none is lost between two requests.
    for i in range(5):
        smb_upload(f"{watched['root']}/Show/S2/E{i}.mp4", b"y" * 1000)
    got = _drain_until(w, "Show/S2/E4.mp4")
    assert {f"Show/S2/E{i}.mp4" for i in range(5)} <= got.paths


def test_an_idle_watcher_sends_nothing(watched: dict, smb_upload) -> None:
    w = watched["watcher"]
    _armed(w)
    smb_upload(f"{watched['root']}/Show/S3/E1.mp4", b"z")
    _drain_until(w, "Show/S3/E1.mp4")
    time.sleep(0.5)
    w.drain()
    sent = w.requests
    time.sleep(3)  # nothing changes: the one request waits on the server
    assert w.drain().paths == set()
    assert w.requests == sent


def _drain_until_error(w: ShareWatcher, timeout_s: float) -> None:
    """Drain as the pending sensor does until the watcher gives up (its error set); no
    drain meanwhile may claim a complete picture."""
    deadline = time.monotonic() + timeout_s
    while w.error is None and time.monotonic() < deadline:
        assert not w.drain().complete
        time.sleep(0.05)


def test_a_nas_nobody_answers_leaves_the_poll_in_charge() -> None:
    w = ShareWatcher(WatchTarget("127.0.0.1", free_port(), "none", "nobody", ""), "x",
                     timeout_s=1.0)
    try:
        _drain_until_error(w, 10)
        assert w.error is not None and "cannot watch smb://127.0.0.1" in w.error
        assert not w.drain().complete  # and no retry loop: the next try after RETRY_AFTER_S
    finally:
        w.close()


def test_a_local_share_has_no_watcher(local_nas_resource: NASResource) -> None:
    assert watcher_of(local_nas_resource, "") is None


@pytest.mark.fault("the NAS accepts the watcher's connection and negotiates, then never "
                   "answers its session setup (a relay stops carrying the client's bytes) -> "
                   "a drain gives the setup up after SETUP_LIMIT_TIMEOUTS connect timeouts, "
                   "closes its connection (the waiting thread ends) and says why; the poll "
                   "stays in charge", kind="server stopped")
def test_a_session_setup_that_never_answers_is_given_up(samba_server: SambaServer,
                                                         nas_resource: NASResource) -> None:
    from hybrid_pipelines_tests.reliability.wire import TcpRelay

    pieces, frozen = [0], threading.Event()

    def hold_after_negotiate(_total: int) -> None:
        pieces[0] += 1
        if pieces[0] >= 2:  # the session setup request: never forwarded while the test runs
            frozen.wait(60)

    with TcpRelay(samba_server.port) as relay:
        relay.on_upstream = hold_after_negotiate
        w = ShareWatcher(WatchTarget("127.0.0.1", relay.port, nas_resource.share,
                                     nas_resource.username, ""), nas_resource.password,
                         timeout_s=1.0)
        try:
            _drain_until_error(w, 20)
            assert w.error is not None and "no answer to the SMB session setup" in w.error
            assert pieces[0] >= 2  # it was the session setup that hung, not the connect
            thread = w._thread
            assert thread is not None
            thread.join(10)
            assert not thread.is_alive()  # closing the connection ended the wait
            assert not w.armed and not w.drain().complete
        finally:
            frozen.set()
            w.close()
