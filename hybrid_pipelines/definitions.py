"""The project's one Definitions object: every domain's definitions plus the resources."""

import os

import dagster as dg

from . import health
from .ai_tiers import definitions as ai_tiers
from .hybrid_cache import definitions as hybrid_cache
from .media_catalog import definitions as media_catalog
from .resources import build_resources


def _executor() -> dg.ExecutorDefinition | None:
    """One pod per step in a cluster (deploy/helm/k8s-executor.yaml); Dagster's default
    multiprocess executor everywhere else. HP_EXECUTOR=k8s|default overrides the guess."""
    choice = os.environ.get("HP_EXECUTOR") or (
        "k8s" if "KUBERNETES_SERVICE_HOST" in os.environ else "default")
    if choice == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    if choice != "default":
        raise ValueError(f"HP_EXECUTOR={choice!r} is not 'k8s' or 'default'")
    return None


defs = dg.Definitions.merge(
    media_catalog.defs,
    hybrid_cache.defs,
    ai_tiers.defs,
    health.defs,
    dg.Definitions(resources=build_resources(), executor=_executor()),
)
