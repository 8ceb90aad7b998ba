"""One ConfigurableResource per backend, configured from environment variables (EnvVar where
set, so secrets are resolved at run time and never stored in run config). The variables of each
resource are listed in README.md and in each module's ENV_VARS."""

from __future__ import annotations

import os
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


def _env(name: str, default: str) -> Any:
    """An EnvVar where the variable is set (resolved at run time, never stored in run
    config or logged), otherwise a plain default so definitions load anywhere."""
    return EnvVar(name) if name in os.environ else default


def _env_int(name: str, default: int) -> Any:
    return EnvVar.int(name) if name in os.environ else default


def build_resources() -> dict[str, Any]:
    return {
        "nas": NASResource(
            protocol=_env("HP_NAS_PROTOCOL", "local"), host=_env("HP_NAS_HOST", "127.0.0.1"),
            port=_env_int("HP_NAS_PORT", 445), share=_env("HP_NAS_SHARE", "media"),
            username=_env("HP_NAS_USERNAME", ""), password=_env("HP_NAS_PASSWORD", ""),
            local_root=_env("HP_NAS_LOCAL_ROOT", ".local/nas")),
        "seaweedfs": SeaweedFSResource(
            endpoint_url=_env("HP_SEAWEEDFS_S3_ENDPOINT", "http://127.0.0.1:8333"),
            master_url=_env("HP_SEAWEEDFS_MASTER_URL", ""),
            aws_access_key_id=_env("HP_SEAWEEDFS_ACCESS_KEY", ""),
            aws_secret_access_key=_env("HP_SEAWEEDFS_SECRET_KEY", ""),
            bucket=_env("HP_SEAWEEDFS_BUCKET", "media-cache")),
        "object_store": ObjectStoreResource(
            endpoint_url=_env("HP_OBJECT_STORE_ENDPOINT", ""),
            aws_access_key_id=_env("HP_OBJECT_STORE_ACCESS_KEY", ""),
            aws_secret_access_key=_env("HP_OBJECT_STORE_SECRET_KEY", ""),
            bucket=_env("HP_OBJECT_STORE_BUCKET", "cold-tier")),
        "hot_tier": JuiceFSResource(
            mount_path=_env("HP_JUICEFS_MOUNT_PATH", ".local/juicefs/mnt"),
            meta_url=_env("HP_JUICEFS_META_URL", ""),
            # Read at load time: a deployment fact, not a secret.
            require_mount=os.environ.get("HP_JUICEFS_REQUIRE_MOUNT", "false").lower() == "true"),
        "efs": EFSResource(mount_path=_env("HP_EFS_MOUNT_PATH", ".local/efs")),
        "postgres": PostgresResource(
            host=_env("HP_PG_HOST", "127.0.0.1"), port=_env_int("HP_PG_PORT", 5432),
            user=_env("HP_PG_USER", "postgres"), password=_env("HP_PG_PASSWORD", ""),
            database=_env("HP_PG_DATABASE", "hybrid")),
        "catalog_db": SQLiteCatalogResource(
            path=_env("HP_SQLITE_CATALOG_PATH", ".local/catalog/catalog.db")),
        "firestore": FirestoreResource(
            project=_env("HP_FIRESTORE_PROJECT", "demo-hybrid"),
            emulator_host=_env("FIRESTORE_EMULATOR_HOST", "")),
        "ffprobe": FFprobeResource(path=_env("HP_FFPROBE_PATH", "ffprobe"),
                                   timeout_s=float(os.environ.get("HP_FFPROBE_TIMEOUT", "30"))),
    }
