"""The project's one Definitions object: the `defs/` folder (every domain's Dagster wiring,
found by Dagster's loader) plus the resources and the executor."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from hybrid_pipelines.resources.build import build_resources


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


def _defs_folder() -> dg.Definitions:
    """`[tool.dg]` in pyproject.toml names the defs folder. An installed wheel has no
    pyproject.toml beside it: then load the same package directly."""
    here = Path(__file__).resolve().parent
    if (here.parent / "pyproject.toml").exists():
        return dg.load_from_defs_folder(path_within_project=here)
    from dagster.components import load_defs

    import hybrid_pipelines.defs

    return load_defs(hybrid_pipelines.defs, project_root=here.parent)


def domain_definitions(domain: str) -> dg.Definitions:
    """One domain's wiring (`defs/<domain>/`) without resources: tests bind their own."""
    return dg.load_definitions_from_package_name(f"hybrid_pipelines.defs.{domain}")


defs = dg.Definitions.merge(
    _defs_folder(),
    dg.Definitions(resources=build_resources(), executor=_executor()),
)
