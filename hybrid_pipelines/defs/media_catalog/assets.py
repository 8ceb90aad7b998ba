"""The media catalog chain as Dagster assets, one partition per top-level NAS folder:

    nas_media_files -> media_probes -> catalog_db (SQLite) -> firestore_catalog

Thin wiring over scan.py, probing.py, catalog_build.py and firestore_sync.py.

The job runs its four steps in the run's own process (in-process executor): they are a
chain, one at a time in the catalog pool anyway, so a process per step only added a Python
start-up and a Dagster import per step to every upload's latency (issue #15)."""

import time

import dagster as dg

from hybrid_pipelines.defs.pools import CATALOG_POOL, CATALOG_TAGS
from hybrid_pipelines.media_catalog.catalog_build import build_catalog
from hybrid_pipelines.media_catalog.catalog_store import CatalogStore
from hybrid_pipelines.media_catalog.catalog_store.probe_results import ReprobeSelection
from hybrid_pipelines.media_catalog.firestore_sync import FirestoreSync
from hybrid_pipelines.media_catalog.nas_access import NASAccess
from hybrid_pipelines.media_catalog.probing import ProbeLimits, RetryPolicy, probe_partition
from hybrid_pipelines.media_catalog.rules.catalog_paths import folder_for
from hybrid_pipelines.media_catalog.rules.first_look import parse_looks, wait_before_scan
from hybrid_pipelines.media_catalog.scan import Scanner
from hybrid_pipelines.media_catalog.settings import PARTITIONS_NAME, CatalogSettings
from hybrid_pipelines.resources import (
    FFprobeResource,
    FirestoreResource,
    NASResource,
    SQLiteCatalogResource,
)

media_catalog_folders = dg.DynamicPartitionsDefinition(name=PARTITIONS_NAME)
GROUP = "media_catalog"
COUNTS_CHECK = "sqlite_firestore_counts_match"


class ScanConfig(dg.Config):
    full_reconcile: bool = False  # list every directory, whatever its timestamp says
    retry_delays_s: list[float] | None = None  # default HP_CATALOG_RETRY_DELAYS or 1,2,4
    min_stable_s: float | None = None
    quiet_s: float | None = None
    batch_size: int | None = None  # files per SQLite transaction and checkpoint (100)
    # First looks the pending sensor took, {path: [size, mtime, first seen at]}: the scan
    # takes the second look (waiting until it is due, at most MAX_VOUCH_WAIT_S) and a file
    # still in that state is stable at once (rules/first_look.py).
    vouched: dict[str, list[float]] | None = None
    # First looks not due yet, handed along: recorded pending from the sensor's look.
    first_looks: dict[str, list[float]] | None = None


MAX_VOUCH_WAIT_S = 20.0  # the sensor requests the run 10 s early (sensors.RUN_LEAD_S)


class ProbeConfig(dg.Config):
    workers: int | None = None
    retry_delays_s: list[float] | None = None
    # Probe these again now, whatever their verdict (the nightly reconcile's option
    # HP_CATALOG_NIGHTLY_REPROBE; `hybrid-pipelines catalog reprobe` marks files itself).
    reprobe_invalid: bool = False  # every invalid file of the partition
    reprobe_error: str | None = None  # invalid files whose error contains this text


class CatalogBuildConfig(dg.Config):
    full_rebuild: bool = False


class SyncConfig(dg.Config):
    full_resync: bool = False  # resend every document and delete strays
    batch_size: int | None = None
    timeout_s: float | None = None


def _settings(**overrides: object) -> CatalogSettings:
    return CatalogSettings.from_env().with_overrides(**overrides)


