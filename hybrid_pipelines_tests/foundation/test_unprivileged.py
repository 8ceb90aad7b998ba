"""The stack as a normal user with passwordless sudo (issue 10): who runs the privileged steps
(root itself, `sudo -n`, or nobody with the fix named), who owns what Samba writes, and when
JuiceFS can FUSE-mount. The decision logic runs in milliseconds; the Samba checks use a real
smbd as whoever runs the tests; one check runs the decision as another user when root can."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psutil
import pytest

from hybrid_pipelines.dev.stack import privilege, samba
from hybrid_pipelines.dev.stack.juicefs import FuseFacts, fuse_problem
from hybrid_pipelines.dev.stack.privilege import Privilege, decide
from hybrid_pipelines.dev.stack.process import pid_alive
from hybrid_pipelines.dev.stack.samba import SambaServer, samba_available, share_owner

from ..conftest import nas_resource_for

ROOT = decide(0, 0, "root", "needs-password")  # root never consults sudo
SUDOER = decide(1002, 1002, "hpdev", "ok")
NO_SUDO = decide(1002, 1002, "hpdev", "needs-password")


# ---- the decision ------------------------------------------------------------------------------

def test_root_runs_privileged_steps_itself_and_serves_the_share_as_hpnas() -> None:
    assert ROOT.prefix == () and ROOT.missing is None and not ROOT.via_sudo
    assert ROOT.argv(["smbd", "-F"]) == ["smbd", "-F"]
    assert share_owner(ROOT) == "hpnas"  # never root (issue 12): the stack's NAS account


def test_normal_user_with_passwordless_sudo_goes_through_sudo_n() -> None:
    assert SUDOER.missing is None and SUDOER.via_sudo and not SUDOER.is_root
    # -n: a password prompt in a background server start would hang, not fail.
    assert SUDOER.argv(["smbd", "-F"]) == ["sudo", "-n", "smbd", "-F"]
    assert share_owner(SUDOER) == "hpdev"  # the invoking user owns every file on the share


@pytest.mark.parametrize("state, cause", [("needs-password", "wants a password"),
                                          ("missing", "sudo is not installed")])
def test_normal_user_without_usable_sudo_gets_the_fix_named(state: privilege.SudoState,
                                                            cause: str) -> None:
    priv = decide(1002, 1002, "hpdev", state)
    assert priv.missing is not None and not priv.via_sudo
    assert cause in priv.missing
    assert "run as root or give hpdev passwordless sudo" in priv.missing
    with pytest.raises(PermissionError, match="passwordless sudo"):
        priv.argv(["smbd"])


def test_samba_available_follows_the_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(samba, "find_tool", lambda name: f"/usr/sbin/{name}")
    for priv, expected in ((ROOT, None), (SUDOER, None)):
        monkeypatch.setattr(samba, "current", lambda p=priv: p)
        assert samba_available() is expected
    monkeypatch.setattr(samba, "current", lambda: NO_SUDO)
    why = samba_available()
    assert why and "Samba" in why and "passwordless sudo" in why, why
    monkeypatch.setattr(samba, "find_tool", lambda name: None)
    assert samba_available() == "Samba is not installed (apt-get install samba)"


def test_normal_users_have_the_sbin_tools_found(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian leaves /usr/sbin (smbd, useradd) off a normal user's PATH."""
    tool = tmp_path / "smbd"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setattr(privilege, "_SBIN_DIRS", (str(tmp_path),))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert privilege.find_tool("smbd") == str(tool)
    assert privilege.find_tool("no-such-tool") is None


@pytest.mark.parametrize("priv, owner", [(ROOT, "hpnas"), (SUDOER, "hpdev")])
def test_conf_forces_the_share_owner(tmp_path: Path, priv: Privilege, owner: str) -> None:
    server = SambaServer(root=tmp_path, port=4450)
    server._write_conf(share_owner(priv))
    lines = [line.strip() for line in server.conf_path.read_text().splitlines()]
    assert f"force user = {owner}" in lines


