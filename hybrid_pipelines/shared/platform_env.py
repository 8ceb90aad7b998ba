"""The platform's own environment variables, read as well as ours: one alias table.

The platform's services (the hybrid file server, the AI backend) are configured with the
names of their designs (SEAWEED_S3_ENDPOINT, CACHE_EVICTION_POLICY, POSTGRES_HOST, ...). An
operator who already set those should not have to set them again as HP_*: every HP_* variable
below also answers to the platform's name. Where both are set, HP_* wins and a warning names
both (once per process, never the values).

NAS_ROOT_PATH (with NAS_MOUNT_TYPE) is the one compound alias: it stands for the NAS's
protocol, host, port, share, root folder or mount path (shared/nas_root.py parses it).

`resolve(env)` gives a read-only view of `env` in which each HP_* name has its effective
value, and remembers which variable supplied it, so an error names the variable the operator
really set and a deferred EnvVar reads the variable that really exists at launch."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from hybrid_pipelines.shared.env import EnvVarError
from hybrid_pipelines.shared.nas_root import NAS_MOUNT_TYPE, NAS_ROOT_PATH, parse_nas_root

log = logging.getLogger("hybrid_pipelines.settings")


@dataclass(frozen=True)
class Alias:
    hp: str         # our name (wins where both are set)
    platform: str   # the platform design's name for the same setting
    secret: bool = False


ALIASES: tuple[Alias, ...] = (
    # Hybrid file server (design 000): SeaweedFS cache.
    Alias("HP_SEAWEEDFS_MASTER_URL", "SEAWEED_MASTER_URL"),
    Alias("HP_SEAWEEDFS_S3_ENDPOINT", "SEAWEED_S3_ENDPOINT"),
    Alias("HP_SEAWEEDFS_ACCESS_KEY", "SEAWEED_S3_ACCESS_KEY", secret=True),
    Alias("HP_SEAWEEDFS_SECRET_KEY", "SEAWEED_S3_SECRET_KEY", secret=True),
    Alias("HP_SEAWEEDFS_BUCKET", "SEAWEED_S3_BUCKET"),
    Alias("HP_SEAWEEDFS_TIMEOUT_MS", "SEAWEED_TIMEOUT_MS"),
    Alias("HP_NAS_TIMEOUT_MS", "NAS_TIMEOUT_MS"),
    # Its cache, sync and health settings (hybrid-cache schedules, sensors, run config).
    Alias("HP_CACHE_EVICTION_POLICY", "CACHE_EVICTION_POLICY"),
    Alias("HP_CACHE_THRESHOLD_PERCENT", "CACHE_THRESHOLD_PERCENT"),
    Alias("HP_CACHE_EVICTION_BATCH_SIZE", "CACHE_EVICTION_BATCH_SIZE"),
    Alias("HP_SYNC_INTERVAL_MS", "SYNC_INTERVAL_MS"),
    Alias("HP_SYNC_BATCH_SIZE", "SYNC_BATCH_SIZE"),
    Alias("HP_SYNC_MAX_RETRIES", "SYNC_MAX_RETRIES"),
    Alias("HP_HEALTH_CHECK_INTERVAL_MS", "HEALTH_CHECK_INTERVAL_MS"),
    # AI platform backend (design 001): its database `ai_platform` (resource `ai_postgres`).
    Alias("HP_AI_PG_HOST", "POSTGRES_HOST"),
    Alias("HP_AI_PG_PORT", "POSTGRES_PORT"),
    Alias("HP_AI_PG_DATABASE", "POSTGRES_DB"),
    Alias("HP_AI_PG_USER", "POSTGRES_USER"),
    Alias("HP_AI_PG_PASSWORD", "POSTGRES_PASSWORD", secret=True),
)
PLATFORM_NAME: dict[str, str] = {a.hp: a.platform for a in ALIASES}
# What NAS_ROOT_PATH stands for (HP_* set explicitly wins over the parsed value).
NAS_ROOT_VARS = ("HP_NAS_PROTOCOL", "HP_NAS_HOST", "HP_NAS_PORT", "HP_NAS_SHARE",
                 "HP_NAS_ROOT_DIR", "HP_NAS_LOCAL_ROOT")
SECRET_VARS = frozenset({a.hp for a in ALIASES if a.secret} | {a.platform for a in ALIASES
                                                                if a.secret})

_WARNED: set[tuple[str, str]] = set()
_WARNED_LOCK = threading.Lock()


def warn_both_set(hp: str, platform: str, same: bool) -> None:
    """Log, once per process per pair, that both names are set and HP_* is used. Names only:
    the values may be secrets."""
    with _WARNED_LOCK:
        if (hp, platform) in _WARNED:
            return
        _WARNED.add((hp, platform))
    agree = "they hold the same value" if same else "their values differ"
    log.warning("%s and %s are both set (%s); using %s and ignoring %s. Unset one of them "
                "to silence this warning.", hp, platform, agree, hp, platform)


class ResolvedEnv(Mapping[str, str]):
    """`env` plus the effective value of every HP_* name that has a platform alias.

    `source(name)` is the variable that supplied `name` (itself, its alias, or NAS_ROOT_PATH);
    `derived(name)` says the value was computed (from NAS_ROOT_PATH), so it can only be used
    as a plain value, never as an EnvVar read at launch."""

    def __init__(self, env: Mapping[str, str]):
        self.raw = env
        self._values: dict[str, str] = {}
        self._source: dict[str, str] = {}
        self._derived: set[str] = set()
        for alias in ALIASES:
            if alias.platform not in env:
                continue
            if alias.hp in env:
                warn_both_set(alias.hp, alias.platform, env[alias.hp] == env[alias.platform])
            else:
                self._values[alias.hp] = env[alias.platform]
                self._source[alias.hp] = alias.platform
        self._nas_root(env)

    def _nas_root(self, env: Mapping[str, str]) -> None:
        raw = env.get(NAS_ROOT_PATH, "").strip()
        if not raw:
            return
        parsed = parse_nas_root(raw, env.get(NAS_MOUNT_TYPE, ""))
        for name, value in parsed.hp_values().items():
            if name in env:
                warn_both_set(name, NAS_ROOT_PATH, env[name] == value)
                continue
            self._values[name] = value
            self._source[name] = NAS_ROOT_PATH
            self._derived.add(name)

    def __getitem__(self, name: str) -> str:
        if name in self.raw:
            return self.raw[name]
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        yield from self.raw
        yield from (k for k in self._values if k not in self.raw)

    def __len__(self) -> int:
        return len(set(self.raw) | set(self._values))

    def __contains__(self, name: object) -> bool:
        return name in self.raw or name in self._values

    def source(self, name: str) -> str:
        """The variable whose value `name` has (for errors and deferred EnvVars)."""
        return name if name in self.raw else self._source.get(name, name)

    def derived(self, name: str) -> bool:
        return name not in self.raw and name in self._derived

    def aliased(self) -> dict[str, str]:
        """HP_* name -> the platform variable that supplied it (for run tags and docs)."""
        return {k: v for k, v in self._source.items() if k not in self.raw}


def resolve(env: Mapping[str, str]) -> ResolvedEnv:
    """A view of `env` with the platform's names folded into ours; raises EnvVarError for a
    NAS_ROOT_PATH/NAS_MOUNT_TYPE that cannot be understood."""
    return env if isinstance(env, ResolvedEnv) else ResolvedEnv(env)


def either_name(hp: str) -> str:
    """`HP_X (or X)` for an error message that should tell both ways of setting it."""
    other = PLATFORM_NAME.get(hp)
    return f"{hp} (or {other})" if other else hp


def read_int(env: ResolvedEnv, hp: str, default: int, *, minimum: int | None = None,
             maximum: int | None = None, unit: str = "") -> int:
    """A whole-number setting by its HP_* name; the error names the variable really set."""
    raw = env.get(hp, "").strip()
    if not raw:
        return default
    name = env.source(hp)
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or (minimum is not None and value < minimum) \
            or (maximum is not None and value > maximum):
        bounds = (f" from {minimum} to {maximum}" if maximum is not None
                  else f" >= {minimum}" if minimum is not None else "")
        what = "is not a whole number" if value is None else "is out of range"
        raise EnvVarError(f"{name}={raw!r} {what}; set it to a whole number{bounds}{unit} "
                          f"or unset it for the default {default}")
    return value


def read_choice(env: ResolvedEnv, hp: str, default: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (compared case-insensitively, returned lower-case)."""
    raw = env.get(hp, "").strip()
    if not raw:
        return default
    if raw.lower() not in choices:
        raise EnvVarError(f"{env.source(hp)}={raw!r} is not one of "
                          f"{', '.join(c.upper() for c in choices)}; set it to one of them "
                          f"or unset it for the default {default.upper()}")
    return raw.lower()
