"""What the read plans and the driver share: one attempt, the probe's options and state,
and the exception that ends a probe with a verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hybrid_pipelines.media_catalog.range_reader import SparseFileCache
from hybrid_pipelines.media_catalog.rules.container_sniff import Sniff
from hybrid_pipelines.media_catalog.rules.ffprobe_output import Expected


class ProbeFailure(Exception):
    """A definitive verdict on the file; no bigger read can change it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Attempt:
    """One ffprobe run: fetch `ranges` (offset, length) into the cache, then feed ffprobe
    either the first `pipe_bytes` on stdin or the whole sparse cache file (with `patches`
    written over it for the run)."""

    label: str
    mode: Literal["pipe", "file"]
    ranges: tuple[tuple[int, int], ...] = ()
    pipe_bytes: int = 0
    expected: Expected | None = None
    # Stand-in bytes written over the sparse file for this run only (offset, data).
    patches: tuple[tuple[int, bytes], ...] = ()
    # For a container the sniffer does not know: if ffprobe cannot open this input either,
    # the file is not media, and no bigger read will change that.
    final_if_unrecognised: bool = False
    # Only asks "is this media at all?": its answer is never trusted (see plans._plan_unknown).
    recognise_only: bool = False
    probesize: int | None = None  # ffprobe -probesize; None: its default


@dataclass(frozen=True)
class ProbeOptions:
    ffprobe_path: str
    timeout_s: float
    head_bytes: int
    max_moov_bytes: int
    max_full_read_bytes: int | None
    probe_unknown: bool
    max_read_bytes: int | None = None  # total over every attempt; None: unbounded
    memory_limit_bytes: int | None = None  # ffprobe's address space; None: unlimited

    @property
    def moov_cap(self) -> int:
        """The moov is read whole and parsed in memory: it must fit the read budget too."""
        if self.max_read_bytes is None:
            return self.max_moov_bytes
        return min(self.max_moov_bytes, self.max_read_bytes)


@dataclass
class ProbeContext:
    cache: SparseFileCache
    opts: ProbeOptions
    sniff: Sniff
    trace: list[str] | None = None
    last_failure: str = ""  # why the latest attempt failed, for the final verdict

    @property
    def size(self) -> int:
        return self.cache.size

    def tail(self, length: int) -> tuple[int, int]:
        start = max(0, self.size - length)
        return start, self.size - start

    def log(self, message: str) -> None:
        # The trace is opt-in (tests read it to see which attempts ran); normal probing
        # keeps no log.
        if self.trace is not None:
            self.trace.append(message)
