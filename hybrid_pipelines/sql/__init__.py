"""The project's schemas: SQL files and the online migration steps (see migrations.py)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hybrid_pipelines.sql.migrations import Step

# Schemas migrated step by step (module hybrid_pipelines.sql.<name>_schema, STEPS); the others
# are plain idempotent SQL files.
STEPPED_SCHEMAS: tuple[str, ...] = ("hybrid_cache", "ai_tiers")
# Which PostgreSQL resource (resources/build.py key) holds each schema.
SCHEMA_RESOURCE: dict[str, str] = {"hybrid_cache": "postgres", "ai_tiers": "ai_postgres"}


def schema_steps(name: str) -> Sequence[Step] | None:
    """The step list of schema `name`, or None when it is a plain SQL file."""
    if name not in STEPPED_SCHEMAS:
        return None
    return importlib.import_module(f"hybrid_pipelines.sql.{name}_schema").STEPS