def test_runtime_dirs_smbd_wants_as_root_are_cleared_but_state_stays(tmp_path: Path) -> None:
    server = SambaServer(root=tmp_path)
    server._write_conf()
    for rel in ("lock/msg.lock", "lock/msg.sock", "ncalrpc/np", "logs/cores"):
        (tmp_path / rel).mkdir()
        (tmp_path / rel / "123").write_text("")
    (tmp_path / "private" / "passdb.tdb").write_text("kept")
    (tmp_path / "share" / "sub").mkdir()
    server._clear_runtime_dirs()
    assert not [p for p in ("lock/msg.lock", "lock/msg.sock", "ncalrpc/np", "logs/cores")
                if (tmp_path / p).exists()]
    assert (tmp_path / "private" / "passdb.tdb").read_text() == "kept"
    assert (tmp_path / "lock").is_dir() and (tmp_path / "share" / "sub").is_dir()


def test_stop_as_a_normal_user_signals_through_sudo_and_hands_state_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel refuses a normal user's signal to a root smbd, so stop() must go through
    `sudo -n kill`, then give smbd's root-owned state back. A process of ours stands in for
    smbd; the fake runs the command without the sudo prefix (we may signal our own)."""
    me = decide(os.geteuid() or 1002, os.getegid() or 1002, "hpdev", "ok")
    calls: list[list[str]] = []

    def fake_run(priv: Privilege, command: list[str], **_kw: object):
        calls.append(priv.argv(command))
        if command[0] == "kill":
            return subprocess.run(["kill", *command[1:]], capture_output=True, text=True)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(samba, "current", lambda: me)
    monkeypatch.setattr(samba, "run_privileged", fake_run)
    stand_in = subprocess.Popen(["sleep", "60"], start_new_session=True)
    server = SambaServer(root=tmp_path, pid=stand_in.pid)
    server._write_conf()
    try:
        server.stop()
        stand_in.wait(timeout=5)
    finally:
        stand_in.kill()
    assert stand_in.returncode == -signal.SIGTERM and server.pid is None
    assert calls[0] == ["sudo", "-n", "kill", "-s", "TERM", str(stand_in.pid)]  # no children
    chown = calls[-1]
    assert chown[:6] == ["sudo", "-n", "chown", "-R", "-P", f"{me.uid}:{me.gid}"]
    assert str(tmp_path / "lock") in chown and str(tmp_path / "share") not in chown


# ---- FUSE --------------------------------------------------------------------------------------

GOOD_USER = FuseFacts(uid=1002, device_exists=True, device_opens=True, device_mode="crw-rw-rw-",
                      fusermount="/usr/bin/fusermount3")


def test_fuse_for_root_is_as_before_an_open_dev_fuse() -> None:
    assert fuse_problem(FuseFacts(uid=0, device_exists=True, device_opens=True)) is None
    why = fuse_problem(FuseFacts(uid=0, device_exists=True, device_opens=False))
    assert why and "/dev/fuse is not usable" in why


@pytest.mark.parametrize("facts, fix", [
    (FuseFacts(uid=1002, device_exists=False, device_opens=False), "--device /dev/fuse"),
    (FuseFacts(uid=1002, device_exists=True, device_opens=False, device_mode="crw-------",
               fusermount="/usr/bin/fusermount3"), "crw-rw-rw-"),
    (FuseFacts(uid=1002, device_exists=True, device_opens=True, device_mode="crw-rw-rw-"),
     "apt-get install fuse3"),
])
def test_fuse_for_a_normal_user_names_the_fix(facts: FuseFacts, fix: str) -> None:
    why = fuse_problem(facts)
    assert why and fix in why, why


def test_fuse_for_a_normal_user_with_device_and_fusermount3_mounts() -> None:
    assert fuse_problem(GOOD_USER) is None


# ---- a real smbd, as whoever runs the tests ----------------------------------------------------

def test_files_the_nas_writes_belong_to_the_invoking_user(samba_server: SambaServer) -> None:
    """Tests seed the share directly and read what the NAS wrote: as a normal user that only
    works when smbd acts as them (`force user`), not as root."""
    fs = nas_resource_for(samba_server).fs()
    fs.makedirs("unprivileged")
    with fs.open_write("unprivileged/written-over-smb.bin") as fh:
        fh.write(b"x" * 10)
    written = samba_server.share_dir / "unprivileged" / "written-over-smb.bin"
    owner = pwd.getpwnam(samba_server.username).pw_uid if os.geteuid() == 0 else os.geteuid()
    assert written.stat().st_uid == owner
    assert written.read_bytes() == b"x" * 10
    (samba_server.share_dir / "unprivileged" / "seeded.txt").write_text("seeded")
    with fs.open_read("unprivileged/seeded.txt") as fh:
        assert fh.read() == b"seeded"


def _sid(pid: int) -> int:
    try:
        return os.getsid(pid)
    except OSError:
        return -1


def test_stop_leaves_no_smbd_and_a_state_folder_we_own_and_restart_works(
        server_factory) -> None:
    server = server_factory("samba")
    assert isinstance(server, SambaServer)
    launched = server.pid  # smbd itself as root; `sudo -n smbd` as a normal user
    assert launched and pid_alive(launched)
    session = [p.pid for p in psutil.process_iter() if _sid(p.pid) == launched]
    assert len(session) >= 2  # smbd and its workers (and sudo): all must go
    server.stop()
    assert not [p for p in session if pid_alive(p)] and not server.alive()
    # As root the share itself belongs to the NAS account (issue 12), which root can delete.
    nas_uid = pwd.getpwnam(server.username).pw_uid if os.geteuid() == 0 else os.geteuid()
    foreign = [str(p) for p in server.root.rglob("*") if p.lstat().st_uid != os.geteuid()
               and not (p.is_relative_to(server.share_dir) and p.lstat().st_uid == nas_uid)]
    assert not foreign, foreign  # else the user could not delete the state folder
    server.start()  # smbd refuses runtime dirs it did not create as root: they were cleared
    assert server.alive() and server.healthy()
    server.kill()
    assert not server.alive()


# ---- the decision in a real normal-user process ------------------------------------------------

_STUBS = {"ok": '[ "$1 $2" = "-n true" ] && exit 0; exit 1',  # only `sudo -n`: never a prompt
          "needs-password": 'echo "sudo: a password is required" >&2; exit 1'}


@pytest.mark.parametrize("sudo, prefix, missing", [
    ("ok", ["sudo", "-n"], None),
    ("needs-password", [], "wants a password"),
    ("missing", [], "sudo is not installed"),
])
def test_a_normal_user_process_decides_by_what_sudo_answers(
        sudo: str, prefix: list[str], missing: str | None) -> None:
    """privilege.current() in a real non-root process: this one if the tests run as a normal
    user, else `nobody`. A stub sudo first on PATH answers as passwordless sudo, as sudo
    wanting a password, or is absent; no system change. privilege.py needs only the standard
    library, so its source goes to the system python3 on stdin: nothing of this checkout
    (perhaps in a 0700 folder) has to be readable by `nobody`."""
    python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    assert python, "no system python3"
    as_root = os.geteuid() == 0
    user = "nobody" if as_root else pwd.getpwuid(os.geteuid()).pw_name
    stubs = Path(tempfile.mkdtemp(prefix="hp-sudo-stub-"))  # not pytest's 0700 tmp: nobody reads it
    try:
        stubs.chmod(0o755)
        if sudo in _STUBS:
            (stubs / "sudo").write_text(f"#!/bin/sh\n{_STUBS[sudo]}\n")
            (stubs / "sudo").chmod(0o755)
        source = Path(privilege.__file__).read_text() + (
            "\nimport json\np = current()\n"
            "print(json.dumps({'uid': p.uid, 'user': p.user, 'prefix': list(p.prefix),"
            " 'missing': p.missing}))\n")
        res = subprocess.run([python, "-"], input=source, capture_output=True, text=True,
                             timeout=60, cwd="/", env={"PATH": str(stubs), "HOME": "/"},
                             user=user if as_root else None,
                             group=pwd.getpwnam(user).pw_gid if as_root else None,
                             extra_groups=[] if as_root else None)
    finally:
        shutil.rmtree(stubs, ignore_errors=True)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["uid"] != 0 and got["user"] == user
    assert got["prefix"] == prefix, got
    if missing is None:
        assert got["missing"] is None, got
    else:
        assert missing in got["missing"] and f"give {user} passwordless sudo" in got["missing"]
