"""The Dagster UI of `hybrid-pipelines dev` in a real headless Chromium: lineage,
materialising from the UI, the Automation page and the NAS sensor's ticks, a media catalog
backfill launched and followed from the UI, and Ctrl-C leaving no process behind.
Screenshots go to test-artifacts/ (the backfill's also when a step fails)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from . import project
from .dev_instance import (
    LOCATION,
    REPOSITORY,
    RUN_QUERY,
    TERMINAL_RUN,
    ensure_partition,
    sensor_state,
    wait_for_run,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
VIEWPORT = {"width": 1600, "height": 1000}
BACKFILL_TIMEOUT_S = 240

NODES_JS = """() => Array.from(document.querySelectorAll('foreignObject'))
  .filter(f => !f.classList.contains('group') && f.firstElementChild)
  .map(f => { const r = f.getBoundingClientRect();
    return {lines: (f.firstElementChild.innerText || '').split('\\n').map(s => s.trim())
                     .filter(s => s).slice(0, 4),
            left: r.left, right: r.right, top: r.top, bottom: r.bottom}; })
  .filter(n => n.lines.length)"""
EDGES_JS = """() => Array.from(document.querySelectorAll('svg path[stroke*="lineage-edge"]'))
  .map(p => { const m = p.getScreenCTM(); const n = p.getTotalLength();
    const a = p.getPointAtLength(0).matrixTransform(m);
    const z = p.getPointAtLength(n).matrixTransform(m);
    return [a.x, a.y, z.x, z.y]; })"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Python playwright is not installed (pip install "
                                      "playwright; it is in the dev extras)")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, e2e) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    try:
        yield tab
    finally:
        context.close()


@contextmanager
def screenshot_on_failure(page: Any, path: Path) -> Iterator[None]:
    """The page as it was when a step failed, for the test's report."""
    try:
        yield
    except BaseException:
        try:
            page.screenshot(path=str(path))
        except Exception:  # noqa: BLE001 - the original failure matters, not this one
            pass
        raise


def label_matches(name: str, label: str) -> bool:
    """The graph shows a name whole, or shortened with an ellipsis when zoomed out."""
    if "…" not in label:
        return label == name
    head, _, tail = label.partition("…")
    return name.startswith(head) and name.endswith(tail) and len(head) + len(tail) < len(name)


def find_node(name: str, nodes: list[dict]) -> dict | None:
    """A node's first lines hold its name, after status tags such as "Unsynced (2)"."""
    return next((n for n in nodes if any(label_matches(name, ln) for ln in n["lines"])), None)


def edge_between(src: dict, dst: dict, edges: list[list[float]]) -> bool:
    tol = max(4.0, 0.1 * (src["right"] - src["left"]))
    return any(abs(sx - src["right"]) <= tol and src["top"] <= sy <= src["bottom"]
               and abs(ex - dst["left"]) <= tol and dst["top"] <= ey <= dst["bottom"]
               for sx, sy, ex, ey in edges)


def test_launch_the_media_catalog_backfill_from_the_catalog(page, e2e, artifacts) -> None:
    """As an operator does: tick the media catalog's assets in the catalog, "Materialize
    selected", pick the NAS folders in the launch dialog, "Launch backfill". Launched first:
    it spends most of its time waiting for daemon iterations, while the next tests run;
    test_media_catalog_backfill_completes follows it to the end."""
    if not e2e.chain.present:
        pytest.skip(e2e.chain.skip_reason)
    # One partition per top-level NAS folder, as the NAS sensor (stopped here) registers
    # them. Two: for a single partition the dialog launches one run, not a backfill.
    keys = sorted(d.name for d in project.nas_folders(e2e.dev.state_dir)[:2])
    assert len(keys) == 2, f"the stack's NAS share needs two top-level folders, has {keys}"
    for key in keys:
        ensure_partition(e2e.dev, e2e.chain.partitions_def_name, key)
    with screenshot_on_failure(page, artifacts / "backfill-launch-failed.png"):
        page.goto(f"{e2e.dev.url}/assets")
        for name in project.CHAIN:
            box = page.get_by_test_id(f"checkbox-{name}")
            page.locator("label").filter(has=box).click()  # the input itself is hidden
            assert box.is_checked(), f"{name} is not ticked in the catalog"
        page.get_by_role("button", name=re.compile(r"Materialize selected")).click()
        dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
        dialog.get_by_text(f"materialize {len(project.CHAIN)} assets").wait_for()
        dialog.get_by_text(re.compile(r"^Select a partition")).click()
        for key in keys:
            page.get_by_placeholder("Filter partitions").fill(key)
            page.get_by_role("menuitem").filter(has=page.get_by_text(key, exact=True)).click()
        dialog.get_by_text(re.compile(r"^Launch runs to materialize")).click()  # close the list
        page.get_by_placeholder("Filter partitions").wait_for(state="hidden")
        dialog.get_by_text(f"{len(keys)} partitions", exact=True).wait_for()
        page.screenshot(path=str(artifacts / "backfill-launch-dialog.png"))
        dialog.get_by_role("button", name="Launch backfill", exact=True).click()
        toast = page.get_by_text(re.compile(r"Created backfill [a-z0-9]+")).first
        toast.wait_for()
    e2e.backfill_id = re.search(r"Created backfill ([a-z0-9]+)", toast.inner_text()).group(1)
    e2e.backfill_partitions = keys


