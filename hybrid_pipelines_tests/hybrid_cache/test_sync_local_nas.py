"""Issue #12 item 3 (local NAS): with HP_NAS_PROTOCOL=local an unmounted mount point is an empty
directory. It must read as a NAS that is not there (unhealthy, nothing written into it), not
as an empty share; a mounted share is recognised by being a mount point or by its sentinel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hybrid_pipelines.hybrid_cache.health_gate import NAS
from hybrid_pipelines.hybrid_cache.sync import SyncSettings, run_pending_sync
from hybrid_pipelines.resources import NASResource
from hybrid_pipelines.resources.nas import NAS_SENTINEL

from .conftest import Uploader, hc_definitions, observations, row, run_job, sha


@pytest.fixture()
def bare_mount_point(tmp_path: Path) -> Path:
    """What /mnt/nas looks like when the share failed to mount: an empty directory."""
    root = tmp_path / "mnt-nas"
    root.mkdir()
    return root


def test_an_unmounted_local_root_is_unhealthy_and_refused(bare_mount_point: Path) -> None:
    nas = NASResource(protocol="local", local_root=str(bare_mount_point))
    health = nas.health()
    assert not health.ok
    assert "not a mount point" in health.detail and NAS_SENTINEL in health.detail
    assert f"touch {bare_mount_point}/{NAS_SENTINEL}" in health.detail
    with pytest.raises(Exception, match="not a mount point"):
        nas.fs()
    assert list(bare_mount_point.iterdir()) == []


def test_the_sentinel_marks_a_mounted_share(bare_mount_point: Path) -> None:
    (bare_mount_point / NAS_SENTINEL).touch()
    nas = NASResource(protocol="local", local_root=str(bare_mount_point))
    assert nas.health().ok
    fs = nas.fs()
    fs.makedirs("a")
    with fs.open_write("a/x.bin") as out:
        out.write(b"x")
    assert (bare_mount_point / "a" / "x.bin").read_bytes() == b"x"


def test_a_real_mount_point_needs_no_sentinel() -> None:
    root = "/proc" if os.path.ismount("/proc") else "/"
    assert NASResource(protocol="local", local_root=root).health().ok


def test_pending_sync_skips_an_unmounted_share_without_charging(
        conn, upload: Uploader, hc_postgres, s3_resource, bare_mount_point: Path) -> None:
    f = upload(b"must not land in the bare mount point", "clip.mp4")
    nas = NASResource(protocol="local", local_root=str(bare_mount_point))
    defs = hc_definitions(hc_postgres, s3_resource, nas)

    result = run_job(defs, "pending_sync", {"nas_replicas": {"retry_delay_s": 0}})

    skipped = observations(result)["nas_replicas"]
    assert skipped["skipped"] == 1 and "not a mount point" in skipped["skip_reason"]
    r = row(conn, f.id)
    assert r["nas_status"] == "pending" and r["sync_attempts"] == 0
    assert list(bare_mount_point.iterdir()) == []

    (bare_mount_point / NAS_SENTINEL).touch()  # the share is mounted (and marked) now
    conn.execute("TRUNCATE backend_circuit")  # do not wait for the breaker's cool-down
    run_job(defs, "pending_sync", {"nas_replicas": {"retry_delay_s": 0}})
    r = row(conn, f.id)
    assert r["nas_status"] == "synced"
    assert sha((bare_mount_point / r["nas_path"]).read_bytes()) == f.sha256


@pytest.mark.fault("the local share unmounted while a sync runs -> writes refused, rows handed "
                   "back without an attempt charged", kind="state edited")
def test_a_share_gone_mid_run_is_not_written_into(conn, upload: Uploader, s3_resource,
                                                  bare_mount_point: Path) -> None:
    (bare_mount_point / NAS_SENTINEL).touch()
    nas = NASResource(protocol="local", local_root=str(bare_mount_point))
    files = [upload(bytes([i]) * 500, f"f{i}.bin") for i in range(3)]
    fs = nas.fs()
    (bare_mount_point / NAS_SENTINEL).unlink()  # the mount went away after the run started

    report = run_pending_sync(conn, s3_resource.get_client(), s3_resource.bucket, fs,
                              SyncSettings(retry_delay_s=0), probes={NAS: nas.health})

    assert report.synced == 0 and report.stopped_backend == NAS
    assert "not a mount point" in report.stopped_reason
    for f in files:
        r = row(conn, f.id)
        assert r["nas_status"] == "pending" and r["sync_attempts"] == 0
    assert list(bare_mount_point.iterdir()) == []


def test_local_rename_never_replaces(bare_mount_point: Path) -> None:
    (bare_mount_point / NAS_SENTINEL).touch()
    fs = NASResource(protocol="local", local_root=str(bare_mount_point)).fs()
    (bare_mount_point / "keep.txt").write_bytes(b"original")
    (bare_mount_point / "new.txt").write_bytes(b"newcomer")
    with pytest.raises(FileExistsError):
        fs.rename("new.txt", "keep.txt")
    assert (bare_mount_point / "keep.txt").read_bytes() == b"original"
    assert (bare_mount_point / "new.txt").read_bytes() == b"newcomer"
    fs.rename("new.txt", "moved.txt")
    assert (bare_mount_point / "moved.txt").read_bytes() == b"newcomer"
    assert not (bare_mount_point / "new.txt").exists()


def test_local_rename_without_renameat2_uses_a_hard_link(bare_mount_point: Path,
                                                         monkeypatch) -> None:
    # NFS and older kernels lack RENAME_NOREPLACE; this file system has it, so its absence is
    # simulated by hiding the libc function: the hard-link fallback must not replace either.
    from hybrid_pipelines.resources import local_rename

    monkeypatch.setattr(local_rename, "_RENAMEAT2", None)
    test_local_rename_never_replaces(bare_mount_point)
