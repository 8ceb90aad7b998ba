"""The one place where the environment becomes resources: one ConfigurableResource per
backend, for the Definitions and for the console commands alike. The variables of each
resource are listed in README.md and in each module's ENV_VARS.

HP_RESOURCES_MODE picks how unset variables are treated:

- `local` (the default; the laptop stack): a variable that is set is used, an unset one
  falls back to the stack's default (127.0.0.1, the stack's ports and buckets, ...).
- `deployed` (set by deploy/docker and deploy/k8s): every connection variable and secret
  is required. The Definitions hold a plain `EnvVar` for each, so a missing one fails the
  run at launch naming the variable, instead of silently pointing at 127.0.0.1. Settings
  that are optional by design stay optional: the SeaweedFS master URL, the object store
  endpoint (empty = AWS S3), the Firestore emulator host (or Google credentials), the
  JuiceFS metadata URL, the ffprobe binary and timeout; and the NAS variables the chosen
  HP_NAS_PROTOCOL does not use.

`build_resources()` (no mapping) is for Definitions: values are EnvVars resolved when a run
launches, so secrets are never stored in run config. `build_resources(env)` is for console
commands: values are read from that mapping now (e.g. the environment over the local
stack's stack.env), and every missing or malformed variable is reported at once."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dagster import EnvVar

from hybrid_pipelines.resources import (
    EFSResource,
    FFprobeResource,
    FirestoreResource,
    JuiceFSResource,
    NASResource,
    ObjectStoreResource,
    PostgresResource,
    SeaweedFSResource,
    SQLiteCatalogResource,
)
from hybrid_pipelines.shared.env import EnvVarError, env_port

MODE_VAR = "HP_RESOURCES_MODE"
LOCAL, DEPLOYED = "local", "deployed"
MODES = (LOCAL, DEPLOYED)
RESOURCE_KEYS = ("nas", "seaweedfs", "object_store", "hot_tier", "efs", "postgres",
                 "sqlite_catalog", "firestore", "ffprobe")


def parse_mode(raw: str | None) -> str:
    """The resources mode from HP_RESOURCES_MODE's value (unset or blank: local)."""
    mode = (raw or "").strip().lower() or LOCAL
    if mode not in MODES:
        raise EnvVarError(
            f"{MODE_VAR}={raw!r} is not a resources mode; set it to one of: "
            f"{LOCAL} (laptop stack: unset variables take the stack's defaults such as "
            f"127.0.0.1), {DEPLOYED} (every connection variable and secret must be set)")
    return mode


class _Source:
    """Where the settings come from (os.environ or a given mapping), in which mode, and what
    was missing or malformed (collected for commands, reported together)."""

    def __init__(self, env: Mapping[str, str] | None):
        self.deferred = env is None  # Definitions: EnvVars resolved at launch
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.mode = parse_mode(self.getenv(MODE_VAR))
        self.missing: list[str] = []
        self.invalid: list[str] = []

    def getenv(self, name: str, default: str = "") -> str:
        """A setting read now, whatever the mode (load-time facts such as the mode itself)."""
        return self.env.get(name, default)

    def strict(self, required: bool) -> bool:
        return required and self.mode == DEPLOYED

    def check(self) -> None:
        problems = []
        if self.missing:
            names = ", ".join(self.missing)
            verb = "is" if len(self.missing) == 1 else "are"
            problems.append(
                f"{names} {verb} not set; with {MODE_VAR}={DEPLOYED} every connection variable "
                f"and secret must be set (no local defaults such as 127.0.0.1)")
        problems += self.invalid
        if problems:
            raise EnvVarError("; ".join(problems))


def _env(name: str, default: str, src: _Source, *, required: bool = True) -> Any:
    """A connection setting or secret (`required`) or an optional setting."""
    strict = src.strict(required)
    if src.deferred:
        # An EnvVar is resolved at launch, never stored in run config or logged.
        return EnvVar(name) if name in src.env or strict else default
    if name in src.env:
        return src.env[name]
    if strict:
        src.missing.append(name)
    return default


def _env_int(name: str, default: int, src: _Source, *, required: bool = True) -> Any:
    """A port number."""
    strict = src.strict(required)
    if src.deferred:
        return EnvVar.int(name) if name in src.env or strict else default
    if name not in src.env:
        if strict:
            src.missing.append(name)
        return default
    try:
        return env_port(src.env, name, default)
    except EnvVarError as exc:
        src.invalid.append(str(exc))
        return default


def _nas(src: _Source) -> NASResource:
    # The protocol (a deployment fact, read now) decides which variables are needed.
    smb = src.getenv("HP_NAS_PROTOCOL", "").strip() != "local"
    return NASResource(
        protocol=_env("HP_NAS_PROTOCOL", "local", src),
        host=_env("HP_NAS_HOST", "127.0.0.1", src, required=smb),
        port=_env_int("HP_NAS_PORT", 445, src, required=smb),
        share=_env("HP_NAS_SHARE", "media", src, required=smb),
        username=_env("HP_NAS_USERNAME", "", src, required=smb),
        password=_env("HP_NAS_PASSWORD", "", src, required=smb),
        local_root=_env("HP_NAS_LOCAL_ROOT", ".local/nas", src, required=not smb))