def test_launch_a_materialization_from_the_ui(page, e2e) -> None:
    """Launched early; the run proceeds while the next tests look at the lineage."""
    asset = "backend_health"
    if asset not in project.asset_names():
        pytest.skip(f"{asset} is not in the definitions")
    page.goto(f"{e2e.dev.url}/assets/{asset}")
    page.locator("button", has_text=re.compile(r"^\s*Materialize\s*$")).first.click()
    toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}")).first
    toast.wait_for()
    short = re.search(r"Launched run ([0-9a-f]{8})", toast.inner_text()).group(1)
    runs = e2e.dev.graphql("{ runsOrError(limit: 50) { ... on Runs { results { runId } } } }")
    e2e.ui_run_id = next(r["runId"] for r in runs["runsOrError"]["results"]
                         if r["runId"].startswith(short))


def settled_graph(tab: Any, timeout_ms: int = 20_000) -> tuple[list[dict], list[list[float]]]:
    """The graph's nodes and edges once two reads half a second apart agree (the layout
    animates after "Expand all groups", and a busy machine draws the edges late); a fixed
    wait read it half-drawn under load. After `timeout_ms`, what is there."""
    previous: tuple[Any, Any] | None = None
    waited = 0
    while True:
        tab.wait_for_timeout(500)
        waited += 500
        current = (tab.evaluate(NODES_JS), tab.evaluate(EDGES_JS))
        if (current == previous and current[1]) or waited >= timeout_ms:
            return current
        previous = current


@pytest.fixture(scope="module")
def lineage(browser, e2e, artifacts) -> dict[str, Any]:
    """The global lineage with every group expanded, in a window tall enough for the graph
    to draw every asset of the project; its nodes and edges as the browser lays them out."""
    expected = project.asset_names()
    nodes: list[dict] = []
    edges: list[list[float]] = []
    # The graph draws only what is in the window and fits it on load: open it in a window
    # tall for the number of assets (zoomed out, names are shortened and edges culled).
    height = max(1200, 1200 + 80 * len(expected))
    for _ in range(3):
        context = browser.new_context(viewport={"width": 1920, "height": height})
        tab = context.new_page()
        tab.set_default_timeout(30_000)
        try:
            tab.goto(f"{e2e.dev.url}/asset-groups")
            tab.wait_for_selector("foreignObject")
            tab.get_by_role("button", name="settings", exact=True).click()
            tab.get_by_role("menuitem", name="Expand all groups").click()
            tab.keyboard.press("Escape")
            nodes, edges = settled_graph(tab)
            tab.screenshot(path=str(artifacts / "lineage.png"))
        finally:
            context.close()
        if all(find_node(n, nodes) for n in expected):
            break
        height = int(height * 1.6)
    return {"nodes": nodes, "edges": edges, "expected": expected}


def test_lineage_shows_every_asset_of_the_project(lineage) -> None:
    missing = [n for n in lineage["expected"] if not find_node(n, lineage["nodes"])]
    assert not missing, f"the global lineage does not draw {missing}; drew " \
                        f"{[n['lines'][:2] for n in lineage['nodes']]}"


def test_lineage_draws_every_dependency(lineage) -> None:
    nodes, edges = lineage["nodes"], lineage["edges"]
    absent = [(a, b) for a, b in sorted(project.asset_edges())
              if not (find_node(a, nodes) and find_node(b, nodes)
                      and edge_between(find_node(a, nodes), find_node(b, nodes), edges))]
    assert not absent, f"edges not drawn: {absent}"


def test_lineage_draws_the_media_catalog_chain(lineage, e2e) -> None:
    if not e2e.chain.present:
        pytest.skip(e2e.chain.skip_reason)
    nodes = lineage["nodes"]
    for a, b in zip(project.CHAIN, project.CHAIN[1:], strict=False):
        src, dst = find_node(a, nodes), find_node(b, nodes)
        assert src and dst, f"{a} or {b} is not drawn"
        assert edge_between(src, dst, lineage["edges"]), f"no edge {a} -> {b} in the lineage"


