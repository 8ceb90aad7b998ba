"""Real servers for the tests: each starts once per session on free 127.0.0.1 ports, with
data in a temp dir, and is stopped by PID at teardown even when tests fail.

Fixtures that need a backend this machine cannot run skip with the reason; they never pass
silently. Under CI (`CI=true`) or `HP_REQUIRE_ALL_BACKENDS=1` every skip and every stand-in (a
plain directory for the JuiceFS mount) fails the run instead, with the same reason, so CI
cannot be green with a backend missing. Every run ends with the list of skips and reasons.
Tests that kill a server use `server_factory` to get one of their own."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hybrid_pipelines.dev.stack.base import LocalServer
from hybrid_pipelines.dev.stack.firestore import FirestoreEmulator, emulator_unavailable
from hybrid_pipelines.dev.stack.juicefs import JuiceFSMount
from hybrid_pipelines.dev.stack.postgres import PostgresServer
from hybrid_pipelines.dev.stack.process import LOOPBACK, free_port
from hybrid_pipelines.dev.stack.samba import SambaServer, samba_available
from hybrid_pipelines.dev.stack.seaweedfs import SeaweedFSServer
from hybrid_pipelines.resources import (
    EFSResource,
    FFprobeResource,
    FirestoreResource,
    JuiceFSResource,
    NASResource,
    ObjectStoreResource,
    PostgresResource,
    SeaweedFSResource,
    SQLiteCatalogResource,
)

_started: list[LocalServer] = []
_started_lock = threading.Lock()


def require_all_backends() -> bool:
    """CI must be red, not quietly green, when a backend is missing."""
    flag = os.environ.get("HP_REQUIRE_ALL_BACKENDS", "").strip().lower()
    if flag:
        return flag not in ("0", "false", "no")
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


STRICT_WHY = "CI=true or HP_REQUIRE_ALL_BACKENDS=1: a missing backend fails the run"


def _stop_all() -> None:
    while _started:
        server = _started.pop()
        try:
            server.stop()
        except Exception:  # noqa: BLE001 - teardown must reach every server
            pass


atexit.register(_stop_all)  # a crashed session still leaves no orphan servers


def _start(server: LocalServer) -> LocalServer:
    _started.append(server)
    server.start()
    return server


def _stop(server: LocalServer) -> None:
    server.stop()
    with _started_lock:  # server_factory stops its servers from several threads
        if server in _started:
            _started.remove(server)


@pytest.fixture(scope="session")
def stack_dir() -> Iterator[Path]:
    """A short path outside pytest's temp root (Samba and JuiceFS put sockets there), mode
    0700 like the rest: PostgreSQL runs with the invoking user's access (stack/postgres.py)."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="hp-test-stack-"))
    yield root
    _stop_all()
    shutil.rmtree(root, ignore_errors=True)


ServerFactory = Callable[[str], LocalServer]


@pytest.fixture(scope="session")
def server_factory(stack_dir: Path) -> Iterator[ServerFactory]:
    """Start a private server of a kind ('postgres', 'seaweedfs', 'samba', 'firestore'), for
    tests that kill or restart it. Stopped at the end of the session."""
    mine: list[LocalServer] = []
    counter = iter(range(10_000))

    def make(kind: str) -> LocalServer:
        # A free port can be taken by another process between our check and the server's
        # bind (parallel test sessions, benches): try again on fresh ports, in a fresh dir.
        for attempt in range(3):
            try:
                return _make(kind)
            except RuntimeError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _make(kind: str) -> LocalServer:
        root = stack_dir / f"{kind}-{next(counter)}"
        server: LocalServer
        if kind == "postgres":
            server = PostgresServer(root=root, port=free_port(), password=secrets.token_hex(8),
                                    durable=False)
        elif kind == "seaweedfs":
            server = SeaweedFSServer.on_free_ports(root, "test" + secrets.token_hex(4),
                                                   secrets.token_hex(12))
        elif kind == "samba":
            if why := samba_available():
                pytest.skip(f"NAS tests need Samba: {why}")
            server = SambaServer(root=root, port=free_port(), password=secrets.token_hex(8))
        elif kind == "firestore":
            if why := emulator_unavailable():
                pytest.skip(f"Firestore tests need the emulator: {why}")
            server = FirestoreEmulator(root=root, port=free_port())
        else:
            raise ValueError(kind)
        try:
            _start(server)
        except RuntimeError:
            _stop(server)
            raise
        mine.append(server)
        return server

    yield make
    # All at once: the stops do not depend on each other (the JuiceFS mount, which needs
    # PostgreSQL and SeaweedFS, was unmounted by its own fixture before), and each may wait
    # out its server's grace period; one after the other they cost the session half a minute.
    with ThreadPoolExecutor(max(1, len(mine))) as pool:
        stops = [pool.submit(_stop, server) for server in reversed(mine)]
    for stop in stops:
        stop.result()  # the first failure, once every server was asked to stop


