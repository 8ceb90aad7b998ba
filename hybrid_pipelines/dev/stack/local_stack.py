"""The embedded local stack: every backend as a real server on 127.0.0.1, data in one folder."""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from hybrid_pipelines.dev.stack.base import LocalServer
from hybrid_pipelines.dev.stack.firestore import FirestoreEmulator, emulator_unavailable
from hybrid_pipelines.dev.stack.instance_config import write_instance_yaml
from hybrid_pipelines.dev.stack.juicefs import JuiceFSMount
from hybrid_pipelines.dev.stack.platform import PlatformSim, platform_component
from hybrid_pipelines.dev.stack.postgres import PostgresServer
from hybrid_pipelines.dev.stack.process import (
    LOOPBACK,
    bindable,
    free_port,
    wait_until,
    write_private,
)
from hybrid_pipelines.dev.stack.samba import SambaServer, samba_available
from hybrid_pipelines.dev.stack.seaweedfs import SeaweedFSServer
from hybrid_pipelines.dev.stack.seed import seed_share
from hybrid_pipelines.resources.nas_fs import NAS_SENTINEL

SERVER_TYPES: dict[str, type[LocalServer]] = {
    cls.name: cls
    for cls in (PostgresServer, SeaweedFSServer, SambaServer, FirestoreEmulator, JuiceFSMount,
                PlatformSim)
}
# The platform simulator (`stack up --platform`) last: it writes to the servers before it.
START_ORDER = ("postgres", "seaweedfs", "samba", "firestore", "juicefs", "platform")
# The AI platform's stores, as its design names them: cold models and generated outputs in
# buckets of their own, its database `ai_platform` beside the file server's (same server).
COLD_MODELS_BUCKET, OUTPUTS_BUCKET = "cold-models", "generated-outputs"
AI_DATABASE = "ai_platform"


def default_state_dir() -> Path:
    return Path(os.environ.get("HP_STACK_DIR", ".local")).resolve()


def _load_secrets(path: Path) -> dict[str, str]:
    if path.exists():
        return json.loads(path.read_text())
    values = {k: secrets.token_urlsafe(18) for k in ("pg_password", "s3_secret", "nas_password")}
    values["s3_access"] = "hp" + secrets.token_hex(8)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(path, json.dumps(values))
    return values


def _port(previous: int | None, env_name: str) -> int:
    configured = os.environ.get(env_name)
    if configured:
        return int(configured)
    if previous and bindable(previous):
        return previous  # keep stack.env stable across restarts
    return free_port()


