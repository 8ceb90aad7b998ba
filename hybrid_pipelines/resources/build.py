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
stack's stack.env), and every missing or malformed variable is reported at once.

Every HP_* variable that the platform's services know under another name (SEAWEED_S3_ENDPOINT,
NAS_ROOT_PATH, POSTGRES_HOST, ...) answers to that name too: shared/platform_env.py holds the
one alias table; where both are set HP_* wins and a warning names both.

Two PostgreSQL resources, as the designs have them: `postgres` is the file server's database
(HP_PG_*, table file_metadata and the project's own tables), `ai_postgres` the AI platform's
`ai_platform` (HP_AI_PG_* or the platform's POSTGRES_*). They may share a server: each unset
HP_AI_PG_* takes the file server's value, except the database, which is `ai_platform`."""

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
from hybrid_pipelines.resources.alerting import AlertingResource, alerting_from_env
from hybrid_pipelines.shared.env import EnvVarError, env_port
from hybrid_pipelines.shared.platform_env import (
    PLATFORM_NAME,
    ResolvedEnv,
    read_int,
    resolve,
)

MODE_VAR = "HP_RESOURCES_MODE"
LOCAL, DEPLOYED = "local", "deployed"
MODES = (LOCAL, DEPLOYED)
RESOURCE_KEYS = ("nas", "seaweedfs", "object_store", "hot_tier", "efs", "postgres",
                 "ai_postgres", "sqlite_catalog", "firestore", "ffprobe", "alerting")
AI_DATABASE = "ai_platform"  # the AI platform design's database name


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
        # The platform's names folded into ours (raises naming a bad NAS_ROOT_PATH).
        self.env: ResolvedEnv = resolve(os.environ if env is None else env)
        self.mode = parse_mode(self.getenv(MODE_VAR))
        self.missing: list[str] = []
        self.invalid: list[str] = []
        self.notes: list[str] = []

    def getenv(self, name: str, default: str = "") -> str:
        """A setting read now, whatever the mode (load-time facts such as the mode itself)."""
        return self.env.get(name, default)

    def strict(self, required: bool) -> bool:
        return required and self.mode == DEPLOYED

    def check(self) -> None:
        problems = []
        if self.missing:
            names = ", ".join(dict.fromkeys(self.missing))
            verb = "is" if len(set(self.missing)) == 1 else "are"
            also = sorted({f"{PLATFORM_NAME[n]} for {n}" for n in self.missing
                           if n in PLATFORM_NAME})
            problems.append(
                f"{names} {verb} not set; with {MODE_VAR}={DEPLOYED} every connection variable "
                f"and secret must be set (no local defaults such as 127.0.0.1)"
                + (f"; the platform's own names work as well: {', '.join(also)}" if also else ""))
        problems += self.notes if self.missing else []
        problems += self.invalid
        if problems:
            raise EnvVarError("; ".join(problems))


def _env(name: str, default: str, src: _Source, *, required: bool = True) -> Any:
    """A connection setting or secret (`required`) or an optional setting."""
    strict = src.strict(required)
    if src.deferred:
        # An EnvVar is resolved at launch, never stored in run config or logged: it reads the
        # variable that is really set (ours, or the platform's alias). A value derived from
        # NAS_ROOT_PATH is no variable of its own: it is used as read now (never a secret).
        if name in src.env:
            return src.env[name] if src.env.derived(name) else EnvVar(src.env.source(name))
        return EnvVar(name) if strict else default
    if name in src.env:
        return src.env[name]
    if strict:
        src.missing.append(name)
    return default


def _env_int(name: str, default: int, src: _Source, *, required: bool = True) -> Any:
    """A port number."""
    strict = src.strict(required)
    source = src.env.source(name)
    if src.deferred:
        if name in src.env:
            return env_port(src.env, name, default) if src.env.derived(name) \
                else EnvVar.int(source)
        return EnvVar.int(name) if strict else default
    if name not in src.env:
        if strict:
            src.missing.append(name)
        return default
    try:
        return env_port({source: src.env[name]}, source, default)
    except EnvVarError as exc:
        src.invalid.append(str(exc))
        return default


def _seconds_from_ms(name: str, default_ms: int, src: _Source) -> float:
    """A timeout in milliseconds (the platform's unit), read now: a tuning value, no secret.
    Malformed: reported with the other problems (commands) or stops loading (Definitions)."""
    try:
        return read_int(src.env, name, default_ms, minimum=1, unit=" of milliseconds") / 1000
    except EnvVarError as exc:
        if src.deferred:
            raise
        src.invalid.append(str(exc))
        return default_ms / 1000


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
        local_root=_env("HP_NAS_LOCAL_ROOT", ".local/nas", src, required=not smb),
        # The folder inside the share the jobs own ('' = the whole share); read now, since
        # NAS_ROOT_PATH may be what names it.
        root_dir=src.env.get("HP_NAS_ROOT_DIR", ""),
        mount_path=src.env.get("HP_NAS_MOUNT_PATH", ""),
        timeout_s=_seconds_from_ms("HP_NAS_TIMEOUT_MS", 10_000, src))


def _seaweedfs(src: _Source) -> SeaweedFSResource:
    return SeaweedFSResource(
        endpoint_url=_env("HP_SEAWEEDFS_S3_ENDPOINT", "http://127.0.0.1:8333", src),
        master_url=_env("HP_SEAWEEDFS_MASTER_URL", "", src, required=False),
        aws_access_key_id=_env("HP_SEAWEEDFS_ACCESS_KEY", "", src),
        aws_secret_access_key=_env("HP_SEAWEEDFS_SECRET_KEY", "", src),
        bucket=_env("HP_SEAWEEDFS_BUCKET", "media-cache", src),
        connect_timeout_s=_seconds_from_ms("HP_SEAWEEDFS_TIMEOUT_MS", 5_000, src))


def _object_store(src: _Source) -> ObjectStoreResource:
    return ObjectStoreResource(
        endpoint_url=_env("HP_OBJECT_STORE_ENDPOINT", "", src, required=False),
        aws_access_key_id=_env("HP_OBJECT_STORE_ACCESS_KEY", "", src),
        aws_secret_access_key=_env("HP_OBJECT_STORE_SECRET_KEY", "", src),
        bucket=_env("HP_OBJECT_STORE_BUCKET", "cold-models", src),
        # Optional: the AI platform design's bucket name unless set.
        outputs_bucket=_env("HP_OBJECT_STORE_OUTPUTS_BUCKET", "generated-outputs", src,
                            required=False))


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


# HP_AI_PG_* -> the file server's variable an unset one falls back to (same server).
_AI_PG = {"HP_AI_PG_HOST": "HP_PG_HOST", "HP_AI_PG_PORT": "HP_PG_PORT",
          "HP_AI_PG_USER": "HP_PG_USER", "HP_AI_PG_PASSWORD": "HP_PG_PASSWORD"}


def _ai_pg(name: str, src: _Source, default: str) -> Any:
    # Names from the table, not literals: an HP_AI_PG_* variable is optional (the contract
    # tests list literal reads as required), as it falls back to the file server's.
    if name in src.env:
        return _env(name, default, src)
    return _env(_AI_PG[name], default, src)


def _ai_postgres(src: _Source) -> PostgresResource:
    port_var = "HP_AI_PG_PORT" if "HP_AI_PG_PORT" in src.env else _AI_PG["HP_AI_PG_PORT"]
    before = len(src.missing)
    res = PostgresResource(
        host=_ai_pg("HP_AI_PG_HOST", src, "127.0.0.1"), port=_env_int(port_var, 5432, src),
        user=_ai_pg("HP_AI_PG_USER", src, "postgres"),
        password=_ai_pg("HP_AI_PG_PASSWORD", src, ""),
        database=src.env.get("HP_AI_PG_DATABASE", "").strip() or AI_DATABASE,
        settings_prefix="HP_AI_PG")
    if len(src.missing) > before:
        src.notes.append(
            "the AI platform's database (ai_postgres) takes HP_AI_PG_HOST/PORT/USER/PASSWORD "
            "or the AI backend's POSTGRES_HOST/PORT/USER/PASSWORD, each unset one falling back "
            "to the file server's HP_PG_* (database: HP_AI_PG_DATABASE or POSTGRES_DB, default "
            f"{AI_DATABASE})")
    return res


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


def _alerting(src: _Source) -> AlertingResource:
    # Optional in every mode: no channel configured = alerts recorded (alert_history), not sent.
    try:
        return alerting_from_env(None if src.deferred else src.env)
    except ValueError as exc:
        if src.deferred:
            raise
        src.invalid.append(str(exc))
        return AlertingResource()


_BUILDERS: dict[str, Callable[[_Source], Any]] = {
    "nas": _nas, "seaweedfs": _seaweedfs, "object_store": _object_store,
    "hot_tier": _hot_tier, "efs": _efs, "postgres": _postgres, "ai_postgres": _ai_postgres,
    "sqlite_catalog": _sqlite_catalog, "firestore": _firestore, "ffprobe": _ffprobe,
    "alerting": _alerting,
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
