"""A killed server restarts on its own address, or says why it cannot.

Found in CI: SeaweedFS, killed by a fault test, was restarted by `start()` on fresh ports
after its own could not be bound, and the test's clients, holding the old address, saw a
server down for three minutes. Two causes: its ports were ephemeral ones, which the kernel
lends to outgoing connections while the server is down (foundation/test_server_ports.py), and
`kill()` returned while weed's threads still held its sockets (~10 ms)."""

from __future__ import annotations

import socket

import pytest

from hybrid_pipelines.dev.stack.process import LOOPBACK
from hybrid_pipelines.dev.stack.seaweedfs import SeaweedFSServer
from hybrid_pipelines_tests.conftest import ServerFactory


@pytest.mark.fault("SeaweedFS SIGKILLed, its gateway's port taken while it is down -> the "
                   "restart fails naming the port and keeps its address; freed, it restarts "
                   "there with its data", kind="server stopped")
def test_a_seaweedfs_restart_keeps_its_ports_or_says_which_it_cannot_have(
        server_factory: ServerFactory) -> None:
    server = server_factory("seaweedfs")
    assert isinstance(server, SeaweedFSServer)
    ports = (server.master_port, server.volume_port, server.filer_port, server.s3_port)
    server.s3_client().put_object(Bucket="media-cache", Key="kept.bin", Body=b"kept")
    server.kill()
    # kill() returns once every thread of weed has exited: its ports are free at once (they
    # were not for ~10 ms, when its zombie main thread counted as gone). Then another
    # process takes the gateway's port while the server is down (an outgoing
    # connection did, when ports were ephemeral ones). SO_REUSEADDR: the killed gateway's
    # connections leave the port in TIME_WAIT.
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((LOOPBACK, server.s3_port))
        squatter.listen()
        with pytest.raises(RuntimeError, match="another process holds it") as failed:
            server.start()
    # The server, the port it could not have, and what to do.
    assert str(server.root) in str(failed.value)
    assert f"s3 gateway port {server.s3_port}:" in str(failed.value), failed.value
    assert "ss -tanp" in str(failed.value)
    assert (server.master_port, server.volume_port, server.filer_port, server.s3_port) == ports
    server.kill()  # whatever of it came up before the gateway's bind failed
    server.start()  # the port free again: back on the same address, its data there
    assert server.s3_ready() and server.s3_port == ports[3]
    body = server.s3_client().get_object(Bucket="media-cache", Key="kept.bin")["Body"]
    assert body.read() == b"kept"