@dg.asset(
    partitions_def=media_catalog_folders, group_name=GROUP, pool=CATALOG_POOL,
    kinds={"smb", "sqlite"},
    description="Files of one top-level NAS folder as recorded in the SQLite catalog: path, "
                "size, mtime, status (pending while being written, stable, valid, invalid, "
                "deleted). Incremental: only directories whose timestamp moved are listed.",
)
def nas_media_files(context: dg.AssetExecutionContext, config: ScanConfig, nas: NASResource,
                    sqlite_catalog: SQLiteCatalogResource) -> dg.MaterializeResult:
    settings = _settings(retry_delays_s=config.retry_delays_s, min_stable_s=config.min_stable_s,
                         quiet_s=config.quiet_s, batch_size=config.batch_size)
    pk = context.partition_key
    vouched = parse_looks(config.vouched)
    wait = wait_before_scan(vouched.values(), time.time(), settings.stability, MAX_VOUCH_WAIT_S)
    if wait > 0:
        context.log.info(f"second look at {len(vouched)} file(s) due in {wait:.1f} s: waiting")
        time.sleep(wait)
    sqlite_catalog.apply_schema("catalog")
    with sqlite_catalog.connect() as conn:
        store = CatalogStore(conn)
        access = NASAccess(nas, settings.retry_delays_s, log=context.log.warning)
        report = Scanner(store, access, settings, log=context.log.info).scan(
            pk, folder_for(pk), full=config.full_reconcile,
            vouched={**parse_looks(config.first_looks), **vouched})
    if vouched:
        context.log.info(f"{report.vouched_stable} of {len(vouched)} file(s) first seen by "
                         "the pending sensor unchanged since: stable")
    context.log.info(
        f"scan of {pk!r} ({report.mode}{', resumed' if report.resumed else ''}): "
        f"{report.found} files, {report.new} new, {report.changed} changed, "
        f"{report.deleted} deleted, {report.renamed} renamed, {report.pending} still being "
        f"written; {report.dirs_listed} directories listed, {report.dirs_skipped} skipped")
    return dg.MaterializeResult(metadata=report.metadata())


@dg.asset(
    partitions_def=media_catalog_folders, group_name=GROUP, pool=CATALOG_POOL,
    deps=[nas_media_files],
    kinds={"ffmpeg", "sqlite"},
    description="ffprobe results of the folder's stable files, read partially over the NAS; "
                "corrupt, truncated, empty and non-media files are recorded invalid with the "
                "reason, failure class and ffprobe version. Timeouts and NAS faults are "
                "retried with backoff; a new ffprobe version re-probes invalid files.",
)
def media_probes(context: dg.AssetExecutionContext, config: ProbeConfig, nas: NASResource,
                 sqlite_catalog: SQLiteCatalogResource,
                 ffprobe: FFprobeResource) -> dg.MaterializeResult:
    settings = _settings(retry_delays_s=config.retry_delays_s, probe_workers=config.workers)
    ffprobe.require_healthy()
    sqlite_catalog.apply_schema("catalog")
    with sqlite_catalog.connect() as conn:
        store = CatalogStore(conn)
        if config.reprobe_invalid or config.reprobe_error:
            marked = store.mark_for_reprobe(ReprobeSelection(
                partition_key=context.partition_key, invalid_only=True,
                error=config.reprobe_error))
            context.log.info(f"re-probe requested for {sum(marked.values())} invalid file(s)"
                             + (f" whose error contains {config.reprobe_error!r}"
                                if config.reprobe_error else ""))
        access = NASAccess(nas, settings.retry_delays_s, log=context.log.warning)
        report = probe_partition(store, access, context.partition_key,
                                 ffprobe_path=ffprobe.binary(), timeout_s=ffprobe.timeout_s,
                                 workers=settings.probe_workers, batch_size=settings.batch_size,
                                 log=context.log.info,
                                 limits=ProbeLimits(settings.probe_max_read_bytes,
                                                    settings.probe_memory_limit_bytes),
                                 retry=RetryPolicy(settings.probe_retry_backoff_s,
                                                   settings.probe_max_attempts))
        counts, _ = store.partition_summary(context.partition_key)
    meta: dict[str, int | float] = report.metadata()
    meta.update({f"files_{k}": v for k, v in sorted(counts.items())})
    return dg.MaterializeResult(metadata=meta)