@dataclass
class LocalStack:
    state_dir: Path = field(default_factory=default_state_dir)
    servers: dict[str, LocalServer] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def state_file(self) -> Path:
        return self.state_dir / "stack.json"

    @property
    def env_file(self) -> Path:
        return self.state_dir / "stack.env"

    @classmethod
    def load(cls, state_dir: Path | None = None) -> LocalStack:
        stack = cls(state_dir or default_state_dir())
        if stack.state_file.exists():
            for name, rec in json.loads(stack.state_file.read_text()).items():
                stack.servers[name] = SERVER_TYPES[name].from_record(rec)
        return stack

    def save(self) -> None:
        # Passwords and keys live here: the folder is its owner's alone.
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        records = {n: s.record() for n, s in self.servers.items()}
        write_private(self.state_file, json.dumps(records, indent=2))
        lines = [f"{k}={v}" for k, v in sorted(self.env().items())]
        write_private(self.env_file, "\n".join(lines) + "\n")

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {
            "HP_SQLITE_CATALOG_PATH": str(self.state_dir / "catalog" / "catalog.db"),
            "HP_SQLITE_CATALOG_REQUIRE_MOUNT": "false",  # a plain folder here, a volume deployed
            "HP_EFS_MOUNT_PATH": str(self.state_dir / "efs"),
            "HP_FFPROBE_PATH": "ffprobe",
            "HP_FFPROBE_TIMEOUT": "30",
            "DAGSTER_HOME": str(self.state_dir / "dagster_home"),
            # The stack's defaults fill what is unset (resources/build.py).
            "HP_RESOURCES_MODE": "local",
        }
        for server in self.servers.values():
            out |= server.env()
        if "HP_PG_HOST" in out:  # ai_platform: its own database on the same server
            out |= {f"HP_AI_PG_{k}": out[f"HP_PG_{k}"]
                    for k in ("HOST", "PORT", "USER", "PASSWORD")}
            out["HP_AI_PG_DATABASE"] = AI_DATABASE
        if "HP_OBJECT_STORE_ENDPOINT" in out:
            out["HP_OBJECT_STORE_BUCKET"] = COLD_MODELS_BUCKET
            out["HP_OBJECT_STORE_OUTPUTS_BUCKET"] = OUTPUTS_BUCKET
        return out

    def _plan(self) -> dict[str, LocalServer]:
        """Servers to run, reusing ports and data of the previous run."""
        sec = _load_secrets(self.state_dir / "secrets.json")
        prev = self.servers
        d = self.state_dir

        def was(name: str, attr: str) -> int | None:
            return getattr(prev.get(name), attr, None)

        pg = PostgresServer(root=d / "postgres",
                            port=_port(was("postgres", "port"), "HP_STACK_PG_PORT"),
                            password=sec["pg_password"])
        sw = prev.get("seaweedfs")
        if not isinstance(sw, SeaweedFSServer) or sw.ports_taken():
            sw = SeaweedFSServer.on_free_ports(d / "seaweedfs", sec["s3_access"], sec["s3_secret"])
        sw.pid = None
        sw.buckets = tuple(dict.fromkeys((*sw.buckets, COLD_MODELS_BUCKET, OUTPUTS_BUCKET)))
        plan: dict[str, LocalServer] = {"postgres": pg, "seaweedfs": sw}
        if why := samba_available():
            self.warnings.append(f"NAS: {why}; the NAS falls back to the local folder {d / 'nas'}.")
        else:
            plan["samba"] = SambaServer(root=d / "samba",
                                        port=_port(was("samba", "port"), "HP_STACK_SMB_PORT"),
                                        password=sec["nas_password"])
        if why := emulator_unavailable():
            self.warnings.append(f"Firestore: {why}; the Firestore sync will report it unhealthy.")
        else:
            plan["firestore"] = FirestoreEmulator(
                root=d / "firestore",
                port=_port(was("firestore", "port"), "HP_STACK_FIRESTORE_PORT"))
        plan["juicefs"] = JuiceFSMount(
            root=d / "juicefs",
            meta_url=f"postgres://postgres@{LOOPBACK}:{pg.port}/juicefs?sslmode=disable",
            meta_password=sec["pg_password"], bucket_url=f"{sw.address}/jfs",
            access_key=sec["s3_access"], secret_key=sec["s3_secret"])
        if platform := platform_component(d, prev.get("platform")):
            plan["platform"] = platform
        return plan

    def up(self, log: Callable[[str], None] = print) -> float:
        t0 = time.monotonic()
        running = {n: s for n, s in self.servers.items() if s.alive() and s.healthy()}
        if running and len(running) == len(self.servers):
            platform = platform_component(self.state_dir, None)
            if platform is None or "platform" in self.servers:
                log("stack already up")
                return 0.0
            self.servers["platform"] = platform  # `stack up --platform` on a running stack
            try:
                self._start_platform(log)
            finally:
                self.save()  # its PID, even when it failed to become healthy
            return 0.0
        self.down(log=lambda _m: None)
        self.servers = self._plan()
        first = [n for n in START_ORDER
                 if n in self.servers and n not in ("juicefs", "platform")]
        try:
            with ThreadPoolExecutor(len(first)) as pool:
                futures = {n: pool.submit(self._timed_start, n) for n in first}
                for name, fut in futures.items():
                    log(f"  {name:<10} up in {fut.result():5.1f}s  {self.servers[name].address}")
            self._point_juicefs_at_s3()
            log(f"  {'juicefs':<10} up in {self._timed_start('juicefs'):5.1f}s  "
                f"{self.servers['juicefs'].address}")
            self._start_platform(log)
        except BaseException:
            self.save()  # record PIDs so `stack down` can still clean up
            self.down(log=lambda _m: None)
            raise
        jfs = self.servers["juicefs"]
        if isinstance(jfs, JuiceFSMount) and not jfs.mounted:
            self.warnings.append(f"JuiceFS: {jfs.fallback_reason}; the hot tier is a plain "
                                 f"directory at {jfs.mount_path}.")
        nas_dir = self.nas_dir()
        created = seed_share(nas_dir)
        if created:
            log(f"  seeded the NAS share with {len(created)} sample media files")
        for sub in ("catalog", "efs", "dagster_home"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        write_instance_yaml(self.state_dir / "dagster_home")
        self.save()
        self._create_dagster_schema(log)
        for w in self.warnings:
            log(f"WARNING: {w}")
        elapsed = time.monotonic() - t0
        log(f"stack up: all healthy in {elapsed:.1f}s; environment in {self.env_file}")
        return elapsed

    def _create_dagster_schema(self, log: Callable[[str], None]) -> None:
        """Create the Dagster instance's tables once, before the webserver, daemon and CLI
        processes race to create them on first use (Postgres then refuses the duplicate)."""
        import subprocess
        import sys

        marker = self.state_dir / "dagster_home" / ".schema-ready"
        if marker.exists():
            return
        dagster = str(Path(sys.executable).parent / "dagster")
        res = subprocess.run([dagster, "instance", "migrate"], env={**os.environ, **self.env()},
                             capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["?"]
            raise RuntimeError(f"creating the Dagster instance tables failed: {tail[0]}")
        marker.touch()
        log("  dagster instance tables ready")

    def _point_juicefs_at_s3(self) -> None:
        """JuiceFS formats and mounts against the S3 gateway as it is now: SeaweedFS may have
        moved to fresh ports after losing a bind race, and must answer S3 requests first."""
        sw, jfs = self.servers["seaweedfs"], self.servers["juicefs"]
        assert isinstance(sw, SeaweedFSServer) and isinstance(jfs, JuiceFSMount)
        jfs.bucket_url = f"{sw.address}/jfs"
        wait_until(sw.s3_ready, 60, f"SeaweedFS S3 gateway on {sw.address}", sw.log_path)

    def _start_platform(self, log: Callable[[str], None]) -> None:
        platform = self.servers.get("platform")
        if isinstance(platform, PlatformSim):
            platform.stack_env = self.env()
            log(f"  {'platform':<10} up in {self._timed_start('platform'):5.1f}s  "
                f"{platform.address}")

    def _timed_start(self, name: str) -> float:
        t = time.monotonic()
        self.servers[name].start()
        return time.monotonic() - t

    def nas_dir(self) -> Path:
        samba = self.servers.get("samba")
        if isinstance(samba, SambaServer):
            samba.share_dir.mkdir(parents=True, exist_ok=True)
            return samba.share_dir
        # Without Samba the NAS is this plain folder (HP_NAS_PROTOCOL=local): mark it as the
        # share, as an operator marks a mounted one, or the NAS resource refuses it.
        path = self.state_dir / "nas"
        path.mkdir(parents=True, exist_ok=True)
        (path / NAS_SENTINEL).touch()
        return path

    def down(self, log: Callable[[str], None] = print) -> None:
        for name in reversed(START_ORDER):
            server = self.servers.get(name)
            if server is not None and (server.pid or name == "juicefs"):
                server.stop()
                log(f"  {name:<10} stopped")
        if self.state_file.exists():
            self.save()

    def status(self) -> list[dict[str, object]]:
        rows = []
        for name in START_ORDER:
            server = self.servers.get(name)
            if server is None:
                continue
            rows.append({"server": name, "address": server.address, "pid": server.pid,
                         "running": server.alive(), "healthy": server.alive() and server.healthy()})
        return rows
