"""One ConfigurableResource per backend; `build.py` turns the environment into them."""

from hybrid_pipelines.resources.alerting import AlertingResource
from hybrid_pipelines.resources.errors import BackendError, Health
from hybrid_pipelines.resources.ffprobe import FFprobeResource
from hybrid_pipelines.resources.filesystems import EFSResource, JuiceFSResource
from hybrid_pipelines.resources.firestore import FirestoreResource
from hybrid_pipelines.resources.nas import NASResource
from hybrid_pipelines.resources.object_store import ObjectStoreResource, SeaweedFSResource
from hybrid_pipelines.resources.postgres import PostgresResource
from hybrid_pipelines.resources.sqlite_catalog import SQLiteCatalogResource

__all__ = [
    "AlertingResource", "BackendError", "EFSResource", "FFprobeResource", "FirestoreResource",
    "Health", "JuiceFSResource", "NASResource", "ObjectStoreResource", "PostgresResource",
    "SQLiteCatalogResource", "SeaweedFSResource",
]
