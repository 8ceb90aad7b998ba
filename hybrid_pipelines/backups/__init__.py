"""Monthly backups that restore: pg_dump of each database, `juicefs dump` of the hot tier's
metadata and a mirror of each bucket, all under one dated prefix of a backup bucket, each part
verified before retention may delete anything. Plain Python (defs/backups wires it to Dagster).
"""
