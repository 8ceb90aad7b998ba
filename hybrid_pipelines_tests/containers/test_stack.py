"""The stack in containers (issue #16, item 2): every server a container of its own from the
one compose file, on host networking, each on its own 127.0.0.1 port, the code location loaded
by the webserver."""

from __future__ import annotations

import os
import subprocess

import pytest
import requests

from hybrid_pipelines_tests.e2e.dev_instance import LOCATION, LOCATION_QUERY

from .engine import REPO, SERVICES, container, podman, podman_json, settings, webserver_url


@pytest.mark.parametrize("service", SERVICES)
def test_service_runs_in_its_own_container_on_host_networking(stack, service: str) -> None:
    info = podman_json("inspect", container(service))[0]
    assert info["State"]["Running"], f"{service}: {info['State']}"
    assert info["HostConfig"]["NetworkMode"] == "host"
    if service != "daemon":  # the daemon has no health check; up.sh ran its liveness check
        podman("healthcheck", "run", container(service))


def listeners() -> dict[int, set[str]]:
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    ports: dict[int, set[str]] = {}
    for line in out.splitlines():
        local = line.split()[3]
        host, _, port = local.rpartition(":")
        ports.setdefault(int(port), set()).add(host.strip("[]"))
    return ports


def test_every_port_is_on_loopback_only(stack) -> None:
    s = settings()
    ours = {k: int(v) for k, v in s.items() if k.endswith("_PORT") and k != "HP_CT_KUBE_CODE_PORT"}
    found = listeners()
    for name, port in ours.items():
        assert port in found, f"nothing listens on {name}={port}"
        # ::ffff:127.0.0.1: IPv4 loopback through an IPv6 socket (gRPC).
        assert found[port] <= {"127.0.0.1", "::ffff:127.0.0.1"}, f"{name}={port}: {found[port]}"


def test_webserver_loads_the_code_location(stack) -> None:
    r = requests.post(f"{webserver_url()}/graphql", json={"query": LOCATION_QUERY}, timeout=30)
    entries = {e["name"]: e for e in r.json()["data"]["workspaceOrError"]["locationEntries"]}
    assert entries[LOCATION]["locationOrLoadError"]["__typename"] == "RepositoryLocation", \
        entries[LOCATION]


def test_secrets_come_from_a_private_env_file_outside_the_repository(stack) -> None:
    path = settings()["HP_CT_ENV_FILE"]
    assert oct(os.stat(path).st_mode & 0o777) == "0o600", path
    assert not path.startswith(str(REPO))
    tracked = subprocess.run(["git", "grep", "-l", "POSTGRES_PASSWORD=[A-Za-z0-9]\\{20\\}"],
                             capture_output=True, text=True).stdout
    assert not tracked.strip(), f"a generated secret is committed: {tracked}"
