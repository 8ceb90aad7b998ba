"""The container flavour as the tests see it: deploy/containers/lib.sh's settings (ports, image
names, podman's configuration) and podman's CLI, which answers for the container engine."""

from __future__ import annotations

import json
import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]
CT = REPO / "deploy" / "containers"
PROJECT = "hybrid-pipelines-ct"
SERVICES = ("postgres", "seaweedfs", "samba", "firestore", "code-location", "webserver", "daemon")
KUBE_LOCATION = "hybrid_pipelines_kube"


@cache
def settings() -> dict[str, str]:
    """lib.sh's exported variables (the environment's overrides included)."""
    out = subprocess.run(["bash", "-c", f"source {CT / 'lib.sh'} && env -0"],
                         capture_output=True, check=True, timeout=30).stdout
    env = dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    return {k: v for k, v in env.items()
            if k.startswith(("HP_CT_", "CONTAINERS_", "HYBRID_PIPELINES_", "COMPOSE_"))}


def podman(*args: str, check: bool = True, timeout: float = 120,
           input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **settings()}, input=input_text)
    if check and res.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed: {res.stderr.strip()[-1500:]}")
    return res


def podman_json(*args: str) -> Any:
    return json.loads(podman(*args).stdout or "null")


def container(service: str) -> str:
    return f"{PROJECT}_{service}_1"


def webserver_url() -> str:
    return f"http://127.0.0.1:{settings()['HP_CT_WEBSERVER_PORT']}"


def stack_problem() -> str | None:
    """Why the container stack is not there to test (None: it answers)."""
    try:
        requests.get(f"{webserver_url()}/server_info", timeout=3).raise_for_status()
    except requests.RequestException as exc:
        return (f"the container stack's webserver does not answer on {webserver_url()} "
                f"({type(exc).__name__}): run `make containers-test` (or make containers-up)")
    return None


def run_containers(run_id: str) -> list[dict]:
    """Containers (running or stopped) labelled with the run's id by DockerRunLauncher."""
    return podman_json("ps", "-a", "--format", "json", "--filter",
                       f"label=dagster/run_id={run_id}") or []


def started_containers(since: str) -> list[dict]:
    """Container `start` events since an RFC 3339 time, with their labels."""
    out = podman("events", "--stream=false", "--since", since, "--filter", "event=start",
                 "--filter", "type=container", "--format", "json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]