def _seaweedfs(src: _Source) -> SeaweedFSResource:
    return SeaweedFSResource(
        endpoint_url=_env("HP_SEAWEEDFS_S3_ENDPOINT", "http://127.0.0.1:8333", src),
        master_url=_env("HP_SEAWEEDFS_MASTER_URL", "", src, required=False),
        aws_access_key_id=_env("HP_SEAWEEDFS_ACCESS_KEY", "", src),
        aws_secret_access_key=_env("HP_SEAWEEDFS_SECRET_KEY", "", src),
        bucket=_env("HP_SEAWEEDFS_BUCKET", "media-cache", src))


def _object_store(src: _Source) -> ObjectStoreResource:
    return ObjectStoreResource(
        endpoint_url=_env("HP_OBJECT_STORE_ENDPOINT", "", src, required=False),
        aws_access_key_id=_env("HP_OBJECT_STORE_ACCESS_KEY", "", src),
        aws_secret_access_key=_env("HP_OBJECT_STORE_SECRET_KEY", "", src),
        bucket=_env("HP_OBJECT_STORE_BUCKET", "cold-tier", src))


def _hot_tier(src: _Source) -> JuiceFSResource:
    return JuiceFSResource(
        mount_path=_env("HP_JUICEFS_MOUNT_PATH", ".local/juicefs/mnt", src),
        meta_url=_env("HP_JUICEFS_META_URL", "", src, required=False),
        # Read now: a deployment fact, not a secret.
        require_mount=src.getenv("HP_JUICEFS_REQUIRE_MOUNT", "false").lower() == "true")


def _efs(src: _Source) -> EFSResource:
    return EFSResource(mount_path=_env("HP_EFS_MOUNT_PATH", ".local/efs", src))


def _postgres(src: _Source) -> PostgresResource:
    return PostgresResource(
        host=_env("HP_PG_HOST", "127.0.0.1", src), port=_env_int("HP_PG_PORT", 5432, src),
        user=_env("HP_PG_USER", "postgres", src), password=_env("HP_PG_PASSWORD", "", src),
        database=_env("HP_PG_DATABASE", "hybrid", src))


def _sqlite_catalog(src: _Source) -> SQLiteCatalogResource:
    return SQLiteCatalogResource(
        path=_env("HP_SQLITE_CATALOG_PATH", ".local/catalog/catalog.db", src),
        require_mount=src.getenv("HP_SQLITE_CATALOG_REQUIRE_MOUNT", "false").lower() == "true")


def _firestore(src: _Source) -> FirestoreResource:
    return FirestoreResource(
        project=_env("HP_FIRESTORE_PROJECT", "demo-hybrid", src),
        # The emulator (staging), or GOOGLE_APPLICATION_CREDENTIALS (production).
        emulator_host=_env("FIRESTORE_EMULATOR_HOST", "", src, required=False))


def _ffprobe(src: _Source) -> FFprobeResource:
    return FFprobeResource(path=_env("HP_FFPROBE_PATH", "ffprobe", src, required=False),
                           timeout_s=float(src.getenv("HP_FFPROBE_TIMEOUT", "30")))


_BUILDERS: dict[str, Callable[[_Source], Any]] = {
    "nas": _nas, "seaweedfs": _seaweedfs, "object_store": _object_store,
    "hot_tier": _hot_tier, "efs": _efs, "postgres": _postgres,
    "sqlite_catalog": _sqlite_catalog, "firestore": _firestore, "ffprobe": _ffprobe,
}


def resources_mode(env: Mapping[str, str] | None = None) -> str:
    """The mode HP_RESOURCES_MODE selects in `env` (default: the process environment)."""
    return _Source(env).mode


def build_resources(env: Mapping[str, str] | None = None, *,
                    only: Iterable[str] | None = None) -> dict[str, Any]:
    """Resource key -> resource, for every backend (or the keys in `only`).

    Without `env`: for Definitions, values are EnvVars resolved when a run launches.
    With `env` (a mapping such as os.environ, or it laid over the stack's stack.env): for
    console commands, values are read from it now; raises EnvVarError naming every missing
    (deployed mode) or malformed variable. A bad HP_RESOURCES_MODE raises EnvVarError
    either way."""
    src = _Source(env)
    keys = RESOURCE_KEYS if only is None else tuple(only)
    unknown = sorted(set(keys) - set(_BUILDERS))
    if unknown:
        raise ValueError(f"unknown resource key(s) {unknown}; known: {', '.join(RESOURCE_KEYS)}")
    built = {key: _BUILDERS[key](src) for key in keys}
    src.check()
    return built
