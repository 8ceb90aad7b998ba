"""Dagster definitions of the ai_tiers domain."""

import dagster as dg

from .assets import ASSETS
from .checks import CHECKS
from .jobs import JOBS
from .schedules import SCHEDULES
from .sensors import SENSORS

defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS, jobs=JOBS, schedules=SCHEDULES,
                      sensors=SENSORS)
