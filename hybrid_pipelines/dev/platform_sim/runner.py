"""The platform simulator's process: the file server's and the AI backend's writers, one
action at a time at a gentle rate, until SIGTERM or SIGINT.

`python -m hybrid_pipelines.dev.platform_sim.runner`, with the local stack's environment
(stack.env; `stack up --platform` starts it so). Settings: HP_STACK_PLATFORM_INTERVAL_S
(seconds between actions, default 1), HP_STACK_PLATFORM_SEED (a repeatable sequence),
HP_STACK_PLATFORM_HEARTBEAT (a file rewritten after each successful action: the stack's health
check). A failing action (a server restarting) is logged and the loop goes on."""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

INTERVAL_ENV = "HP_STACK_PLATFORM_INTERVAL_S"
SEED_ENV = "HP_STACK_PLATFORM_SEED"
HEARTBEAT_ENV = "HP_STACK_PLATFORM_HEARTBEAT"
AI_DATABASE = "ai_platform"
SUMMARY_EVERY_S = 60.0


class Writer(Protocol):
    def tick(self, rng: random.Random) -> Any: ...


def _first(env: Mapping[str, str], *names: str, default: str = "") -> str:
    for name in names:
        if env.get(name):
            return env[name]
    return default


@dataclass(frozen=True)
class SimSettings:
    """Where the simulated services write, from the stack's HP_* variables (stack.env)."""

    pg_host: str
    pg_port: int
    pg_user: str
    pg_password: str
    file_server_database: str
    ai_host: str
    ai_port: int
    ai_user: str
    ai_password: str
    ai_database: str
    s3_endpoint: str      # SeaweedFS's S3 gateway: the file server's cache
    s3_access_key: str
    s3_secret_key: str
    master_url: str
    cache_bucket: str
    os_endpoint: str      # the AI platform's object store (MinIO; SeaweedFS here)
    os_access_key: str
    os_secret_key: str
    models_bucket: str
    outputs_bucket: str
    hot_root: str         # the AI platform's hot tier (JuiceFS mount)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SimSettings:
        missing = [n for n in ("HP_PG_HOST", "HP_PG_PORT", "HP_SEAWEEDFS_S3_ENDPOINT")
                   if not env.get(n)]
        if missing:
            raise RuntimeError(
                f"platform simulator: {', '.join(missing)} not set; it runs with the local "
                "stack's environment (start it with `hybrid-pipelines stack up --platform`, "
                "or source the stack's stack.env)")
        # ai_platform may have its own server (HP_AI_PG_*); on the local stack it shares ours.
        ai = "HP_AI_PG_HOST" in env
        return cls(
            pg_host=env["HP_PG_HOST"], pg_port=int(env["HP_PG_PORT"]),
            pg_user=_first(env, "HP_PG_USER", default="postgres"),
            pg_password=env.get("HP_PG_PASSWORD", ""),
            file_server_database=_first(env, "HP_PG_DATABASE", default="hybrid"),
            ai_host=env["HP_AI_PG_HOST"] if ai else env["HP_PG_HOST"],
            ai_port=int(_first(env, "HP_AI_PG_PORT", "HP_PG_PORT")),
            ai_user=_first(env, "HP_AI_PG_USER", "HP_PG_USER", default="postgres"),
            ai_password=_first(env, "HP_AI_PG_PASSWORD", "HP_PG_PASSWORD"),
            ai_database=_first(env, "HP_AI_PG_DATABASE", default=AI_DATABASE),
            s3_endpoint=env["HP_SEAWEEDFS_S3_ENDPOINT"],
            s3_access_key=env.get("HP_SEAWEEDFS_ACCESS_KEY", ""),
            s3_secret_key=env.get("HP_SEAWEEDFS_SECRET_KEY", ""),
            master_url=env.get("HP_SEAWEEDFS_MASTER_URL", ""),
            cache_bucket=_first(env, "HP_SEAWEEDFS_BUCKET", default="media-cache"),
            os_endpoint=_first(env, "HP_OBJECT_STORE_ENDPOINT", "HP_SEAWEEDFS_S3_ENDPOINT"),
            os_access_key=_first(env, "HP_OBJECT_STORE_ACCESS_KEY", "HP_SEAWEEDFS_ACCESS_KEY"),
            os_secret_key=_first(env, "HP_OBJECT_STORE_SECRET_KEY", "HP_SEAWEEDFS_SECRET_KEY"),
            models_bucket=_first(env, "HP_OBJECT_STORE_BUCKET", default="cold-models"),
            outputs_bucket=_first(env, "HP_OBJECT_STORE_OUTPUTS_BUCKET",
                                  default="generated-outputs"),
            hot_root=env.get("HP_JUICEFS_MOUNT_PATH", ""))

    @staticmethod
    def _conninfo(host: str, port: int, user: str, password: str, dbname: str) -> str:
        from psycopg.conninfo import make_conninfo

        # The platform's TIMESTAMP columns hold UTC (what its services' now() wrote).
        return make_conninfo(host=host, port=port, user=user, password=password,
                             dbname=dbname, connect_timeout=5,
                             application_name="platform-simulator",
                             options="-c TimeZone=UTC")

    def file_server_conninfo(self) -> str:
        return self._conninfo(self.pg_host, self.pg_port, self.pg_user, self.pg_password,
                              self.file_server_database)

    def ai_conninfo(self, dbname: str | None = None) -> str:
        return self._conninfo(self.ai_host, self.ai_port, self.ai_user, self.ai_password,
                              dbname or self.ai_database)

    def buckets(self) -> dict[str, tuple[str, ...]]:
        """Bucket names by the client that writes them (`cache`, `object_store`)."""
        return {"cache": (self.cache_bucket,),
                "object_store": (self.models_bucket, self.outputs_bucket)}

    @staticmethod
    def _client(endpoint: str, access_key: str, secret_key: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access_key,
                            aws_secret_access_key=secret_key, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"},
                                          retries={"max_attempts": 2}, connect_timeout=5))

    def s3_client(self) -> Any:
        """The file server's SeaweedFS S3 gateway."""
        return self._client(self.s3_endpoint, self.s3_access_key, self.s3_secret_key)

    def object_store_client(self) -> Any:
        """The AI platform's object store (cold models, generated outputs)."""
        return self._client(self.os_endpoint, self.os_access_key, self.os_secret_key)


