"""Look at one NAS copy again just before the cached object it backs is deleted: does the file
the row points to still exist, as a file, with the row's size, unchanged since it was verified
(and, where rules.eviction_policy.recheck_plan says so, with the row's SHA-256)?

A file that fails is a verdict about the file. An error reaching the NAS is not: it propagates,
so the caller can tell an outage from a bad file and evict nothing on a NAS it cannot see."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hybrid_pipelines.hybrid_cache.hashing_copy import sha256_of_stream
from hybrid_pipelines.hybrid_cache.rules.eviction_policy import (
    RECHECK_HASH_MAX_BYTES,
    RECHECK_MTIME_SKEW_S,
    recheck_plan,
)
from hybrid_pipelines.hybrid_cache.rules.nas_location import root_relative
from hybrid_pipelines.resources.nas_fs import NASFileSystem
from hybrid_pipelines.shared.nas_paths import UnsafePathError
from hybrid_pipelines.shared.nas_root import NASRoot


@dataclass(frozen=True)
class RecheckSettings:
    hash_max_bytes: int = RECHECK_HASH_MAX_BYTES
    mtime_skew_s: float = RECHECK_MTIME_SKEW_S
    location: NASRoot | None = None  # how stored nas_path values name the NAS root

    def __post_init__(self) -> None:
        if self.hash_max_bytes < 0:
            raise ValueError(f"recheck_hash_max_bytes must be >= 0, got {self.hash_max_bytes} "
                             "(NAS copies up to this size are hashed before eviction; 0 hashes "
                             "only copies modified since their verification)")
        if self.mtime_skew_s < 0:
            raise ValueError(f"recheck_mtime_skew_s must be >= 0, got {self.mtime_skew_s}")


@dataclass(frozen=True)
class Recheck:
    ok: bool
    reason: str = ""      # why it failed ('' when ok)
    hashed: bool = False  # the file was read whole
    modified: bool = False  # mtime after the verification (a pass renews nas_verified_at)


def recheck_copy(nas: NASFileSystem, nas_path: str | None, size: int, sha256: str | None,
                 verified_at: datetime, settings: RecheckSettings) -> Recheck:
    """Raises only on errors reaching the NAS (connection, permissions, timeouts)."""
    if not nas_path:
        return Recheck(False, "the row has no nas_path")
    try:
        path = root_relative(nas_path, settings.location)
        entry = nas.stat(path)
    except UnsafePathError as exc:
        return Recheck(False, f"nas_path {nas_path!r} is unsafe: {exc}")
    seen = None if entry is None else (entry.is_dir, entry.size, entry.mtime)
    action, why = recheck_plan(seen, size, verified_at.timestamp(), settings.hash_max_bytes,
                               settings.mtime_skew_s)
    if action == "fail":
        return Recheck(False, f"{why} ({nas_path})")
    modified = entry is not None and entry.mtime > verified_at.timestamp() + settings.mtime_skew_s
    if action == "ok":
        return Recheck(True)
    if not sha256:
        return Recheck(False, f"{why}, but the row records no SHA-256 to compare ({nas_path})",
                       modified=modified)
    try:
        with nas.open_read(path) as fh:
            got = sha256_of_stream(fh)
    except UnsafePathError as exc:  # e.g. a named pipe or device put at the path
        return Recheck(False, f"{exc} ({nas_path})", modified=modified)
    if got.size != size or got.sha256 != sha256.lower():
        return Recheck(False, f"the NAS copy ({got.size} bytes, SHA-256 {got.sha256[:12]}...) "
                              f"is not the file the row records ({size} bytes, "
                              f"{sha256[:12]}...): {why} ({nas_path})",
                       hashed=True, modified=modified)
    return Recheck(True, hashed=True, modified=modified)
