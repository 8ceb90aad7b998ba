"""NASAccess.pipelined sets up its first SMB connection on a thread while the scan reads the
catalog (nas_access.EarlyConnection): the walk gets that connection, or the error connecting
raised, exactly once; later connections (reconnects) are made anew; one nobody took is
closed. Pure hand-over logic: `connect` here stands in for WireConnection's set-up."""

from __future__ import annotations

from typing import Any

import pytest

from hybrid_pipelines.media_catalog.nas_access import EarlyConnection


class Conn:
    def __init__(self, n: int):
        self.n, self.closed = n, False

    def close(self) -> None:
        self.closed = True


def counting(fail_first: bool = False) -> Any:
    made: list[Conn] = []

    def connect() -> Conn:
        if fail_first and not made:
            made.append(Conn(-1))
            raise ConnectionRefusedError("nothing listens")
        made.append(Conn(len(made)))
        return made[-1]

    return connect, made


def test_the_early_connection_is_taken_once_then_new_ones_are_made() -> None:
    connect, made = counting()
    early = EarlyConnection(connect)
    first, second = early.take(), early.take()
    assert (first.n, second.n) == (0, 1) and len(made) == 2
    early.discard()  # taken: left open for the lister, which closes it
    assert not first.closed


def test_the_error_connecting_is_raised_to_the_walk_and_a_retry_connects() -> None:
    connect, made = counting(fail_first=True)
    early = EarlyConnection(connect)
    with pytest.raises(ConnectionRefusedError):
        early.take()
    assert early.take().n == 1  # the retry policy's next attempt


def test_an_untaken_connection_is_closed() -> None:
    connect, made = counting()
    early = EarlyConnection(connect)
    early.discard()
    assert made[0].closed
    early.discard()  # nothing left: a no-op
