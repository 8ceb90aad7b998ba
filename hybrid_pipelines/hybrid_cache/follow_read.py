"""Read a large file back from the NAS while it is still being written, a chunk behind the
writer, so its full read-back check costs little more wall time than the copy itself.

Why it is as strong as reading back after the copy: the writer's handle is unbuffered (each
write returns once the server holds its bytes) and shares the file with readers only, so no
other handle can change a range once it was read; after the writer's last write (its handle
stays open, writing nothing more, until the rename into place), the reader reads on to the
end of the file, so what it hashed is exactly the file the NAS holds, no byte missing, none
extra. A reader never reads past what the writer reported written; the two
directions of a network link carry the copy and the check at once.

The reader runs in another thread on its own NAS session (smbprotocol cannot share one
connection between threads)."""

from __future__ import annotations

import io
import threading
from typing import IO

from hybrid_pipelines.hybrid_cache.hashing_copy import CopyResult, Progress, sha256_of_stream


class WriterGone(RuntimeError):
    """The writer failed or stopped: the read-back ends without a result."""


class WriteMark:
    """How many bytes the writer has on the NAS so far, and whether it wrote its last."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._written = 0
        self._finished = False
        self._failed = False

    def advance(self, nbytes: int) -> None:
        with self._cond:
            self._written += nbytes
            self._cond.notify_all()

    def finished(self) -> None:
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def failed(self) -> None:
        with self._cond:
            self._failed = True
            self._cond.notify_all()

    def readable_up_to(self, offset: int, timeout_s: float) -> int | None:
        """Wait until bytes beyond `offset` are written; their end, or None once the writer
        finished (read to its end). Raises WriterGone if the writer failed. Returns
        `offset` itself after `timeout_s` without news, so the reader can report progress
        checks (a lost lease, a stopping run) while a slow writer keeps it waiting."""
        with self._cond:
            self._cond.wait_for(lambda: self._failed or self._finished or self._written > offset,
                                timeout_s)
            if self._failed:
                raise WriterGone("the copy being read back failed")
            if self._written > offset:
                return self._written
            return None if self._finished else offset


class _Following(io.RawIOBase):
    """The NAS handle as the mark allows it to be read: `readinto` waits for written bytes,
    never reads past them, and returns 0 only at the end of the finished file
    (io.RawIOBase supplies read())."""

    def __init__(self, fh: IO[bytes], mark: WriteMark, progress: Progress | None,
                 wait_s: float) -> None:
        super().__init__()
        self._fh, self._mark, self._progress, self._wait_s = fh, mark, progress, wait_s
        self._offset = 0

    def readinto(self, view: memoryview) -> int:
        while (limit := self._mark.readable_up_to(self._offset, self._wait_s)) == self._offset:
            if self._progress:
                self._progress(0)  # nothing new yet: may raise to stop the read-back
        want = len(view) if limit is None else min(len(view), limit - self._offset)
        n = self._fh.readinto(view[:want]) or 0
        if not n and limit is not None:
            raise OSError(f"the NAS returned no bytes at offset {self._offset} of a file "
                          f"written to {limit}: the copy is shorter than what was written")
        self._offset += n
        return n

    def readable(self) -> bool:
        return True


def read_back_following(open_read: IO[bytes], mark: WriteMark, chunk_size: int,
                        progress: Progress | None = None, wait_s: float = 5.0) -> CopyResult:
    """Hash the file behind `open_read` (an unbuffered handle) as `mark` says it is written;
    after the writer finished, to its end. `progress(n)` after every chunk, and `progress(0)`
    every `wait_s` while waiting for the writer (it may raise to stop the read-back)."""
    with open_read as fh:
        return sha256_of_stream(_Following(fh, mark, progress, wait_s), chunk_size,
                                progress=progress)
