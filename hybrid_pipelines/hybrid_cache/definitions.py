"""Dagster definitions of the hybrid_cache domain."""

import dagster as dg

defs = dg.Definitions()
