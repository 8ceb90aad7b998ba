"""Glue shared by the hybrid-cache assets, checks and sensors (no Dagster objects here).

The backends' health is the resources' own health(): the breakers probe SeaweedFS with
SeaweedFSResource.health and the NAS with NASResource.health, the same checks backend_health
shows, so the cache jobs and the health asset never disagree. The S3 client is the one the
SeaweedFS resource owns (seaweedfs.get_client())."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from hybrid_pipelines.hybrid_cache.health_gate import NAS, SEAWEEDFS, GateResult, gate
from hybrid_pipelines.hybrid_cache.rules.circuit_breaker import BreakerPolicy
from hybrid_pipelines.resources import NASResource, PostgresResource, SeaweedFSResource
from hybrid_pipelines.resources.errors import BackendError, Health
from hybrid_pipelines.resources.postgres import ENV_VARS as PG_ENV_VARS
from hybrid_pipelines.resources.postgres import explain_pg_error

SCHEMA = "hybrid_cache"


def prepare(postgres: PostgresResource) -> None:
    """Apply the schema (once per process and database: a sensor tick runs no DDL after the
    first); PostgreSQL being unreachable is a BackendError naming the server and the HP_PG_*
    variables, not a raw psycopg traceback."""
    try:
        postgres.apply_schema(SCHEMA)
    except psycopg.OperationalError as exc:
        raise BackendError("PostgreSQL", postgres.address, explain_pg_error(exc),
                           PG_ENV_VARS) from exc


def probes(seaweedfs: SeaweedFSResource, nas: NASResource) -> dict[str, Callable[[], Health]]:
    """The health checks of both backends: what the breakers probe, and what the engines
    call after an error to tell an outage from a bad file."""
    return {SEAWEEDFS: seaweedfs.health, NAS: nas.health}


def backend_gates(conn, seaweedfs: SeaweedFSResource, nas: NASResource,
                  policy: BreakerPolicy) -> dict[str, GateResult]:
    """Ask both breakers (and probe the backends they let through)."""
    checks = probes(seaweedfs, nas)
    return {name: gate(conn, name, checks[name], policy) for name in (SEAWEEDFS, NAS)}


def health_metadata(gates: dict[str, GateResult]) -> dict[str, int]:
    return {"seaweed_health": int(gates[SEAWEEDFS].healthy),
            "nas_health": int(gates[NAS].healthy)}


def blocked(gates: dict[str, GateResult], needed: tuple[str, ...]) -> str:
    """Why the job cannot run ('' when every needed backend is usable)."""
    return "; ".join(f"{name}: {gates[name].reason}" for name in needed
                     if not gates[name].healthy)