def test_automation_page_lists_every_schedule_and_sensor(page, e2e) -> None:
    page.set_viewport_size({"width": 1600, "height": 2400})
    page.goto(f"{e2e.dev.url}/automation")
    expected = project.schedule_names() + project.sensor_names()
    if not expected:
        pytest.skip("no schedule or sensor in hybrid_pipelines.definitions")
    page.get_by_text(expected[0], exact=True).first.wait_for()
    text = page.inner_text("body")
    missing = [n for n in expected if n not in text]
    assert not missing, f"the Automation page does not list {missing}"


def sensor_url(e2e, name: str) -> str:
    return f"{e2e.dev.url}/locations/{LOCATION}/sensors/{name}"


def test_the_ui_run_finishes_and_the_asset_shows_materialized(page, e2e, artifacts) -> None:
    asset, run_id = "backend_health", e2e.ui_run_id
    if run_id is None:
        pytest.skip("no run was launched from the UI (see the test above)")
    assert wait_for_run(e2e.dev, run_id, timeout=150) == "SUCCESS"
    latest = e2e.dev.graphql("""{ assetNodes(assetKeys: [{path: ["backend_health"]}]) {
      assetMaterializations(limit: 1) { runId } } }""")["assetNodes"][0]
    assert latest["assetMaterializations"][0]["runId"] == run_id

    page.goto(f"{e2e.dev.url}/runs/{run_id}")
    page.get_by_text("Success", exact=True).first.wait_for()
    page.wait_for_timeout(500)
    page.screenshot(path=str(artifacts / "run-finished.png"))

    # The catalog loads statuses after the rows: wait for the asset's row to say so.
    page.goto(f"{e2e.dev.url}/assets")
    row = page.wait_for_function("""(name) => { let best = null;
      for (const el of document.querySelectorAll('body *')) {
        const t = el.innerText || '';
        if (t.includes(name) && /\\bMaterialized\\b/.test(t)
            && (!best || t.length < best.length)) best = t; }
      return best; }""", arg=asset).json_value()
    assert "Never materialized" not in row and "Materialized" in row, row


BACKFILL_DONE = re.compile(r"\b(Success|Succeeded|Failed|Failure|Canceled|Canceling|"
                           r"Completed)\b")
# Any status, in an element's text content (where words of adjacent cells run together).
BACKFILL_ANY = re.compile(r"Requested|Queued|Started|In progress|Success|Succeeded|Failed|"
                          r"Failure|Canceled|Canceling|Completed")


def link_named(page: Any, text: str) -> Any:
    """A link showing exactly `text` (its accessible name also holds its icon's label, and
    shortened names hold the text twice)."""
    return page.get_by_role("link").filter(has=page.get_by_text(text, exact=True))


