"""The Kubernetes path as far as podman runs it (issue #16, item 4): `podman kube play` of the
user-code Deployment of the Helm values with the ConfigMap of deploy/k8s, the Secrets of
deploy/secrets and the claimed PVCs; its code server answers the containers' webserver (the
location `hybrid_pipelines_kube` of deploy/containers/workspace-ui.yaml). Every other kind of
deploy/k8s is listed in deploy/README.md with how it is checked instead."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from hybrid_pipelines_tests.e2e.dev_instance import LOCATION

from .engine import CT, KUBE_LOCATION, REPO, podman, podman_json, settings, webserver_url

sys.path.insert(0, str(CT))
import kube  # noqa: E402  (deploy/containers/kube.py: a script, not a package)

# The played pod loads the code location on a loaded machine: more than the suite's 300 s per test.
pytestmark = pytest.mark.timeout(900)

RELOAD = """mutation($l: String!) { reloadRepositoryLocation(repositoryLocationName: $l) {
  __typename ... on WorkspaceLocationEntry { name locationOrLoadError { __typename
    ... on PythonError { message } } } } }"""
JOBS = """query($l: String!) { repositoryOrError(repositorySelector: {repositoryLocationName: $l,
  repositoryName: "__repository__"}) { __typename ... on Repository { jobs { name } } } }"""


def gql(query: str, variables: dict) -> dict:
    body = requests.post(f"{webserver_url()}/graphql", json={"query": query,
                                                             "variables": variables},
                         timeout=60).json()
    assert not body.get("errors"), body["errors"]
    return body["data"]


def jobs(location: str) -> set[str]:
    repo = gql(JOBS, {"l": location})["repositoryOrError"]
    assert repo["__typename"] == "Repository", repo
    return {j["name"] for j in repo["jobs"]}


def pod_containers() -> list[dict]:
    return podman_json("ps", "-a", "--format", "json", "--filter",
                       f"label=app={kube.DEPLOYMENT_NAME}") or []


@pytest.fixture(scope="module")
def played(stack, tmp_path_factory):
    out = tmp_path_factory.mktemp("kube") / "user-code.yaml"
    env = {**os.environ, **settings()}
    subprocess.run([sys.executable, str(CT / "kube.py"), "render", str(out)], env=env,
                   check=True, timeout=60)
    podman("kube", "play", str(out), timeout=300)
    try:
        yield out
    finally:
        podman("kube", "down", str(out), check=False, timeout=120)
        for name in ("hp-nas-credentials", "hp-backend-credentials"):
            podman("secret", "rm", name, check=False)


def wait_serving(port: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [c for c in pod_containers() if c["State"] == "running"]
        if running and podman("exec", running[0]["Id"], "dagster", "api", "grpc-health-check",
                              "-p", port, check=False).returncode == 0:
            return
        time.sleep(2)
    logs = [podman("logs", "--tail", "20", c["Id"], check=False).stderr for c in pod_containers()]
    raise AssertionError(f"the kube-played code server did not serve on {port}: {logs}")


def test_user_code_deployment_serves_the_webserver(played: Path) -> None:
    wait_serving(settings()["HP_CT_KUBE_CODE_PORT"])
    (ctr,) = [c for c in pod_containers() if c["State"] == "running"]
    info = podman_json("inspect", ctr["Id"])[0]
    assert info["Config"]["User"].split(":")[0] == "10001", "podSecurityContext.runAsUser"
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    # From the ConfigMap and from the Secrets (envFrom), as in the cluster.
    assert env["HP_RESOURCES_MODE"] == "deployed" and env["HP_NAS_PASSWORD"]
    res = gql(RELOAD, {"l": KUBE_LOCATION})["reloadRepositoryLocation"]
    assert res["locationOrLoadError"]["__typename"] == "RepositoryLocation", res
    assert jobs(KUBE_LOCATION) == jobs(LOCATION)


def test_kube_down_leaves_no_container(played: Path) -> None:
    podman("kube", "down", str(played), timeout=120)
    assert pod_containers() == []


def test_kinds_podman_cannot_run_are_listed_in_the_readme() -> None:
    readme = (REPO / "deploy" / "README.md").read_text()
    for kind, objs in kube.kinds().items():
        if kind not in kube.PODMAN_KINDS:
            assert f"`{kind}`" in readme, f"deploy/README.md does not say how {kind} " \
                                          f"({', '.join(objs)}) is checked without a cluster"
