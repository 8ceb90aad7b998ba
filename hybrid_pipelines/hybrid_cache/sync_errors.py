"""Why one file's sync stopped: the outcomes the sync loop tells apart (retry later, fail for
good, hand back to the queue, or leave alone because another run owns the row now)."""

from __future__ import annotations

from uuid import UUID


class VerificationError(RuntimeError):
    """A copy whose bytes do not match the recorded size or SHA-256."""


class PermanentSyncError(RuntimeError):
    """Retrying cannot help (unsafe NAS path, path owned by another file): fail at once."""


class NASConflictError(PermanentSyncError):
    """The NAS name is taken by bytes this row does not own; they are left untouched."""


class BackendDown(RuntimeError):
    def __init__(self, backend: str, detail: str):
        self.backend, self.detail = backend, detail
        super().__init__(f"{backend} went down: {detail}")


class LeaseLost(RuntimeError):
    def __init__(self, file_id: UUID):
        self.file_id = file_id
        super().__init__(f"lease on {file_id} expired or was taken over by another run; this "
                         "run stopped without placing the file (its temporary copy removed). "
                         "If this repeats, raise lease_timeout_s above the longest pause "
                         "between two chunks of a copy")


class RunStopped(RuntimeError):
    """The run is stopping (a backend went down, or the run itself failed): a copy still in
    flight ends at its next chunk, its temporary file is removed and its row handed back."""

    def __init__(self, file_id: UUID):
        self.file_id = file_id
        super().__init__(f"sync of {file_id} stopped because the run is stopping; the row goes "
                         "back to the queue without an attempt charged")