@pytest.fixture(scope="session")
def pg_server(server_factory: ServerFactory) -> PostgresServer:
    server = server_factory("postgres")
    assert isinstance(server, PostgresServer)
    return server


@pytest.fixture(scope="session")
def seaweed_server(server_factory: ServerFactory) -> SeaweedFSServer:
    server = server_factory("seaweedfs")
    assert isinstance(server, SeaweedFSServer)
    return server


@pytest.fixture(scope="session")
def samba_server(server_factory: ServerFactory) -> SambaServer:
    server = server_factory("samba")
    assert isinstance(server, SambaServer)
    return server


@pytest.fixture(scope="session")
def firestore_emulator(server_factory: ServerFactory) -> FirestoreEmulator:
    server = server_factory("firestore")
    assert isinstance(server, FirestoreEmulator)
    return server


@pytest.fixture(scope="session")
def juicefs_mount(stack_dir: Path, pg_server: PostgresServer,
                  seaweed_server: SeaweedFSServer) -> Iterator[JuiceFSMount]:
    mount = JuiceFSMount(
        root=stack_dir / "juicefs",
        meta_url=f"postgres://postgres@{LOOPBACK}:{pg_server.port}/juicefs?sslmode=disable",
        meta_password=pg_server.password, bucket_url=f"{seaweed_server.address}/jfs",
        access_key=seaweed_server.access_key, secret_key=seaweed_server.secret_key)
    _start(mount)  # warns and falls back to a plain directory where FUSE is unusable
    if not mount.mounted:
        _stand_ins.append(f"JuiceFS hot tier is a plain directory at {mount.mount_path}: "
                          f"{mount.fallback_reason}")
        if require_all_backends():
            _stop(mount)
            pytest.fail(f"{_stand_ins[-1]} ({STRICT_WHY})", pytrace=False)
    yield mount
    _stop(mount)


# ---- resources pointed at those servers ------------------------------------------------------

def postgres_resource_for(server: PostgresServer, database: str = "hybrid") -> PostgresResource:
    return PostgresResource(host=LOOPBACK, port=server.port, user=server.user,
                            password=server.password, database=database)


def seaweedfs_resource_for(server: SeaweedFSServer,
                           bucket: str = "media-cache") -> SeaweedFSResource:
    return SeaweedFSResource(endpoint_url=server.address, master_url=server.master_url,
                             aws_access_key_id=server.access_key,
                             aws_secret_access_key=server.secret_key, bucket=bucket)


def object_store_for(server: SeaweedFSServer, bucket: str = "cold-models") -> ObjectStoreResource:
    return ObjectStoreResource(endpoint_url=server.address, aws_access_key_id=server.access_key,
                               aws_secret_access_key=server.secret_key, bucket=bucket)


def nas_resource_for(server: SambaServer) -> NASResource:
    return NASResource(protocol="smb", host=LOOPBACK, port=server.port, share=server.share,
                       username=server.username, password=server.password)


@pytest.fixture(scope="session")
def postgres_resource(pg_server: PostgresServer) -> PostgresResource:
    return postgres_resource_for(pg_server)


@pytest.fixture(scope="session")
def seaweedfs_resource(seaweed_server: SeaweedFSServer) -> SeaweedFSResource:
    return seaweedfs_resource_for(seaweed_server)


@pytest.fixture(scope="session")
def object_store_resource(seaweed_server: SeaweedFSServer) -> ObjectStoreResource:
    return object_store_for(seaweed_server)


@pytest.fixture(scope="session")
def nas_resource(samba_server: SambaServer) -> NASResource:
    return nas_resource_for(samba_server)


@pytest.fixture()
def local_nas_resource(tmp_path: Path) -> NASResource:
    root = tmp_path / "nas"
    root.mkdir()
    (root / ".hybrid-pipelines-nas").touch()  # NAS_SENTINEL: a dir standing in for a mount
    return NASResource(protocol="local", local_root=str(root))


@pytest.fixture(scope="session")
def firestore_resource(firestore_emulator: FirestoreEmulator) -> FirestoreResource:
    return FirestoreResource(project=firestore_emulator.project_id,
                             emulator_host=firestore_emulator.address)


@pytest.fixture(scope="session")
def hot_tier_resource(juicefs_mount: JuiceFSMount) -> JuiceFSResource:
    return JuiceFSResource(mount_path=str(juicefs_mount.mount_path),
                           require_mount=juicefs_mount.mounted)


@pytest.fixture()
def efs_resource(tmp_path: Path) -> EFSResource:
    (tmp_path / "efs").mkdir()
    return EFSResource(mount_path=str(tmp_path / "efs"))


