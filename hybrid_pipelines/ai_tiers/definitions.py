"""Dagster definitions of the ai_tiers domain."""

import dagster as dg

defs = dg.Definitions()
