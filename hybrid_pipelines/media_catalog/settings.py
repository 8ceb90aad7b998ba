"""Settings of the media catalog chain, from environment variables (all optional).

HP_CATALOG_NAS_ROOT       folder of the share whose subfolders are the catalogs ('' = share root)
HP_CATALOG_RULES          JSON object (or @/path/to/rules.json) overriding CatalogRules
HP_CATALOG_MIN_STABLE_S   seconds between two equal looks before a new file counts as stable (30)
HP_CATALOG_QUIET_S        a new file whose mtime is this old is stable at first sight (600; 0=off)
HP_CATALOG_RETRY_DELAYS   NAS reconnect delays in seconds, comma separated ("1,2,4")
HP_CATALOG_PROBE_WORKERS  parallel probes (2)
HP_CATALOG_FIRESTORE_BATCH  writes per Firestore commit (500, the most Firestore documents)
HP_PROBE_MAX_READ_BYTES   bytes one probe may fetch from a file over all its attempts (64 MiB);
                          past it the file is recorded invalid with the reason, never copied
HP_PROBE_MEMORY_LIMIT_BYTES  ffprobe's address-space limit (1 GiB; ~300 MiB go to its libraries)
HP_PROBE_RETRY_BACKOFF_S  first wait before a timed-out or transiently failed probe is tried
                          again (600), doubling after each further failure
HP_PROBE_MAX_ATTEMPTS     probes of such a file before its failure is final (4)
HP_CATALOG_CHANGE_NOTIFY  1: learn of uploads from the NAS's SMB change notifications (one
                          CHANGE_NOTIFY per code server); 0: the 60 s poll only (1)
HP_CATALOG_NIGHTLY_REPROBE  the nightly reconcile also re-probes: `invalid` (every invalid
                          file) or `error:TEXT` (invalid files whose error contains TEXT)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from hybrid_pipelines.media_catalog.nas_access import DEFAULT_RETRY_DELAYS_S
from hybrid_pipelines.media_catalog.probe.driver import DEFAULT_MAX_READ_BYTES
from hybrid_pipelines.media_catalog.probe.ffprobe_run import DEFAULT_MEMORY_LIMIT_BYTES
from hybrid_pipelines.media_catalog.rules.catalog_paths import CatalogRules
from hybrid_pipelines.media_catalog.rules.scan_diff import StabilityRule
from hybrid_pipelines.shared.nas_paths import safe_relpath

ENV_VARS = ("HP_CATALOG_NAS_ROOT", "HP_CATALOG_RULES", "HP_CATALOG_MIN_STABLE_S",
            "HP_CATALOG_QUIET_S", "HP_CATALOG_RETRY_DELAYS", "HP_CATALOG_PROBE_WORKERS",
            "HP_CATALOG_FIRESTORE_BATCH", "HP_PROBE_MAX_READ_BYTES", "HP_PROBE_MEMORY_LIMIT_BYTES",
            "HP_CATALOG_CHANGE_NOTIFY")
PARTITIONS_NAME = "media_catalog_folders"
FIRESTORE_MAX_BATCH = 500
# Sniffing alone reads 64 KiB; ffprobe cannot even load its libraries in less than ~512 MiB.
MIN_PROBE_READ_BYTES = 1024 * 1024
MIN_PROBE_MEMORY_BYTES = 512 * 1024 * 1024


class SettingsError(ValueError):
    pass


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a number") from exc
    if value < 0:
        raise SettingsError(f"{name}={raw!r} must be >= 0")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a switch: use 1 (on) or 0 (off)")


def parse_delays(raw: str, source: str = "HP_CATALOG_RETRY_DELAYS") -> tuple[float, ...]:
    try:
        delays = tuple(float(x) for x in raw.split(",") if x.strip())
    except ValueError as exc:
        raise SettingsError(f"{source}={raw!r} must be comma-separated seconds, e.g. 1,2,4") \
            from exc
    if any(d < 0 for d in delays):
        raise SettingsError(f"{source}={raw!r}: delays must be >= 0")
    return delays


def _probe_limits(env: Mapping[str, str]) -> dict[str, int]:
    return {"max_read_bytes": int(_float(env, "HP_PROBE_MAX_READ_BYTES", DEFAULT_MAX_READ_BYTES)),
            "memory_limit_bytes": int(_float(env, "HP_PROBE_MEMORY_LIMIT_BYTES",
                                             DEFAULT_MEMORY_LIMIT_BYTES))}


def probe_limits_from_env(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """probe()'s max_read_bytes and memory_limit_bytes from the environment, checked as the
    pipeline checks them (for callers that need no other catalog setting, e.g. the CLI)."""
    limits = _probe_limits(os.environ if environ is None else environ)
    CatalogSettings(probe_max_read_bytes=limits["max_read_bytes"],
                    probe_memory_limit_bytes=limits["memory_limit_bytes"])
    return limits


@dataclass(frozen=True)
class CatalogSettings:
    nas_root: str = ""
    rules: CatalogRules = field(default_factory=CatalogRules)
    stability: StabilityRule = field(default_factory=StabilityRule)
    retry_delays_s: tuple[float, ...] = DEFAULT_RETRY_DELAYS_S
    batch_size: int = 100
    probe_workers: int = 2
    firestore_batch: int = FIRESTORE_MAX_BATCH
    probe_max_read_bytes: int = DEFAULT_MAX_READ_BYTES
    probe_memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES
    probe_retry_backoff_s: float = 600.0
    probe_max_attempts: int = 4
    change_notify: bool = True  # SMB change notifications speed up discovery (poll stays)

    def __post_init__(self) -> None:
        # Each message names both places the value can come from: the run config field and
        # the environment variable behind its default.
        if not 1 <= self.firestore_batch <= FIRESTORE_MAX_BATCH:
            raise SettingsError(f"Firestore batch size must be 1..{FIRESTORE_MAX_BATCH}, "
                                f"got {self.firestore_batch} (run config batch_size of "
                                "firestore_catalog, or HP_CATALOG_FIRESTORE_BATCH)")
        if self.batch_size < 1 or self.probe_workers < 1:
            raise SettingsError(f"batch size and probe workers must be >= 1, got batch_size="
                                f"{self.batch_size}, workers={self.probe_workers} (run config "
                                "batch_size / workers, or HP_CATALOG_PROBE_WORKERS)")
        if any(d < 0 for d in self.retry_delays_s):
            raise SettingsError(f"retry_delays_s={list(self.retry_delays_s)}: NAS retry delays "
                                "must be >= 0 seconds (run config retry_delays_s, or "
                                "HP_CATALOG_RETRY_DELAYS), e.g. [1, 2, 4]")
        for name, env in (("min_stable_s", "HP_CATALOG_MIN_STABLE_S"),
                          ("quiet_s", "HP_CATALOG_QUIET_S")):
            value = getattr(self.stability, name)
            if value < 0:
                raise SettingsError(f"{name}={value} must be >= 0 seconds (run config {name}, "
                                    f"or {env})")
        if self.probe_max_read_bytes < MIN_PROBE_READ_BYTES:
            raise SettingsError(f"HP_PROBE_MAX_READ_BYTES={self.probe_max_read_bytes} is below "
                                f"{MIN_PROBE_READ_BYTES} (1 MiB); probes need at least that, "
                                f"the default is {DEFAULT_MAX_READ_BYTES}")
        if self.probe_memory_limit_bytes < MIN_PROBE_MEMORY_BYTES:
            raise SettingsError(f"HP_PROBE_MEMORY_LIMIT_BYTES={self.probe_memory_limit_bytes} is "
                                f"below {MIN_PROBE_MEMORY_BYTES} (512 MiB), too little for "
                                f"ffprobe to start; the default is {DEFAULT_MEMORY_LIMIT_BYTES}")
        if self.probe_retry_backoff_s < 0 or self.probe_max_attempts < 1:
            raise SettingsError(f"HP_PROBE_RETRY_BACKOFF_S={self.probe_retry_backoff_s} must be "
                                f">= 0 and HP_PROBE_MAX_ATTEMPTS={self.probe_max_attempts} >= 1"
                                " (defaults 600 and 4)")
        object.__setattr__(self, "nas_root", safe_relpath(self.nas_root))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CatalogSettings:
        env = os.environ if environ is None else environ
        stability = StabilityRule(
            min_stable_s=_float(env, "HP_CATALOG_MIN_STABLE_S", StabilityRule.min_stable_s),
            quiet_s=_float(env, "HP_CATALOG_QUIET_S", StabilityRule.quiet_s))
        delays = env.get("HP_CATALOG_RETRY_DELAYS", "")
        limits = _probe_limits(env)
        return cls(
            nas_root=env.get("HP_CATALOG_NAS_ROOT", ""),
            rules=CatalogRules.from_env(env),
            stability=stability,
            retry_delays_s=parse_delays(delays) if delays.strip() else DEFAULT_RETRY_DELAYS_S,
            probe_workers=int(_float(env, "HP_CATALOG_PROBE_WORKERS", 2)),
            firestore_batch=int(_float(env, "HP_CATALOG_FIRESTORE_BATCH", FIRESTORE_MAX_BATCH)),
            probe_max_read_bytes=limits["max_read_bytes"],
            probe_memory_limit_bytes=limits["memory_limit_bytes"],
            probe_retry_backoff_s=_float(env, "HP_PROBE_RETRY_BACKOFF_S", 600.0),
            probe_max_attempts=int(_float(env, "HP_PROBE_MAX_ATTEMPTS", 4)),
            change_notify=_flag(env, "HP_CATALOG_CHANGE_NOTIFY", True),
        )

    def with_overrides(self, **kw: Any) -> CatalogSettings:
        """Apply run-config overrides; None means 'keep the environment's value'."""
        kw = {k: v for k, v in kw.items() if v is not None}
        stab = {k: kw.pop(k) for k in ("min_stable_s", "quiet_s") if k in kw}
        if stab:
            kw["stability"] = replace(self.stability, **stab)
        if "retry_delays_s" in kw:
            kw["retry_delays_s"] = tuple(float(d) for d in kw["retry_delays_s"])
        return replace(self, **kw)

    def folder_path(self, folder: str) -> str:
        """Share-relative path of a catalog's top-level folder."""
        return safe_relpath(f"{self.nas_root}/{folder}" if self.nas_root else folder)

    def relative(self, path: str) -> str:
        """A share-relative path made relative to the catalogued root (for the rules)."""
        if not self.nas_root:
            return path
        return path[len(self.nas_root) + 1:] if path.startswith(self.nas_root + "/") else path
