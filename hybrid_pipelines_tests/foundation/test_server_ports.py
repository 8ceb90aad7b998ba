"""Server ports the kernel never lends to a connection, and restarts that keep their address.

Found in CI: SeaweedFS, killed by a fault test, could not restart on its port, because an
outgoing connection had since been given that port by the kernel (it was one of the
ephemeral range's). `start()` then moved the server to fresh ports, and the test's clients,
holding the old address, saw a server down for three minutes. The restart itself:
reliability/test_server_restart.py."""

from __future__ import annotations

import socket

import pytest

from hybrid_pipelines.dev.stack.process import LOOPBACK, ephemeral_range, free_port
from hybrid_pipelines.dev.stack.seaweedfs import GRPC_OFFSET


def test_an_outgoing_connection_holds_its_port_against_a_server_restarting_there() -> None:
    """Why ports are picked outside the ephemeral range: the clash is the kernel's rule."""
    with socket.create_server((LOOPBACK, 0)) as listener, \
            socket.create_connection(listener.getsockname()) as client:
        taken = client.getsockname()[1]
        first, last = ephemeral_range()
        assert first <= taken <= last
        with socket.socket() as server:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with pytest.raises(OSError, match="in use"):
                server.bind((LOOPBACK, taken))


@pytest.mark.parametrize("offsets", [(), (GRPC_OFFSET,)])
def test_server_ports_lie_outside_the_ephemeral_range(offsets: tuple[int, ...]) -> None:
    first, last = ephemeral_range()
    for _ in range(200):
        port = free_port(*offsets)
        for p in (port, *(port + o for o in offsets)):
            assert not first <= p <= last and 1024 <= p < 65536, (p, (first, last))
