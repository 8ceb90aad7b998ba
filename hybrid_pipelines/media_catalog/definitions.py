"""Dagster definitions of the media_catalog domain."""

import dagster as dg

defs = dg.Definitions()
