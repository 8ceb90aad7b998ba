"""Each run in a container of its own (issue #16, item 3): runs launched through the webserver's
GraphQL API, as the UI launches them, are started by the daemon's DockerRunLauncher through
podman's Docker API socket; the engine itself shows one container per run, labelled with the
run id, and that it is gone once the run ended."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hybrid_pipelines.dev.stack.seed import seed_share
from hybrid_pipelines_tests.e2e import project
from hybrid_pipelines_tests.e2e.dev_instance import (
    REPOSITORY,
    DevInstance,
    ensure_partition,
    wait_for_run,
)

from .engine import container, podman, run_containers, settings, started_containers

LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on InvalidSubsetError { message } ... on RunConfigValidationInvalid { errors { message } }
} }"""
RUN_DETAILS = """query($id: ID!) { runOrError(runId: $id) { ... on Run { status
  tags { key value } } } }"""
EVENTS = """query($id: ID!) { logsForRun(runId: $id, limit: 5000) { __typename
  ... on EventConnection { events { __typename
    ... on MessageEvent { message }
    ... on MaterializationEvent { assetKey { path } }
    ... on AssetCheckEvaluationEvent { evaluation { checkName success } } } } } }"""
CONTAINER_TAG = "docker/container_id"  # dagster_docker's DOCKER_CONTAINER_ID_TAG

# Runs start containers and wait on a loaded machine: more than the suite's 300 s per test.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def web(stack) -> DevInstance:
    """The containers' webserver through the e2e suite's GraphQL client (no process of ours)."""
    return DevInstance(state_dir=Path(os.devnull), port=int(settings()["HP_CT_WEBSERVER_PORT"]),
                       log_path=Path(os.devnull))


def launch(web: DevInstance, job: str, tags: dict[str, str] | None = None) -> str:
    meta = {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
    res = web.graphql(LAUNCH, {"p": {"selector": {**REPOSITORY, "jobName": job},
                                     "executionMetadata": meta}})["launchRun"]
    assert res["__typename"] == "LaunchRunSuccess", f"launching {job}: {res}"
    return res["run"]["runId"]


def seed_nas(tmp: Path) -> str:
    """Sample media into the Samba container's share; returns the smallest top-level folder
    (the media catalog's partition key)."""
    seed_share(tmp, seconds=1)
    podman("cp", f"{tmp}/.", f"{container('samba')}:/srv/nas/media/")
    podman("exec", container("samba"), "chown", "-R", "hpnas:", "/srv/nas/media")
    folders = sorted((sum(1 for f in d.rglob("*") if f.is_file()), d.name)
                     for d in tmp.iterdir() if d.is_dir())
    return folders[0][1]


def events(web: DevInstance, run_id: str) -> list[dict]:
    return web.graphql(EVENTS, {"id": run_id})["logsForRun"]["events"]


def gone(container_id: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if podman("container", "exists", container_id, check=False).returncode == 1:
            return True
        time.sleep(1)
    return False


@pytest.fixture(scope="module")
def runs(web: DevInstance, tmp_path_factory) -> dict[str, dict]:
    """backend_health_job and one media-catalog partition, launched together through GraphQL,
    each waited for; with the container start events the engine recorded meanwhile."""
    chain = project.media_chain()
    if not chain.present:
        pytest.fail(chain.skip_reason)
    key = seed_nas(tmp_path_factory.mktemp("nas"))
    ensure_partition(web, chain.partitions_def_name, key)
    since = datetime.now(UTC).isoformat(timespec="seconds")
    ids = {"backend_health_job": launch(web, "backend_health_job"),
           "media_catalog_job": launch(web, "media_catalog_job", {"dagster/partition": key})}
    out = {}
    for job, run_id in ids.items():
        status = wait_for_run(web, run_id, timeout=600)
        details = web.graphql(RUN_DETAILS, {"id": run_id})["runOrError"]
        out[job] = {"id": run_id, "status": status, "partition": key,
                    "tags": {t["key"]: t["value"] for t in details["tags"]},
                    "events": events(web, run_id)}
    starts = started_containers(since)
    for rec in out.values():
        rec["starts"] = [e for e in starts if e.get("ID", e.get("Id", "")).startswith(
            rec["tags"].get(CONTAINER_TAG, "?")[:12])]
    return out


def failure(rec: dict) -> str:
    msgs = [e.get("message", "") for e in rec["events"] if e.get("message")]
    return f"run {rec['id']} {rec['status']}; last messages: {msgs[-8:]}"


@pytest.mark.parametrize("job", ["backend_health_job", "media_catalog_job"])
def test_run_succeeds(runs, job: str) -> None:
    assert runs[job]["status"] == "SUCCESS", failure(runs[job])


def test_backend_health_finds_every_backend_of_the_stack_healthy(runs) -> None:
    checks = {e["evaluation"]["checkName"]: e["evaluation"]["success"]
              for e in runs["backend_health_job"]["events"]
              if e["__typename"] == "AssetCheckEvaluationEvent"}
    assert len(checks) >= 10, f"backend_health evaluated {sorted(checks)}"
    down = sorted(name for name, ok in checks.items() if not ok)
    assert not down, f"unhealthy in the container stack: {down}"


def test_media_catalog_partition_materializes_the_chain(runs) -> None:
    rec = runs["media_catalog_job"]
    assert rec["tags"].get("dagster/partition") == rec["partition"]
    done = {"/".join(e["assetKey"]["path"]) for e in rec["events"]
            if e["__typename"] == "MaterializationEvent"}
    assert set(project.CHAIN) <= done, f"materialized {sorted(done)}"


@pytest.mark.parametrize("job", ["backend_health_job", "media_catalog_job"])
def test_each_run_had_a_container_of_its_own_that_is_gone(runs, job: str) -> None:
    rec = runs[job]
    cid = rec["tags"].get(CONTAINER_TAG)
    assert cid, f"run {rec['id']} has no {CONTAINER_TAG} tag: not launched by DockerRunLauncher"
    others = {r["tags"].get(CONTAINER_TAG) for j, r in runs.items() if j != job}
    assert cid not in others, "two runs shared one container"
    # The engine's own record: a container started from the project image, labelled with
    # this run's id.
    assert rec["starts"], f"podman recorded no start of container {cid[:12]}"
    start = rec["starts"][0]
    labels = start.get("Attributes") or {}
    assert labels.get("dagster/run_id") == rec["id"], f"labels of {cid[:12]}: {labels}"
    assert start.get("Image", "").split("@")[0] in {
        settings()["HYBRID_PIPELINES_IMAGE"], settings()["HYBRID_PIPELINES_IMAGE"].split("/")[-1]
    }, start
    # ... and gone after the run (auto_remove), nothing labelled with the run id left.
    assert gone(cid), f"container {cid[:12]} of run {rec['id']} still exists after the run"
    assert run_containers(rec["id"]) == []
