"""Merge two key-sorted streams (an object-store listing and metadata rows) in one pass, so an
audit of millions of objects keeps only the current pair in memory."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

L = TypeVar("L")
R = TypeVar("R")


class UnsortedInputError(ValueError):
    """A stream was not in byte order; a merge over it would invent drift that isn't there."""


def _checked(items: Iterable[L], key: Callable[[L], str], side: str) -> Iterator[tuple[str, L]]:
    prev: str | None = None
    for item in items:
        k = key(item)
        if prev is not None and k <= prev:
            raise UnsortedInputError(
                f"{side} keys are not strictly increasing ({prev!r} then {k!r}); list objects "
                "in S3 order and sort rows with COLLATE \"C\"")
        prev = k
        yield k, item


def merge_by_key(left: Iterable[L], right: Iterable[R], left_key: Callable[[L], str],
                 right_key: Callable[[R], str]) -> Iterator[tuple[str, L | None, R | None]]:
    """Yield (key, left_item|None, right_item|None) in key order. Python compares str by code
    point, which is the UTF-8 byte order S3 lists in and Postgres sorts in under COLLATE "C"."""
    lit = _checked(left, left_key, "left")
    rit = _checked(right, right_key, "right")
    lcur = next(lit, None)
    rcur = next(rit, None)
    while lcur is not None or rcur is not None:
        if rcur is None or (lcur is not None and lcur[0] < rcur[0]):
            assert lcur is not None
            yield lcur[0], lcur[1], None
            lcur = next(lit, None)
        elif lcur is None or rcur[0] < lcur[0]:
            yield rcur[0], None, rcur[1]
            rcur = next(rit, None)
        else:
            yield lcur[0], lcur[1], rcur[1]
            lcur, rcur = next(lit, None), next(rit, None)
