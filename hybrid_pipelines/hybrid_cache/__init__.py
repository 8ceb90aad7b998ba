"""Hybrid cache: uploads land in SeaweedFS (S3 gateway) and in PostgreSQL's file_metadata; this
domain drains them to the NAS with hash-verified copies (pending_sync), evicts synced files
by policy when the cache fills (cache_eviction), copies NAS-only uploads back after a SeaweedFS
outage (recache), and audits metadata against both stores (cache_consistency_audit,
cache_reconcile). Engines are plain modules (sync, eviction, recache, audit); the Dagster
wiring lives in assets, checks, jobs, schedules and sensors."""
