"""Dagster wiring only, one folder per domain, found by dg.load_from_defs_folder."""
