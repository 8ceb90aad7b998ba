"""A snapshot of the definitions (every asset with its group, partitions, pools, deps and
checks; every job with its tags; every schedule with its cron, job, timezone and default status;
every sensor with its default status, interval and jobs), committed next to this file as
definitions_snapshot.json, and checked against README.md's "Jobs, schedules and sensors" table.

A change to the definitions fails here with a diff: if it is meant, regenerate the snapshot

    .venv/bin/python -m hybrid_pipelines_tests.foundation.test_definitions_snapshot --write

and update the README's table in the same change."""

from __future__ import annotations

import difflib
import json
import re
import sys
from pathlib import Path

import dagster as dg

HERE = Path(__file__).resolve().parent
SNAPSHOT = HERE / "definitions_snapshot.json"
README = HERE.parents[1] / "README.md"
TABLE_HEADING = "## Jobs, schedules and sensors"
REGENERATE = ".venv/bin/python -m hybrid_pipelines_tests.foundation.test_definitions_snapshot " \
             "--write"


def snapshot(d: dg.Definitions) -> dict:
    repo = d.get_repository_def()
    graph = d.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "partitions": type(node.partitions_def).__name__ if node.partitions_def else None,
            "pool": sorted(node.pools) if node.pools else None,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "checks": sorted(c.name for c in node.check_keys),
        }
    jobs = {j.name: {"tags": dict(sorted(j.tags.items()))}
            for j in repo.get_all_jobs() if not j.name.startswith("__")}
    schedules = {s.name: {"cron": s.cron_schedule, "job": s.job_name,
                          "timezone": s.execution_timezone,
                          "default_status": s.default_status.value}
                 for s in repo.schedule_defs}
    sensors = {s.name: {"default_status": s.default_status.value,
                        "interval_s": s.minimum_interval_seconds,
                        "jobs": sorted(t.job_name for t in s.targets) if s.targets else []}
               for s in repo.sensor_defs}
    return {"assets": assets, "jobs": dict(sorted(jobs.items())),
            "schedules": dict(sorted(schedules.items())),
            "sensors": dict(sorted(sensors.items()))}


def dumps(snap: dict) -> str:
    return json.dumps(snap, indent=1, sort_keys=True) + "\n"


def current() -> dict:
    from hybrid_pipelines.definitions import defs

    return snapshot(defs)


def committed() -> dict:
    return json.loads(SNAPSHOT.read_text())


def test_definitions_match_the_snapshot() -> None:
    want, got = dumps(committed()), dumps(current())
    if want != got:
        diff = "".join(difflib.unified_diff(
            want.splitlines(keepends=True), got.splitlines(keepends=True),
            fromfile=f"{SNAPSHOT.name} (committed)", tofile="current definitions"))
        raise AssertionError(
            f"the definitions changed:\n{diff}\nIf that is meant, regenerate the snapshot with\n"
            f"    {REGENERATE}\nand update README.md's \"Jobs, schedules and sensors\" table.")


# --- the README's table --------------------------------------------------------------------

def readme_table() -> list[list[str]]:
    """The rows (cells) of the first table under the heading."""
    text = README.read_text()
    assert TABLE_HEADING in text, f"README.md has no {TABLE_HEADING!r} section"
    rows: list[list[str]] = []
    for line in text.split(TABLE_HEADING, 1)[1].splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
        elif rows:
            break
    assert len(rows) > 1, "the README's jobs/schedules/sensors table is empty"
    return rows[1:]  # without the header


def named(row: list[str]) -> set[str]:
    return set(re.findall(r"`([^`]+)`", " | ".join(row)))


def cadence(cron: str) -> str:
    """The README's wording of a cron string (the few shapes this project uses)."""
    minute, hour, dom, month, dow = cron.split()
    if (dom, month, dow) != ("*", "*", "*"):
        return cron
    if (minute, hour) == ("*", "*"):
        return "every minute"
    if minute.startswith("*/") and hour == "*":
        return f"every {minute[2:]} min"
    if minute.isdigit() and hour == "*":
        return f"hourly at :{int(minute):02d}"
    if minute.isdigit() and hour.isdigit():
        return f"daily {int(hour):02d}:{int(minute):02d}"
    return cron


def test_readme_names_every_job() -> None:
    in_table = set().union(*(named(r) for r in readme_table()))
    missing = sorted(set(committed()["jobs"]) - in_table)
    assert not missing, f"README.md's jobs/schedules/sensors table does not name {missing}"


def test_readme_names_every_sensor_with_its_interval() -> None:
    rows = readme_table()
    problems = []
    for name, sensor in committed()["sensors"].items():
        mine = [r for r in rows if name in named(r)]
        if not mine:
            problems.append(f"{name}: not named")
        elif not any(f"{sensor['interval_s']} s" in r[-1] for r in mine):
            problems.append(f"{name}: cadence is not '{sensor['interval_s']} s'")
    assert not problems, f"README.md's jobs/schedules/sensors table: {problems}"


def test_readme_gives_every_schedule_its_cron() -> None:
    rows = readme_table()
    problems = []
    for name, schedule in committed()["schedules"].items():
        # the row naming the schedule, else the rows naming its job
        mine = [r for r in rows if name in named(r)] or \
            [r for r in rows if schedule["job"] in named(r)]
        want = cadence(schedule["cron"])
        if not mine:
            problems.append(f"{name}: neither it nor {schedule['job']} is named")
        elif not any(want in r[-1] or schedule["cron"] in r[-1] for r in mine):
            problems.append(f"{name} ({schedule['cron']}): no row says {want!r}")
    assert not problems, f"README.md's jobs/schedules/sensors table: {problems}"


def test_readme_promises_hold() -> None:
    """"Times are UTC. Sensors and schedules are on by default." """
    snap = committed()
    not_utc = sorted(n for n, s in snap["schedules"].items() if s["timezone"] not in (None, "UTC"))
    stopped = sorted(n for kind in ("schedules", "sensors") for n, s in snap[kind].items()
                     if s["default_status"] != "RUNNING")
    assert not not_utc, f"schedules not in UTC: {not_utc}"
    assert not stopped, f"stopped by default: {stopped}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        SNAPSHOT.write_text(dumps(current()))
        print(f"wrote {SNAPSHOT}")
    else:
        sys.stdout.write(dumps(current()))
