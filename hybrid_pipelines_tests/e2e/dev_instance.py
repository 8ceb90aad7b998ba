"""`hybrid-pipelines dev` as the operator runs it (stack + `dagster dev`), driven over
GraphQL: start, wait for the code location, query, stop by PID without orphans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCATION = "hybrid_pipelines"
REPOSITORY = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}
TERMINAL_RUN = {"SUCCESS", "FAILURE", "CANCELED"}

LOCATION_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries { name
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


class GraphQLError(RuntimeError):
    pass


def read_env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def alive(proc: psutil.Process) -> bool:
    """Still running, and still the same process (psutil compares the start time, so a PID
    reused by another program does not count)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


@dataclass
class DevInstance:
    state_dir: Path
    port: int
    log_path: Path
    proc: subprocess.Popen | None = None
    stopped_leftovers: list[int] | None = None
    _tracked: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 240) -> None:
        log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [str(BIN / "hybrid-pipelines"), "dev", "--state-dir", str(self.state_dir),
             "--port", str(self.port)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"`hybrid-pipelines dev` exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                entries = self.graphql(LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
                loaded = {e["name"]: e["locationOrLoadError"] for e in entries}
                state = loaded.get(LOCATION) or {}
                if state.get("__typename") == "RepositoryLocation":
                    self._track()
                    return
                if state.get("__typename") == "PythonError":
                    raise RuntimeError(f"code location failed to load: {state['message']}")
            except (requests.RequestException, GraphQLError, KeyError, TypeError) as exc:
                last_error = str(exc)
            time.sleep(1)
        raise TimeoutError(f"dagster dev did not load {LOCATION} in {timeout:.0f}s "
                           f"({last_error}):\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def env(self) -> dict[str, str]:
        return read_env_file(self.state_dir / "stack.env")

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        r = requests.post(f"{self.url}/graphql", json={"query": query,
                                                       "variables": variables or {}}, timeout=30)
        body = r.json()
        if body.get("errors"):
            raise GraphQLError(json.dumps(body["errors"])[:2000])
        return body["data"]

    def _track(self) -> None:
        """Remember every process of the instance now: the stack's servers and the whole
        dagster process tree (webserver, daemon, code servers)."""
        assert self.proc is not None
        records = json.loads((self.state_dir / "stack.json").read_text())
        procs = [process(r["pid"]) for r in records.values() if r.get("pid")]
        supervisor = process(self.proc.pid)
        if supervisor is not None:
            procs += [supervisor, *supervisor.children(recursive=True)]
        for proc in procs:
            if proc is not None and alive(proc):
                self._tracked.setdefault(proc.pid, proc)

    def stop(self, timeout: float = 90) -> list[int]:
        """SIGINT to the supervisor, as Ctrl-C in its terminal does; returns the PIDs still
        alive afterwards (orphans). Idempotent."""
        if self.stopped_leftovers is not None or self.proc is None:
            return self.stopped_leftovers or []
        if self.proc.poll() is None:
            self._track()
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(alive(p) for p in self._tracked.values()):
            time.sleep(0.2)
        self.stopped_leftovers = sorted(pid for pid, p in self._tracked.items() if alive(p))
        return self.stopped_leftovers

    def describe(self, pids: list[int]) -> list[str]:
        out = []
        for pid in pids:
            try:
                proc = self._tracked[pid]
                out.append(f"{pid} (pgid {os.getpgid(pid)}, parent {proc.ppid()}): "
                           f"{' '.join(proc.cmdline())[:140]}")
            except (psutil.NoSuchProcess, ProcessLookupError, KeyError):
                out.append(f"{pid}: gone")
        return out

    def kill_leftovers(self) -> None:
        """Last resort after a failed stop, so one broken test does not leak servers."""
        for pid in self.stopped_leftovers or []:
            proc = self._tracked[pid]
            try:
                if alive(proc):
                    proc.kill()
            except psutil.NoSuchProcess:
                pass


# --- GraphQL helpers ------------------------------------------------------------------------

RUN_QUERY = """query($id: ID!) { runOrError(runId: $id) { __typename
  ... on Run { runId status } ... on PythonError { message } } }"""


def wait_for_run(dev: DevInstance, run_id: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    status = "?"
    while time.monotonic() < deadline:
        status = dev.graphql(RUN_QUERY, {"id": run_id})["runOrError"].get("status", "?")
        if status in TERMINAL_RUN:
            return status
        time.sleep(1)
    raise TimeoutError(f"run {run_id} still {status} after {timeout:.0f}s")


def set_automation(dev: DevInstance, running: bool) -> None:
    """Stop (or start) every schedule and sensor of the code location."""
    data = dev.graphql("""query($r: RepositorySelector!) {
      schedulesOrError(repositorySelector: $r) { ... on Schedules { results { name
        scheduleState { id status } } } }
      sensorsOrError(repositorySelector: $r) { ... on Sensors { results { name
        sensorState { id status } } } } }""", {"r": REPOSITORY})
    for sched in data["schedulesOrError"]["results"]:
        is_on = sched["scheduleState"]["status"] == "RUNNING"
        if running and not is_on:
            dev.graphql("""mutation($s: ScheduleSelector!) { startSchedule(scheduleSelector: $s)
              { __typename } }""", {"s": {**REPOSITORY, "scheduleName": sched["name"]}})
        elif not running and is_on:
            dev.graphql("""mutation($id: String!) { stopRunningSchedule(id: $id)
              { __typename } }""", {"id": sched["scheduleState"]["id"]})
    for sensor in data["sensorsOrError"]["results"]:
        is_on = sensor["sensorState"]["status"] == "RUNNING"
        if running and not is_on:
            start_sensor(dev, sensor["name"])
        elif not running and is_on:
            stop_sensor(dev, sensor["name"])


def automation_statuses(dev: DevInstance) -> dict[str, str]:
    data = dev.graphql("""query($r: RepositorySelector!) {
      schedulesOrError(repositorySelector: $r) { ... on Schedules { results { name
        scheduleState { status } } } }
      sensorsOrError(repositorySelector: $r) { ... on Sensors { results { name
        sensorState { status } } } } }""", {"r": REPOSITORY})
    out = {s["name"]: s["scheduleState"]["status"]
           for s in data["schedulesOrError"]["results"]}
    return out | {s["name"]: s["sensorState"]["status"]
                  for s in data["sensorsOrError"]["results"]}


def stop_automation(dev: DevInstance, timeout: float = 90) -> None:
    """Stop every schedule and sensor, and keep them stopped: a sensor tick already in
    flight when it is stopped writes its state back as RUNNING when it finishes, so stop
    until two checks a few seconds apart find everything stopped. On a loaded machine the
    checks themselves are slow: past the deadline, only something still RUNNING fails it
    (it once raised "automation keeps running: []" after 30 s at load 12)."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 2:
        if time.monotonic() > deadline:
            running = [n for n, s in automation_statuses(dev).items() if s == "RUNNING"]
            if not running:
                return
            raise TimeoutError(f"automation keeps running: {running}")
        set_automation(dev, running=False)
        time.sleep(2)
        quiet = quiet + 1 if "RUNNING" not in automation_statuses(dev).values() else 0


def sensor_state(dev: DevInstance, name: str) -> dict[str, Any]:
    data = dev.graphql("""query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) {
      __typename ... on Sensor { name sensorState { id status ticks(limit: 20) {
        id status timestamp error { message } } } } } }""",
                       {"s": {**REPOSITORY, "sensorName": name}})["sensorOrError"]
    if data["__typename"] != "Sensor":
        raise GraphQLError(f"sensor {name}: {data}")
    return data["sensorState"]


def start_sensor(dev: DevInstance, name: str) -> None:
    dev.graphql("""mutation($s: SensorSelector!) { startSensor(sensorSelector: $s)
      { __typename } }""", {"s": {**REPOSITORY, "sensorName": name}})


def stop_sensor(dev: DevInstance, name: str) -> None:
    dev.graphql("""mutation($id: String!) { stopSensor(id: $id) { __typename } }""",
                {"id": sensor_state(dev, name)["id"]})


def schedule_status(dev: DevInstance, name: str) -> str:
    data = dev.graphql("""query($s: ScheduleSelector!) { scheduleOrError(scheduleSelector: $s) {
      __typename ... on Schedule { scheduleState { status } } } }""",
                       {"s": {**REPOSITORY, "scheduleName": name}})["scheduleOrError"]
    return data["scheduleState"]["status"]


def cancel_queued_runs(dev: DevInstance) -> int:
    """Drop runs that automation queued before the tests took over (they never started)."""
    runs = dev.graphql("""{ runsOrError(filter: {statuses: [QUEUED, NOT_STARTED]}) {
      ... on Runs { results { runId } } } }""")["runsOrError"]["results"]
    ids = [r["runId"] for r in runs]
    if ids:
        dev.graphql("""mutation($ids: [String!]!) { terminateRuns(runIds: $ids) {
          __typename } }""", {"ids": ids})
    return len(ids)


def settle_runs(dev: DevInstance, timeout: float = 60) -> None:
    """Cancel what automation queued, terminate what it started, wait until all stopped."""
    cancel_queued_runs(dev)
    active = """{ runsOrError(filter: {statuses: [STARTING, STARTED, CANCELING]}) {
      ... on Runs { results { runId status } } } }"""
    ids = [r["runId"] for r in dev.graphql(active)["runsOrError"]["results"]
           if r["status"] != "CANCELING"]
    if ids:
        dev.graphql("""mutation($ids: [String!]!) { terminateRuns(runIds: $ids) {
          __typename } }""", {"ids": ids})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and dev.graphql(active)["runsOrError"]["results"]:
        time.sleep(1)


def ensure_partition(dev: DevInstance, partitions_def: str, key: str) -> None:
    """Add a dynamic partition, as the NAS sensor would (an existing one is fine)."""
    res = dev.graphql("""mutation($r: RepositorySelector!, $p: String!, $k: String!) {
      addDynamicPartition(repositorySelector: $r, partitionsDefName: $p, partitionKey: $k) {
        __typename ... on PythonError { message } } }""",
                      {"r": REPOSITORY, "p": partitions_def, "k": key})
    kind = res["addDynamicPartition"]["__typename"]
    if kind not in {"AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"}:
        raise GraphQLError(f"adding partition {key} to {partitions_def}: {res}")