@dg.asset(
    name="catalog_db", partitions_def=media_catalog_folders, group_name=GROUP, pool=CATALOG_POOL,
    deps=[media_probes], kinds={"sqlite"},
    description="Catalogs, series, contents and players of the folder in the local SQLite "
                "catalog, derived from the NAS paths by configurable rules (HP_CATALOG_RULES).",
)
def catalog_db_asset(context: dg.AssetExecutionContext, config: CatalogBuildConfig,
                     sqlite_catalog: SQLiteCatalogResource) -> dg.MaterializeResult:
    settings = _settings()
    sqlite_catalog.apply_schema("catalog")
    with sqlite_catalog.connect() as conn:
        report = build_catalog(CatalogStore(conn), settings, context.partition_key,
                               full=config.full_rebuild, log=context.log.info)
    context.log.info(f"catalog {context.partition_key!r}: {report.series} series, "
                     f"{report.contents} contents, {report.files} files, "
                     f"{report.players} players")
    return dg.MaterializeResult(metadata=report.metadata())


@dg.asset(
    partitions_def=media_catalog_folders, group_name=GROUP, pool=CATALOG_POOL,
    deps=[catalog_db_asset],
    kinds={"firestore"},
    check_specs=[dg.AssetCheckSpec(
        COUNTS_CHECK, asset="firestore_catalog",
        description="Live files, contents and series of the partition: SQLite vs Firestore.")],
    description="The folder's catalog in Firestore (catalogs/series/contents, files, players), "
                "synced incrementally from SQLite; deletions are propagated.",
)
def firestore_catalog(context: dg.AssetExecutionContext, config: SyncConfig,
                      sqlite_catalog: SQLiteCatalogResource, firestore: FirestoreResource):
    settings = _settings(firestore_batch=config.batch_size)
    pk = context.partition_key
    sqlite_catalog.apply_schema("catalog")
    with sqlite_catalog.connect() as conn:
        store = CatalogStore(conn)
        sync = FirestoreSync(store, firestore, batch_size=settings.firestore_batch,
                             timeout_s=config.timeout_s, log=context.log.warning)
        report = sync.sync_partition(pk, full=config.full_resync)
        local = store.live_counts(pk)
        remote = sync.firestore_counts(pk)
    context.log.info(f"Firestore {pk!r}: {report.synced} written, {report.deleted} deleted in "
                     f"{report.batches} batch(es); cursor {report.cursor}")
    yield dg.MaterializeResult(metadata={**report.metadata(),
                                         **{f"sqlite_{k}": v for k, v in local.items()},
                                         **{f"firestore_{k}": v for k, v in remote.items()}})
    mismatched = sorted(k for k in local if local[k] != remote.get(k))
    yield dg.AssetCheckResult(
        check_name=COUNTS_CHECK, passed=not mismatched,
        severity=dg.AssetCheckSeverity.ERROR,
        description="counts match" if not mismatched else
        f"SQLite and Firestore differ on {', '.join(mismatched)}; run with full_resync",
        metadata={"partition": pk, **{f"sqlite_{k}": v for k, v in local.items()},
                  **{f"firestore_{k}": v for k, v in remote.items()}})


media_catalog_job = dg.define_asset_job(
    "media_catalog_job", selection=dg.AssetSelection.groups(GROUP),
    partitions_def=media_catalog_folders, tags=CATALOG_TAGS,
    executor_def=dg.in_process_executor,
    description="Scan, probe, catalog and sync one top-level NAS folder (one partition).",
)

FULL_RECONCILE_CONFIG = dg.RunConfig(ops={
    "nas_media_files": ScanConfig(full_reconcile=True),
    "catalog_db": CatalogBuildConfig(full_rebuild=True),
    "firestore_catalog": SyncConfig(full_resync=True),
})