@pytest.fixture()
def catalog_resource(tmp_path: Path) -> SQLiteCatalogResource:
    return SQLiteCatalogResource(path=str(tmp_path / "catalog.db"))


@pytest.fixture(scope="session")
def ffprobe_resource() -> FFprobeResource:
    if not shutil.which("ffprobe"):
        pytest.skip("ffprobe is not installed (apt-get install ffmpeg)")
    return FFprobeResource()


# ---- fault ledger: `@pytest.mark.fault("what happens -> what must hold", kind=...)` ---------
# The kind says how the fault was produced, so the ledger cannot pass a patched function off
# as a crashed server.

KILLED_MID_IO = "killed mid-I/O"  # a real process SIGKILLed while its I/O is in flight
SERVER_STOPPED = "server stopped"  # a real server stopped, killed or frozen between requests
PATCHED_EXCEPTION = "patched exception"  # a Python function patched to raise or misbehave
STATE_EDITED = "state edited"  # rows, objects or files edited behind the job's back
CONCURRENCY = "concurrency"  # racing runs
FAULT_KINDS = (KILLED_MID_IO, SERVER_STOPPED, PATCHED_EXCEPTION, STATE_EDITED, CONCURRENCY)

_faults: dict[str, tuple[str, str, str]] = {}  # nodeid -> (name, kind, outcome)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fault(name, kind): a test that injects this fault and asserts nothing was "
        f"lost or duplicated and the next run completes; kind is one of {FAULT_KINDS}")


def _fault_marker_error(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("fault")
    if marker is None:
        return None
    if len(marker.args) != 1 or not isinstance(marker.args[0], str) or not marker.args[0]:
        return f"{item.nodeid}: @pytest.mark.fault needs exactly one name (a string)"
    kind = marker.kwargs.get("kind")
    if kind not in FAULT_KINDS or set(marker.kwargs) != {"kind"}:
        return (f"{item.nodeid}: @pytest.mark.fault({marker.args[0]!r}) has kind={kind!r}; "
                f"give kind= exactly one of {', '.join(repr(k) for k in FAULT_KINDS)}")
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    errors = [e for e in map(_fault_marker_error, items) if e]
    if errors:
        raise pytest.UsageError("fault markers without a valid kind (a collection error):\n  "
                                + "\n  ".join(errors))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    kind = getattr(report, "fault_kind", None)
    if kind is None:
        return
    name = getattr(report, "fault_name", report.nodeid)
    if report.failed:  # at any phase: a failed setup or teardown is a failed fault test
        outcome = "failed"
    elif report.skipped:
        outcome = "xfailed" if hasattr(report, "wasxfail") else "skipped"
    elif report.when == "call":
        outcome = "passed"
    else:
        return
    previous = _faults.get(report.nodeid)
    if previous is None or previous[2] == "passed" or outcome == "failed":
        _faults[report.nodeid] = (name, kind, outcome)


_skips: dict[str, str] = {}
_stand_ins: list[str] = []


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    marker = item.get_closest_marker("fault")
    if marker is not None and marker.args:
        report.fault_name = str(marker.args[0])
        report.fault_kind = str(marker.kwargs.get("kind"))
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        _skips[item.nodeid] = reason
        if require_all_backends():
            report.outcome = "failed"
            report.longrepr = f"skipped, which fails the run here ({STRICT_WHY}): {reason}"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    tr = terminalreporter
    if _skips or _stand_ins:
        tr.section("skipped or stood in (missing backends and their reasons)")
        for reason in _stand_ins:
            tr.write_line(f"  stand-in  {reason}")
        by_reason: dict[str, list[str]] = {}
        for nodeid, reason in _skips.items():
            by_reason.setdefault(reason, []).append(nodeid)
        for reason, nodeids in sorted(by_reason.items()):
            tr.write_line(f"  {len(nodeids):>3} skipped: {reason}  (e.g. {nodeids[0]})")
        verdict = "FAILED the run" if require_all_backends() else "allowed outside CI"
        tr.write_line(f"{len(_skips)} skipped, {len(_stand_ins)} stand-ins: {verdict}")
    if not _faults:
        return
    tr.section("fault ledger (kind: how the fault was produced)")
    for name, kind, outcome in sorted(_faults.values(), key=lambda f: (f[1], f[0])):
        tr.write_line(f"  {outcome:<8} {kind:<18} {name}")
    kinds = ", ".join(f"{k} {sum(1 for f in _faults.values() if f[1] == k)}"
                      for k in FAULT_KINDS)
    outcomes = ", ".join(f"{o} {sum(1 for f in _faults.values() if f[2] == o)}"
                         for o in ("passed", "failed", "skipped", "xfailed"))
    tr.write_line(f"faults: {len(_faults)} tests - {kinds}; {outcomes}")
