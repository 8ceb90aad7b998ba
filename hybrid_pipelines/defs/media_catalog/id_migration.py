"""One-off job: move the Firestore catalog from slug+hash document ids to readable ids.

Run it once after upgrading, from the UI or `dagster job execute -j firestore_id_migration`;
until it has run, a sync of a partition synced the old way stops with an error naming it.
Idempotent: a rerun (after a crash, or by mistake) moves only what is still at an old id."""

import dagster as dg

from hybrid_pipelines.defs.pools import CATALOG_TAGS
from hybrid_pipelines.media_catalog.catalog_store import CatalogStore
from hybrid_pipelines.media_catalog.firestore_migration import FirestoreIdMigration
from hybrid_pipelines.resources import FirestoreResource, SQLiteCatalogResource


class IdMigrationConfig(dg.Config):
    batch_size: int = 500  # writes per Firestore batch (a move is two: set and delete)


@dg.op(description="Moves every catalog, series, content and player document from its "
                   "slug+hash id to its readable id (set and delete in one batch), relinks "
                   "the file documents and marks _sync_metadata with the id scheme.")
def move_firestore_ids(context: dg.OpExecutionContext, config: IdMigrationConfig,
                       sqlite_catalog: SQLiteCatalogResource,
                       firestore: FirestoreResource) -> dg.Output[int]:
    sqlite_catalog.apply_schema("catalog")
    with sqlite_catalog.connect() as conn:
        report = FirestoreIdMigration(CatalogStore(conn), firestore,
                                      batch_size=config.batch_size,
                                      log=context.log.info).run()
    context.log.info(f"moved {report.moved} document(s) in {report.batches} batch(es), "
                     f"relinked {report.files_relinked} file document(s); "
                     f"{report.not_at_old_id} were not at an old id")
    return dg.Output(report.moved, metadata=report.metadata())


@dg.job(tags=CATALOG_TAGS,
        description="One-off: Firestore catalog documents from slug+hash ids to the readable "
                    "ids the web app looks up (catalogs/WSOP/series/WSOP 2024/...).")
def firestore_id_migration() -> None:
    move_firestore_ids()
