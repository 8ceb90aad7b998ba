"""Dagster definitions of the media_catalog domain."""

import dagster as dg

from .assets import CHAIN, media_catalog_job
from .schedules import media_catalog_nightly_reconcile
from .sensors import media_catalog_nas_sensor

defs = dg.Definitions(
    assets=CHAIN,
    jobs=[media_catalog_job],
    sensors=[media_catalog_nas_sensor],
    schedules=[media_catalog_nightly_reconcile],
)
