"""One `hybrid-pipelines dev` for the whole e2e package (CLI and browser tests share it).

The tests take the instance over as an operator would before a demo: every schedule and
sensor is stopped and the runs they already queued or started are canceled, so the
project's own automation does not compete with (or race) what the tests launch. The media
catalog backfill is launched from the browser, as an operator does (test_ui_browser).

The modules that do not use that instance (a `hybrid-pipelines dev` or stack of their own,
or none) run while its backfill runs: between the backfill's launch and the test that follows
it to the end, which otherwise waits a minute for the daemon's 30 s iterations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hybrid_pipelines.dev.stack.process import free_port

from .dev_instance import DevInstance, settle_runs, stop_automation
from .project import media_chain

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


class E2E:
    """What the e2e tests share: the instance, and what one test launched for a later one
    to check (the UI's run and backfill, the NAS sensor's start)."""

    def __init__(self, dev: DevInstance) -> None:
        self.dev = dev
        self.chain = media_chain()
        self.backfill_id: str | None = None
        self.backfill_partitions: list[str] = []
        self.nas_sensor_started_at: float | None = None
        self.ui_run_id: str | None = None


BACKFILL_FOLLOWED = "test_media_catalog_backfill_completes"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move this package's modules that never ask for `e2e` to just before the backfill's
    follow-up test (only the order changes: every test still runs, each module's tests in
    their own order). Called with the whole session's items; touches only this package's."""
    here = Path(__file__).resolve().parent

    def module(item: pytest.Item) -> Path:
        return Path(str(item.path)).resolve()

    ours = [i for i in items if module(i).parent == here]
    anchor = next((i for i in ours if getattr(i, "originalname", i.name) == BACKFILL_FOLLOWED),
                  None)
    if anchor is None:
        return
    uses_e2e = {module(i) for i in ours if "e2e" in getattr(i, "fixturenames", ())}
    moved = [i for i in ours if module(i) not in uses_e2e]
    if not moved:
        return
    moved_ids = {id(i) for i in moved}
    rest = [i for i in items if id(i) not in moved_ids]
    at = rest.index(anchor)
    items[:] = rest[:at] + moved + rest[at:]


@pytest.fixture(scope="package")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    root = tmp_path_factory.mktemp("e2e")
    dev = DevInstance(state_dir=root / "state", port=free_port(), log_path=root / "dev.log")
    try:
        dev.start()
        stop_automation(dev)
        settle_runs(dev)
        yield E2E(dev)
    finally:
        checked = dev.stopped_leftovers is not None  # test_ui_browser's last test asserted it
        leftovers = dev.stop()
        dev.kill_leftovers()
    # When that test did not run (a subset was selected), the check happens here.
    assert checked or not leftovers, \
        f"processes left after stopping dev: {dev.describe(leftovers)}"


@pytest.fixture(scope="package")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
