"""The consistency audit as an asset check on seaweedfs_cache, and the reconcile op."""

from dataclasses import replace

import dagster as dg

from hybrid_pipelines.defs.hybrid_cache.assets import seaweedfs_cache
from hybrid_pipelines.defs.hybrid_cache.config import AuditConfig
from hybrid_pipelines.hybrid_cache.audit import run_audit, run_reconcile
from hybrid_pipelines.hybrid_cache.health_gate import NAS, SEAWEEDFS
from hybrid_pipelines.hybrid_cache.rules.circuit_breaker import BreakerPolicy
from hybrid_pipelines.hybrid_cache.runtime import (
    backend_gates,
    blocked,
    health_metadata,
    prepare,
)
from hybrid_pipelines.resources import NASResource, PostgresResource, SeaweedFSResource


@dg.asset_check(
    asset=seaweedfs_cache,
    description="file_metadata against the objects in SeaweedFS and the files on the NAS: "
                "missing, orphaned, size or hash mismatch (hashes on a random sample). Fails "
                "with the drift as counts and a percentage; ERROR when a file may be lost.",
)
def cache_consistency(context: dg.AssetCheckExecutionContext, config: AuditConfig,
                      postgres: PostgresResource, seaweedfs: SeaweedFSResource,
                      nas: NASResource) -> dg.AssetCheckResult:
    # bad run config fails before any backend is touched
    settings = replace(config.settings(), location=nas.root())
    prepare(postgres)
    with postgres.connect(autocommit=True) as conn:
        gates = backend_gates(conn, seaweedfs, nas, BreakerPolicy())
        if reason := blocked(gates, (SEAWEEDFS, NAS)):
            return dg.AssetCheckResult(
                passed=False, severity=dg.AssetCheckSeverity.WARN,
                description=f"audit not possible: {reason}",
                metadata={**health_metadata(gates), "skipped": 1})
        report = run_audit(conn, seaweedfs.get_client(), seaweedfs.bucket, nas.fs(),
                           settings, master_url=seaweedfs.master_url)
    for err in report.errors[:20]:
        context.log.warning(err)
    drift = report.drift_items
    return dg.AssetCheckResult(
        passed=drift == 0,
        severity=dg.AssetCheckSeverity.ERROR if report.data_at_risk else
        dg.AssetCheckSeverity.WARN,
        description=(f"{drift} drifted items ({report.drift_percent}% of "
                     f"{report.rows_total} files); {report.data_at_risk} at risk"),
        metadata={**report.metadata(), **health_metadata(gates)},
    )


@dg.op(description="Audit, then fix the safe drift: re-queue synced files missing on the NAS "
                   "(cached copy intact), clear cache_status of vanished cached objects (NAS "
                   "copy present), mark corrupt NAS copies unverified, remove stale temporary "
                   "files. Everything else is reported, untouched.")
def reconcile_cache(context: dg.OpExecutionContext, config: AuditConfig,
                    postgres: PostgresResource, seaweedfs: SeaweedFSResource,
                    nas: NASResource) -> None:
    # bad run config fails before any backend is touched
    settings = replace(config.settings(), location=nas.root())
    prepare(postgres)
    with postgres.connect(autocommit=True) as conn:
        gates = backend_gates(conn, seaweedfs, nas, BreakerPolicy())
        if reason := blocked(gates, (SEAWEEDFS, NAS)):
            raise dg.Failure(f"reconcile needs both backends: {reason}",
                             metadata=health_metadata(gates))
        result = run_reconcile(conn, seaweedfs.get_client(), seaweedfs.bucket, nas.fs(),
                               settings, master_url=seaweedfs.master_url)
    for err in result.audit.errors[:20]:
        context.log.warning(err)
    meta = result.metadata()
    context.log_event(dg.AssetObservation(asset_key=seaweedfs_cache.key, metadata=meta))
    context.add_output_metadata(meta)
    context.log.info(f"reconcile: re-queued {result.requeued}, cleared {result.cache_cleared}, "
                     f"unverified {result.unverified}, removed {result.partials_removed} "
                     f"temporary files; {meta['left_for_operator']} items left for an operator")
