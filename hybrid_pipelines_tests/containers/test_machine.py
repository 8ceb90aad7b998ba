"""What the container flavour says where the machine cannot run it (issue #16, item 5): the
scripts name the missing piece and fail, never pass silently; and where the kernel refuses
overlayfs, storage falls back to vfs saying so. The missing pieces are made missing by a PATH
without them (or with a failing stand-in), not by uninstalling anything. Needs no stack."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .engine import CT

TOOLS = ("podman", "runc", "debootstrap")


def path_without(tmp: Path, names: tuple[str, ...], stubs: dict[str, str] | None = None) -> str:
    """A single PATH folder with every command of the current PATH but `names`, plus `stubs`
    (name -> shell script body) in front."""
    out = tmp / "bin"
    out.mkdir()
    for name, body in (stubs or {}).items():
        (out / name).write_text(f"#!/bin/sh\n{body}\n")
        (out / name).chmod(0o755)
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for entry in os.scandir(folder):
            target = out / entry.name
            if entry.name not in names and not target.exists() and not target.is_symlink():
                target.symlink_to(entry.path)
    return str(out)


def clean_env(path: str) -> dict[str, str]:
    """The environment without lib.sh's own settings (test.sh exports them to pytest): lib.sh
    probes the storage and derives the rest itself."""
    own = ("CONTAINERS_STORAGE_CONF", "HP_CT_CATALOG_REQUIRE_MOUNT")
    return {**{k: v for k, v in os.environ.items() if k not in own}, "PATH": path}


def run(script: str, path: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(CT / script), *args], capture_output=True, text=True,
                          timeout=60, env=clean_env(path))


@pytest.mark.fault("podman/runc/debootstrap missing -> containers-test fails naming it",
                   kind="state edited")
@pytest.mark.parametrize("tool", TOOLS)
def test_containers_test_names_the_missing_tool_and_fails(tmp_path: Path, tool: str) -> None:
    res = run("test.sh", path_without(tmp_path, (tool,)))
    assert res.returncode != 0, f"test.sh passed without {tool}: {res.stdout}{res.stderr}"
    assert "this machine cannot run the containers; missing:" in res.stderr, res.stderr
    named = [ln for ln in res.stderr.splitlines() if ln.startswith(f"{tool} (apt-get install")]
    assert named, f"the error does not name {tool}: {res.stderr}"
    # Nothing else is reported missing: the message names exactly what is absent.
    assert not any(ln.startswith(f"{other} (") for other in TOOLS if other != tool
                   for ln in res.stderr.splitlines()), res.stderr
    assert "PASSED" not in res.stdout + res.stderr


def settings_with(path: str) -> tuple[dict[str, str], str]:
    """lib.sh's storage choice with this PATH, and what it printed."""
    script = (f"source {CT / 'lib.sh'} && echo STORAGE=$CONTAINERS_STORAGE_CONF"
              " REQUIRE_MOUNT=$HP_CT_CATALOG_REQUIRE_MOUNT")
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                         env=clean_env(path))
    assert res.returncode == 0, res.stderr
    last = res.stdout.strip().splitlines()[-1]
    return dict(kv.split("=", 1) for kv in last.lower().split()), res.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the overlay probe runs as root only "
                    "(the container flavour is rootful)")
def test_storage_is_overlay_where_the_kernel_mounts_it() -> None:
    got, err = settings_with(os.environ["PATH"])
    if Path(got["storage"]).name != "storage.conf":
        pytest.fail(f"overlay was not chosen on this machine: {err.strip()}")
    assert got["require_mount"] == "true", "the catalog's mount check holds on overlay"
    left = list(Path("/var/lib/hybrid-pipelines-containers").glob(".overlay-probe.*"))
    assert left == [], f"the overlay probe left {left}"


@pytest.mark.fault("kernel refuses overlayfs -> vfs storage, with a note saying so",
                   kind="patched exception")
@pytest.mark.skipif(os.geteuid() != 0, reason="the overlay probe runs as root only "
                    "(the container flavour is rootful)")
def test_storage_falls_back_to_vfs_saying_so_where_overlay_fails(tmp_path: Path) -> None:
    # A stand-in `mount` answering as a kernel without overlayfs does.
    stub = "echo \"mount: unknown filesystem type 'overlay'.\" >&2; exit 32"
    got, err = settings_with(path_without(tmp_path, ("mount",), {"mount": stub}))
    assert Path(got["storage"]).name == "storage-vfs.conf", (got, err)
    assert "overlay storage unavailable" in err and "unknown filesystem type" in err, err
    assert "falling back to vfs" in err, err
    # vfs volumes cannot be told from folders: the catalog's mount check is off there.
    assert got["require_mount"] == "false", got
    left = list(Path("/var/lib/hybrid-pipelines-containers").glob(".overlay-probe.*"))
    assert left == [], f"the overlay probe left {left}"
