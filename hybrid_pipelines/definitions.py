"""The project's one Definitions object: every domain's definitions plus the resources."""

import dagster as dg

from . import health
from .ai_tiers import definitions as ai_tiers
from .hybrid_cache import definitions as hybrid_cache
from .media_catalog import definitions as media_catalog
from .resources import build_resources

defs = dg.Definitions.merge(
    media_catalog.defs,
    hybrid_cache.defs,
    ai_tiers.defs,
    health.defs,
    dg.Definitions(resources=build_resources()),
)
