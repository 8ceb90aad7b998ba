"""The environment contract between the code and the deployments: every HP_* variable a
deploy file names is one the code knows, and every variable the code reads is provided by
each deployment flavour (compose on one host, the Helm chart + manifests on a cluster)."""

from __future__ import annotations

import pytest

from .deploy_files import (
    DEPLOY,
    FIRESTORE_ALTERNATIVES,
    HP_VAR,
    compose,
    compose_service_env,
    env_vars_read_by_code,
    k8s_deployment_env,
    k8s_run_pod_env,
    known_hp_vars,
    required_env,
)

FLAVOURS = {
    "docker compose (deploy/docker, code-location service)":
        lambda: compose_service_env("code-location"),
    "kubernetes (deploy/helm + deploy/k8s + deploy/secrets, the code location)":
        k8s_deployment_env,
    "kubernetes (deploy/helm + deploy/k8s + deploy/secrets, run and step pods)":
        k8s_run_pod_env,
}


def deploy_text_files() -> list:
    return [p for p in sorted(DEPLOY.rglob("*")) if p.is_file() and p.suffix in
            {".yaml", ".yml", ".md", ".example", ".sql", ""} and p.name != ".gitignore"]


def test_the_scan_finds_what_the_resources_read() -> None:
    """Guards the AST scan itself: the resources' variables must show up."""
    read = env_vars_read_by_code()
    for name in ("HP_NAS_HOST", "HP_PG_PASSWORD", "HP_SEAWEEDFS_S3_ENDPOINT",
                 "HP_SQLITE_CATALOG_PATH", "FIRESTORE_EMULATOR_HOST"):
        assert name in read, f"{name} not found: the scan of hybrid_pipelines/ is broken"
    assert not [n for n in read if n.startswith("HP_STACK_")]


def test_every_hp_variable_in_deploy_files_is_known_to_the_code() -> None:
    known = known_hp_vars()
    unknown: dict[str, list[str]] = {}
    for path in deploy_text_files():
        for name in set(HP_VAR.findall(path.read_text())) - known:
            unknown.setdefault(name, []).append(str(path.relative_to(DEPLOY.parent)))
    assert not unknown, ("deploy files set variables no code reads (typo or stale): "
                         f"{unknown}")


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_every_variable_the_code_reads_is_provided(flavour: str) -> None:
    provided = FLAVOURS[flavour]()
    missing = {name: why for name, why in required_env().items() if name not in provided}
    assert not missing, f"{flavour} does not set: " + "; ".join(
        f"{name} ({why})" for name, why in sorted(missing.items()))
    assert provided.keys() & FIRESTORE_ALTERNATIVES, \
        f"{flavour}: set FIRESTORE_EMULATOR_HOST (staging) or GOOGLE_APPLICATION_CREDENTIALS"


def test_compose_flavour_points_resources_at_compose_services() -> None:
    env = compose_service_env("code-location")
    services = set(compose()["services"])
    for var in ("HP_PG_HOST", "DAGSTER_PG_HOST"):
        assert env[var] in services, f"{var}={env[var]} is not a compose service"
    for var in ("HP_SEAWEEDFS_S3_ENDPOINT", "HP_SEAWEEDFS_MASTER_URL"):
        host = env[var].split("//", 1)[1].split(":")[0]
        assert host in services, f"{var}={env[var]}: {host} is not a compose service"
    assert env["FIRESTORE_EMULATOR_HOST"].split(":")[0] in services


def test_deploy_readme_names_every_variable() -> None:
    readme = (DEPLOY / "README.md").read_text()
    missing = sorted(n for n in required_env() if n not in readme)
    assert not missing, f"deploy/README.md does not say where {missing} point"