def build_writers(settings: SimSettings) -> list[tuple[str, Writer]]:
    """The file server's and the AI backend's writers, imported only here (so importing this
    module, as the stack does, loads neither)."""
    from hybrid_pipelines.dev.platform_sim.ai_backend import AIBackend
    from hybrid_pipelines.dev.platform_sim.file_server import FileServerSim

    file_server = FileServerSim(conninfo=settings.file_server_conninfo(),
                                s3=settings.s3_client(), bucket=settings.cache_bucket,
                                master_url=settings.master_url)
    ai_backend = AIBackend(conninfo=settings.ai_conninfo(), s3=settings.object_store_client(),
                           outputs_bucket=settings.outputs_bucket,
                           hot_root=settings.hot_root or None)
    return [("file_server", file_server), ("ai_backend", ai_backend)]


def write_heartbeat(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)  # a reader never sees half a file


def heartbeat_age(path: Path, now: float) -> float | None:
    """Seconds since the last successful action, or None before the first."""
    try:
        return max(0.0, now - float(json.loads(path.read_text())["at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def run_loop(writers: Sequence[tuple[str, Writer]], rng: random.Random, stop: threading.Event,
             interval_s: float, heartbeat: Path | None,
             log: Callable[[str], None] = print) -> dict[str, int]:
    """Round-robin over the writers, one tick per interval, until `stop` is set. Returns the
    count of successful actions per writer (and `errors`)."""
    counts = {name: 0 for name, _ in writers} | {"errors": 0}
    last_error = ""  # kept in the heartbeat
    repeating = ""  # the failure under way: said once, then every 30th time
    last_summary = time.monotonic()
    turn = 0
    while not stop.is_set():
        name, writer = writers[turn % len(writers)]
        turn += 1
        try:
            writer.tick(rng)
            counts[name] += 1
            repeating = ""
            if heartbeat is not None:
                write_heartbeat(heartbeat, {"at": time.time(), "pid": os.getpid(), **counts,
                                            "last_error": last_error})
        except Exception as exc:  # noqa: BLE001 - a server restarting must not end the loop
            counts["errors"] += 1
            message = f"{name}: {_one_line(exc)}"
            if message != repeating or counts["errors"] % 30 == 0:
                log(f"action failed ({counts['errors']} so far): {message}")
            last_error = repeating = message
        if time.monotonic() - last_summary >= SUMMARY_EVERY_S:
            last_summary = time.monotonic()
            log(f"actions so far: {json.dumps(counts)}")
        stop.wait(interval_s)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    env = os.environ
    stop = threading.Event()

    def _on_signal(_sig: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        interval = float(env.get(INTERVAL_ENV) or 1.0)
    except ValueError:
        interval = 0.0
    if interval <= 0:
        print(f"error: {INTERVAL_ENV}={env.get(INTERVAL_ENV)!r}: give the seconds between "
              "actions, a number more than 0", file=sys.stderr)
        return 2
    seed = env.get(SEED_ENV)
    rng = random.Random(int(seed) if seed else None)
    heartbeat = Path(env[HEARTBEAT_ENV]) if env.get(HEARTBEAT_ENV) else None

    def log(message: str) -> None:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {message}", flush=True)

    try:
        writers = build_writers(SimSettings.from_env(env))
    except (RuntimeError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    log(f"platform simulator: {', '.join(n for n, _ in writers)}, one action per "
        f"{interval:g}s")
    try:
        counts = run_loop(writers, rng, stop, interval, heartbeat, log)
    finally:
        for _name, writer in writers:
            close = getattr(writer, "close", None)
            if callable(close):
                close()
    log(f"platform simulator stopped: {json.dumps(counts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
