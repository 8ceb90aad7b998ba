"""Glue shared by the hybrid-cache assets, checks and sensors (no Dagster objects here)."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import psycopg
import requests

from hybrid_pipelines.hybrid_cache.health_gate import NAS, SEAWEEDFS, GateResult, gate
from hybrid_pipelines.hybrid_cache.rules.circuit_breaker import BreakerPolicy
from hybrid_pipelines.resources import NASResource, PostgresResource, SeaweedFSResource
from hybrid_pipelines.resources.errors import BackendError, Health, probe_health
from hybrid_pipelines.resources.object_store import explain_s3_error
from hybrid_pipelines.resources.postgres import ENV_VARS as PG_ENV_VARS
from hybrid_pipelines.resources.postgres import explain_pg_error

SCHEMA = "hybrid_cache"
_CLIENTS: dict[tuple[Any, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def prepare(postgres: PostgresResource) -> None:
    """Apply the schema; PostgreSQL being unreachable is a BackendError naming the server and
    the HP_PG_* variables, not a raw psycopg traceback."""
    try:
        postgres.apply_schema(SCHEMA)
    except psycopg.OperationalError as exc:
        raise BackendError("PostgreSQL", postgres.address, explain_pg_error(exc),
                           PG_ENV_VARS) from exc


def s3_client(seaweedfs: SeaweedFSResource) -> Any:
    """One boto3 client per configuration and process: creating one costs ~0.3 s, and a run
    needs it for the health probe, the work and every probe after an error."""
    secret = hashlib.sha256((seaweedfs.aws_secret_access_key or "").encode()).hexdigest()
    key = (seaweedfs.endpoint_url, seaweedfs.aws_access_key_id, secret, seaweedfs.max_attempts,
           seaweedfs.connect_timeout_s, seaweedfs.read_timeout_s, seaweedfs.region_name)
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            _CLIENTS[key] = seaweedfs.get_client()
        return _CLIENTS[key]


def seaweed_health(seaweedfs: SeaweedFSResource) -> Health:
    """Master (healthz, and at least one volume server registered) and S3 gateway (the bucket
    answers). After a restart the gateway and the master answer seconds before the volume
    servers re-register, and reads fail with HTTP 500 until they do."""

    def check() -> str:
        detail = ""
        if seaweedfs.master_url:
            timeout = seaweedfs.connect_timeout_s
            r = requests.get(f"{seaweedfs.master_url}/cluster/healthz", timeout=timeout)
            if not r.ok:
                raise RuntimeError(f"master unhealthy (HTTP {r.status_code})")
            r = requests.get(f"{seaweedfs.master_url}/dir/status", timeout=timeout)
            r.raise_for_status()
            topology = r.json().get("Topology", {})
            nodes = sum(len(rack.get("DataNodes") or [])
                        for dc in topology.get("DataCenters") or []
                        for rack in dc.get("Racks") or [])
            if nodes == 0:
                raise RuntimeError("the master answers but no volume server is registered yet")
            detail = f"master ok, {nodes} volume server(s); "
        s3_client(seaweedfs).head_bucket(Bucket=seaweedfs.bucket)
        return detail + "bucket reachable"

    return probe_health("SeaweedFS", seaweedfs.address, check, explain_s3_error)


def backend_gates(conn, seaweedfs: SeaweedFSResource, nas: NASResource,
                  policy: BreakerPolicy) -> dict[str, GateResult]:
    """Ask both breakers (and probe the backends they let through)."""
    return {SEAWEEDFS: gate(conn, SEAWEEDFS, lambda: seaweed_health(seaweedfs), policy),
            NAS: gate(conn, NAS, nas.health, policy)}


def probes(seaweedfs: SeaweedFSResource, nas: NASResource) -> dict:
    """Health checks the engines call after an error, to tell an outage from a bad file."""
    return {SEAWEEDFS: lambda: seaweed_health(seaweedfs), NAS: nas.health}


def health_metadata(gates: dict[str, GateResult]) -> dict[str, int]:
    return {"seaweed_health": int(gates[SEAWEEDFS].healthy),
            "nas_health": int(gates[NAS].healthy)}


def blocked(gates: dict[str, GateResult], needed: tuple[str, ...]) -> str:
    """Why the job cannot run ('' when every needed backend is usable)."""
    return "; ".join(f"{name}: {gates[name].reason}" for name in needed
                     if not gates[name].healthy)
