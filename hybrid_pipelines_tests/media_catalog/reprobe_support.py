"""Helpers of the re-probing tests: an ffprobe wrapper script and catalog row readers."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from hybrid_pipelines.resources import FFprobeResource, FirestoreResource


def ffprobe_wrapper(tmp_path: Path, version: str, *, slow_flag: Path | None = None,
                    started_flag: Path | None = None, delay_s: float = 0.0) -> Path:
    """A script standing in for ffprobe: `-version` reports `version`; a probe (its command
    has -print_format) hangs while `slow_flag` exists (so the pipeline's ffprobe timeout
    fires: the hang is `exec sleep`, so the kill reaches the process that holds the pipes),
    touches `started_flag` and waits `delay_s` first; everything else is the real ffprobe."""
    real = shutil.which("ffprobe")
    if real is None:
        pytest.skip("ffprobe is not installed (apt-get install ffmpeg)")
    lines = ["#!/bin/sh",
             'if [ "$1" = "-version" ]; then',
             f'  echo "ffprobe version {version} Copyright (c) test wrapper"; exit 0',
             "fi",
             'case " $* " in *" -print_format "*)']
    if started_flag is not None:
        lines.append(f"  touch '{started_flag}'")
    if delay_s:
        lines.append(f"  sleep {delay_s}")
    if slow_flag is not None:
        lines.append(f"  if [ -e '{slow_flag}' ]; then exec sleep 60; fi")
    lines += ["  ;;", "esac", f'exec "{real}" "$@"', ""]
    path = tmp_path / f"ffprobe-{version}"
    path.write_text("\n".join(lines))
    path.chmod(0o755)
    return path


def ffprobe_at(path: Path, timeout_s: float = 30.0) -> FFprobeResource:
    return FFprobeResource(path=str(path), timeout_s=timeout_s)


def rows(catalog_path: str) -> dict[str, dict[str, Any]]:
    """File name -> its catalog row."""
    with sqlite3.connect(catalog_path) as conn:
        conn.row_factory = sqlite3.Row
        return {r["name"]: dict(r) for r in conn.execute("SELECT * FROM files")}


def file_doc(fs: FirestoreResource, folder: str, path: str) -> dict[str, Any]:
    """The Firestore document of the file at `path` (share-relative) in partition `folder`."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    q = fs.client().collection("files").where(filter=FieldFilter("partition", "==", folder))
    docs = [d.to_dict() for d in q.stream()]
    found = [d for d in docs if d["path"] == path]
    assert len(found) == 1, (path, [d["path"] for d in docs])
    return found[0]
