"""Samba never serves the share as root (issue 12, item 10): a root smbd acts as the NAS's own
unprivileged account on the share, a normal user's `sudo -n` smbd as that user. Real smbd,
real SMB3 writes, ownership read from the disk."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from hybrid_pipelines.dev.stack.privilege import decide
from hybrid_pipelines.dev.stack.samba import SambaServer, share_owner

from ..conftest import nas_resource_for


def _conf_lines(server: SambaServer) -> list[str]:
    return [line.strip() for line in server.conf_path.read_text().splitlines()]


def test_root_serves_the_share_as_the_nas_account_not_root() -> None:
    root = decide(0, 0, "root", "needs-password")
    assert share_owner(root, "hpnas") == "hpnas"
    assert share_owner(decide(1002, 1002, "hpdev", "ok"), "hpnas") == "hpdev"


def test_files_written_over_smb_are_not_root_owned(server_factory) -> None:
    server = server_factory("samba")
    assert isinstance(server, SambaServer)
    # The test stack lives in a 0700 folder: the account reaches the share anyway, and only it.
    assert server.root.parent.stat().st_mode & 0o077 == 0
    fs = nas_resource_for(server).fs()
    fs.makedirs("owner-check/deeper")
    with fs.open_write("owner-check/deeper/over-smb.bin") as fh:
        fh.write(b"x" * 10)
    on_disk = server.share_dir / "owner-check" / "deeper" / "over-smb.bin"
    assert on_disk.read_bytes() == b"x" * 10
    lines = _conf_lines(server)
    assert "force user = root" not in lines
    if os.geteuid() == 0:
        account = pwd.getpwnam(server.username)
        assert account.pw_uid != 0
        for made in (on_disk, on_disk.parent, on_disk.parent.parent):
            assert made.stat().st_uid == account.pw_uid, (made, made.stat().st_uid)
        assert f"force user = {server.username}" in lines
    else:  # the sudo path: the invoking user owns what the NAS writes
        assert on_disk.stat().st_uid == os.geteuid()


def test_what_root_puts_in_the_share_directly_stays_usable_over_smb(server_factory) -> None:
    """Tests and the stack's seed write the share's folder directly (as root in CI); the NAS
    account must still read, add to, rename and delete in what they made."""
    server = server_factory("samba")
    assert isinstance(server, SambaServer)
    local = server.share_dir / "seeded-locally" / "inner"
    local.mkdir(parents=True)
    (local / "a.txt").write_bytes(b"seeded")
    fs = nas_resource_for(server).fs()
    with fs.open_read("seeded-locally/inner/a.txt") as fh:
        assert fh.read() == b"seeded"
    with fs.open_write("seeded-locally/inner/b.bin") as fh:
        fh.write(b"added over smb")
    fs.makedirs("seeded-locally/inner/sub")
    fs.rename("seeded-locally/inner/a.txt", "seeded-locally/inner/sub/a.txt")
    assert (local / "sub" / "a.txt").read_bytes() == b"seeded"
    fs.remove("seeded-locally/inner/sub/a.txt")
    assert not (local / "sub" / "a.txt").exists()
    assert (local / "b.bin").read_bytes() == b"added over smb"
    (local / "b.bin").write_bytes(b"root rewrote it")  # and root still writes what smbd made
    with fs.open_read("seeded-locally/inner/b.bin") as fh:
        assert fh.read() == b"root rewrote it"


def test_smbd_holds_no_copy_of_a_fuse_mount_made_before_it(juicefs_mount, server_factory) -> None:
    """A root smbd runs in a mount namespace of its own (the share's private bind), which
    starts as a copy of every mount. A copy of the JuiceFS hot tier there kept the FUSE file
    system alive after `juicefs umount`, so its daemon never exited and was killed after its
    10 s grace at every stop (found as 11 s of each test session's teardown)."""
    server = server_factory("samba")  # started after the JuiceFS mount, as in that session
    mounts = (Path("/proc") / str(server.pid) / "mountinfo").read_text()
    assert str(juicefs_mount.mount_path) not in mounts
    assert " fuse" not in mounts, [line for line in mounts.splitlines() if " fuse" in line]
