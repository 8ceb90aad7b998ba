"""The container flavour's tests need the stack `make containers-test` brings up (images built
here, every service in its own container). Without it they skip with the reason, and under CI
(`CI=true`) fail: CI must not be green with the containers untested."""

from __future__ import annotations

import shutil

import pytest

from hybrid_pipelines_tests.conftest import STRICT_WHY, require_all_backends

from .engine import stack_problem


def _unavailable(why: str) -> None:
    if require_all_backends():
        pytest.fail(f"{why} ({STRICT_WHY})")
    pytest.skip(why)


@pytest.fixture(scope="session")
def stack() -> None:
    if not shutil.which("podman"):
        _unavailable("podman is not installed (make containers-packages)")
    if why := stack_problem():
        _unavailable(why)