def test_media_catalog_backfill_completes(page, e2e, artifacts) -> None:
    """Followed as an operator does: the Runs page's Backfills tab lists it and shows it
    reach Success within a bound; its own page says Succeeded for every asset of the chain
    in each partition picked. The instance's own record of it must agree."""
    if not e2e.chain.present:
        pytest.skip(e2e.chain.skip_reason)
    from playwright.sync_api import expect  # importable: the browser fixture checked it

    backfill_id, keys = e2e.backfill_id, e2e.backfill_partitions
    if backfill_id is None:
        pytest.skip("no backfill was launched from the UI (see the first test)")
    with screenshot_on_failure(page, artifacts / "backfill-failed.png"):
        page.goto(f"{e2e.dev.url}/runs")
        page.get_by_role("tab", name="Backfills").click()
        link = link_named(page, backfill_id)
        link.wait_for()
        # The smallest block holding the backfill's id and a status: its row of the list.
        row = page.locator("div").filter(has=link).filter(has_text=BACKFILL_ANY).last
        # The list refreshes itself; each check reads it again.
        deadline = time.monotonic() + BACKFILL_TIMEOUT_S
        text = row.inner_text()
        while not BACKFILL_DONE.search(text.replace(backfill_id, "")):
            assert time.monotonic() < deadline, \
                f"backfill {backfill_id} not done after {BACKFILL_TIMEOUT_S}s: {text!r}"
            page.wait_for_timeout(2000)
            text = row.inner_text()
        assert "Success" in text, f"backfill {backfill_id} ended as: {text!r}"

        link.click()
        page.wait_for_url(re.compile(f"/runs/b/{backfill_id}"))
        status = page.get_by_text("Status", exact=True).first.locator(
            "xpath=following-sibling::*[1]")
        expect(status).to_have_text("Succeeded")
        for key in keys:  # the partition selection lists the folders picked
            page.get_by_text(key, exact=True).first.wait_for()
        for name in project.CHAIN:
            asset_row = page.locator("div").filter(has=link_named(page, name)).filter(
                has_text="% completed").last
            expect(asset_row).to_contain_text("100% completed")
        page.wait_for_timeout(500)
        page.screenshot(path=str(artifacts / "backfill.png"))

    query = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
      ... on PartitionBackfill { status error { message }
        assetBackfillData { assetBackfillStatuses { ... on AssetPartitionsStatusCounts {
          assetKey { path } numPartitionsTargeted numPartitionsMaterialized
          numPartitionsFailed } } } } } }"""
    backfill = e2e.dev.graphql(query, {"id": backfill_id})["partitionBackfillOrError"]
    counts = backfill["assetBackfillData"]["assetBackfillStatuses"]
    assert backfill["status"] == "COMPLETED_SUCCESS", (backfill["status"], backfill["error"],
                                                       counts)
    done = {"/".join(c["assetKey"]["path"]): c["numPartitionsMaterialized"] for c in counts}
    assert all(done.get(name) == len(keys) for name in project.CHAIN), done


def test_start_the_nas_sensor_from_the_ui(page, e2e) -> None:
    name = project.nas_sensor()
    if name is None:
        pytest.skip("no NAS sensor (a sensor targeting nas_media_files) in the definitions")
    assert sensor_state(e2e.dev, name)["status"] == "STOPPED"
    page.goto(sensor_url(e2e, name))
    switch = page.locator("input[type=checkbox]").first
    switch.wait_for(state="attached")
    assert not switch.is_checked()
    switch.locator("xpath=..").click()
    deadline = time.monotonic() + 20
    while sensor_state(e2e.dev, name)["status"] != "RUNNING":
        assert time.monotonic() < deadline, "the UI switch did not start the sensor"
        time.sleep(0.5)
    e2e.nas_sensor_started_at = time.time()


def test_nas_sensor_ticks_appear(page, e2e, artifacts) -> None:
    name = project.nas_sensor()
    started = e2e.nas_sensor_started_at
    if name is None or started is None:
        pytest.skip("the NAS sensor was not started from the UI (see the test above)")
    # The daemon honours the sensor's minimum interval since its last tick (at startup).
    deadline = time.monotonic() + 90
    while True:
        ticks = [t for t in sensor_state(e2e.dev, name)["ticks"] if t["timestamp"] >= started]
        if any(t["status"] != "STARTED" for t in ticks) or time.monotonic() > deadline:
            break
        time.sleep(2)
    finished = [t for t in ticks if t["status"] != "STARTED"]
    assert finished, f"{name} did not finish a tick within 90 s of being started: {ticks}"
    assert finished[0]["status"] != "FAILURE", finished[0]["error"]
    # The sensor page lists its ticks (Timestamp, Status, ..., Result) below the timeline.
    page.goto(sensor_url(e2e, name))
    page.get_by_text("Timestamp", exact=True).first.wait_for()
    page.get_by_text(re.compile(r"^(\d+ runs? requested|Skipped|Success|No runs requested)$"))\
        .first.wait_for()
    page.wait_for_timeout(500)
    page.screenshot(path=str(artifacts / "nas-sensor-ticks.png"))


def test_ctrl_c_stops_dagster_and_the_stack_without_orphans(e2e) -> None:
    """Ctrl-C while a run is in flight, as happens at any time in a terminal: dagster,
    its code server, the run's processes and every server of the stack must be gone."""
    job = "backend_health_job"
    if job in {j.name for j in project.job_defs()}:
        launched = e2e.dev.graphql("""mutation($p: ExecutionParams!) { launchRun(
          executionParams: $p) { __typename ... on LaunchRunSuccess { run { runId } } } }""",
                                   {"p": {"selector": {**REPOSITORY, "jobName": job}}})
        run_id = launched["launchRun"]["run"]["runId"]
        deadline = time.monotonic() + 60
        while e2e.dev.graphql(RUN_QUERY, {"id": run_id})["runOrError"]["status"] not in \
                {"STARTED", *TERMINAL_RUN}:
            assert time.monotonic() < deadline, f"{job} did not start"
            time.sleep(0.3)
    leftovers = e2e.dev.stop()
    assert not leftovers, f"processes still alive after Ctrl-C: {e2e.dev.describe(leftovers)}"
    assert e2e.dev.proc.returncode == 0, e2e.dev.log_tail()
