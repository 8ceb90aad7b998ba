"""A NAS: Samba serving one share over SMB3 with a user and password, private config only.

smbd and the share's system user need root. As root they run directly; a normal user with
passwordless sudo runs them through `sudo -n` (privilege.py). Either way smbd never acts as root
on the share (`force user`):
- a normal user's smbd serves it as that user, who then owns, reads and writes every file on
  it and can delete the whole state folder afterwards;
- a root smbd serves it as the NAS's own unprivileged system account (`username`), which owns
  the share folder. What root puts there directly (tests, the seed) stays usable over SMB
  through a default POSIX ACL granting the account rwx. The state folder usually sits under a
  0700 folder the account cannot traverse; then smbd runs in a private mount namespace with
  the share bound onto a world-traversable folder (only smbd sees the bind, it dies with smbd,
  and no permission outside the state folder changes)."""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import signal
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import psutil

from hybrid_pipelines.dev.stack.base import LocalServer
from hybrid_pipelines.dev.stack.privilege import Privilege, current, find_tool, run_privileged
from hybrid_pipelines.dev.stack.process import (
    LOOPBACK,
    port_open,
    running,
    server_processes,
    spawn,
    wait_gone,
    wait_until,
)

SHARE = "media"
NAS_ACCOUNT = "hpnas"  # the share's SMB login, and the system account a root smbd acts as
# smbd's own state (the share is apart): created by us, written to by a root smbd.
_INTERNAL_DIRS = ("private", "lock", "state", "cache", "pid", "ncalrpc", "logs")


def samba_available() -> str | None:
    """None when Samba can run here, else why not (for a skip or warning message)."""
    if not find_tool("smbd") or not find_tool("smbpasswd"):
        return "Samba is not installed (apt-get install samba)"
    priv = current()
    if priv.missing:
        return f"Samba's private setup (a system user for the share, smbd) {priv.missing}"
    return None


def share_owner(priv: Privilege, account: str = NAS_ACCOUNT) -> str:
    """Who smbd acts as on the share: never root. Root's smbd acts as the NAS account; a normal
    user gets the files as themself, or they could neither read what the NAS wrote nor clean
    it up."""
    return account if priv.is_root else priv.user


# Where a root smbd sees the share when the account cannot traverse to the real folder: an
# existing world-traversable folder, hidden by the bind only inside smbd's mount namespace.
_BIND_TARGETS = ("/srv", "/mnt", "/media")
_ACL_VERSION, _ACL_UNDEFINED_ID = 2, 0xFFFFFFFF
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_MASK, _ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20


def _posix_acl(uid: int) -> bytes:
    """The kernel's xattr form of `u::rwx,u:<uid>:rwx,g::r-x,m::rwx,o::r-x` (no setfacl
    needed)."""
    entries = ((_ACL_USER_OBJ, 7, _ACL_UNDEFINED_ID), (_ACL_USER, 7, uid),
               (_ACL_GROUP_OBJ, 5, _ACL_UNDEFINED_ID), (_ACL_MASK, 7, _ACL_UNDEFINED_ID),
               (_ACL_OTHER, 5, _ACL_UNDEFINED_ID))
    return struct.pack("<I", _ACL_VERSION) + b"".join(struct.pack("<HHI", *e) for e in entries)


def traversable_by(path: Path, uid: int, gid: int) -> bool:
    """Whether `uid` may enter every folder above `path` (mode bits; root's view otherwise)."""
    for parent in path.resolve().parents:
        st = parent.stat()
        bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001
        if not st.st_mode & bit:
            return False
    return True


def bind_target(root: Path) -> str | None:
    """A folder to bind the share onto inside smbd's namespace: traversable by anyone, and
    neither holding nor inside the state folder (smbd must still see its own files)."""
    real = root.resolve()
    for cand in map(Path, _BIND_TARGETS):
        if (cand.is_dir() and not cand.is_symlink() and traversable_by(cand / "x", -1, -1)
                and not real.is_relative_to(cand) and not cand.is_relative_to(real)):
            return str(cand)
    return None


def _smbd_binary() -> str:
    return find_tool("smbd") or "/usr/sbin/smbd"


def _server_processes(pid: int) -> list[psutil.Process]:
    """The sudo that spawn() made a session leader, smbd under it and its orphaned workers,
    those still running (an unreaped zombie is gone)."""
    return [p for p in server_processes(pid) if running(p)]


def _signal_as_root(priv: Privilege, procs: list[psutil.Process], sig: signal.Signals) -> bool:
    """Signal root processes from a normal user: the kernel refuses, `sudo -n kill` does not."""
    if not procs:
        return True
    try:
        res = run_privileged(priv, ["kill", "-s", sig.name.removeprefix("SIG"),
                                    *(str(p.pid) for p in procs)], timeout=15)
    except (PermissionError, OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


@dataclass
class SambaServer(LocalServer):
    port: int = 0
    username: str = NAS_ACCOUNT
    password: str = ""
    share: str = SHARE
    name: ClassVar[str] = "samba"

    @property
    def share_dir(self) -> Path:
        return self.root / "share"

    @property
    def conf_path(self) -> Path:
        return self.root / "smb.conf"

    @property
    def address(self) -> str:
        return f"smb://{LOOPBACK}:{self.port}/{self.share}"

    def _write_conf(self, force_user: str | None = None, path: str | None = None) -> None:
        """smb.conf serving the share as `force_user` (default: the NAS account) from `path`
        (default: the share folder; a bind target when smbd runs in its own namespace)."""
        d = self.root
        for sub in _INTERNAL_DIRS:
            (d / sub).mkdir(parents=True, exist_ok=True)
        self.share_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(f"""[global]
  interfaces = {LOOPBACK}/8
  bind interfaces only = yes
  smb ports = {self.port}
  disable netbios = yes
  server min protocol = SMB3
  server signing = mandatory
  server role = standalone server
  map to guest = never
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  unix charset = UTF-8
  private dir = {d}/private
  lock directory = {d}/lock
  state directory = {d}/state
  cache directory = {d}/cache
  pid directory = {d}/pid
  ncalrpc dir = {d}/ncalrpc
  passdb backend = tdbsam:{d}/private/passdb.tdb
  log file = {d}/logs/log.%m
  max log size = 1000
  log level = 0

[{self.share}]
  path = {path or self.share_dir}
  valid users = {self.username}
  force user = {force_user or self.username}
  read only = no
  browseable = yes
  create mask = 0644
  directory mask = 0755
""")

    def _ensure_account(self, priv: Privilege) -> pwd.struct_passwd:
        try:
            return pwd.getpwnam(self.username)
        except KeyError:
            res = run_privileged(priv, [find_tool("useradd") or "useradd", "-M", "-s",
                                        "/usr/sbin/nologin", self.username])
            # 9: the name is taken, i.e. a parallel test session added it meanwhile.
            if res.returncode not in (0, 9):
                raise RuntimeError(f"adding the NAS system user {self.username} failed: "
                                   f"{res.stderr.strip()[-500:]}") from None
        return pwd.getpwnam(self.username)

    def _hand_share_to(self, account: pwd.struct_passwd) -> None:
        """Root's smbd acts as `account`: it owns the share folder, takes over what an earlier
        root-served share left owned by root (never following a symlink), and gets rwx through
        a default ACL on whatever root creates there later."""
        uid, gid = account.pw_uid, account.pw_gid
        if uid == 0:
            raise RuntimeError(f"the NAS account {account.pw_name} is root: Samba would write "
                               "the share as root. Fix: give SambaServer a normal user name.")
        share = self.share_dir
        for dirpath, dirnames, filenames in os.walk(share):
            for name in [*dirnames, *filenames]:
                path = os.path.join(dirpath, name)
                if os.lstat(path).st_uid == 0:
                    os.chown(path, uid, gid, follow_symlinks=False)
        os.chown(share, uid, gid)
        share.chmod(0o755)
        acl = _posix_acl(uid)
        try:
            os.setxattr(share, "system.posix_acl_access", acl)
            os.setxattr(share, "system.posix_acl_default", acl)
        except OSError as exc:  # no ACLs on this file system: SMB's own files still work
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP):
                raise

    def _served_path(self, account: pwd.struct_passwd) -> tuple[str | None, list[str]]:
        """(share path in smb.conf, command prefix) for a root smbd acting as `account`."""
        if traversable_by(self.share_dir, account.pw_uid, account.pw_gid):
            return None, []
        target, unshare = bind_target(self.root), find_tool("unshare")
        if not target or not unshare:
            raise RuntimeError(
                f"Samba cannot serve {self.share_dir} as {account.pw_name}: a folder above it "
                "is closed to that account and " + ("unshare (util-linux) is missing" if target
                else f"none of {', '.join(_BIND_TARGETS)} can host a private bind")
                + ". Fix: put the stack's state folder under a folder others may traverse "
                "(chmod o+x), or install util-linux.")
        # --mount: private propagation by default, so the bind never reaches the host.
        # The new namespace starts with a copy of every mount, FUSE ones too: a FUSE file
        # system lives until its last copy goes, so a JuiceFS mounted before smbd started
        # could not finish unmounting (its daemon hung until killed) while smbd ran. smbd
        # needs none of them: they are detached here, in its namespace only.
        script = ('mount --bind "$1" "$2" && shift 2 && '
                  'while read -r _ mnt fstype _; do case "$fstype" in fuse*) '
                  'umount -l "$mnt" 2>/dev/null;; esac; done < /proc/self/mounts; exec "$@"')
        return target, [unshare, "--mount", "--", "sh", "-c", script, "sh",
                        str(self.share_dir), target]

    def _set_password(self, priv: Privilege) -> None:
        res = run_privileged(priv, [find_tool("smbpasswd") or "smbpasswd", "-c",
                                    str(self.conf_path), "-s", "-a", self.username],
                             input_text=f"{self.password}\n{self.password}\n")
        if res.returncode != 0:
            raise RuntimeError(f"setting the NAS password failed: {res.stderr.strip()[-500:]}")

    def _clear_runtime_dirs(self) -> None:
        """smbd refuses to start when a directory it creates for itself (lock/msg.lock,
        lock/msg.sock, ncalrpc/np, logs/cores) exists but is not root's; after a stop we gave
        them to the user. They only hold sockets, PID locks and core dumps: remove them."""
        uid = os.geteuid()
        for sub in _INTERNAL_DIRS:
            try:
                children = list((self.root / sub).iterdir())
            except OSError:  # not there yet, or not ours to read: smbd will say what is wrong
                continue
            for child in children:
                if child.is_dir() and not child.is_symlink() and child.stat().st_uid == uid:
                    shutil.rmtree(child, ignore_errors=True)

    def _give_back(self, priv: Privilege) -> None:
        """Hand smbd's root-owned state to the user, so they can delete the state folder.
        -P: never follow a symlink out of it."""
        dirs = [str(self.root / s) for s in _INTERNAL_DIRS if (self.root / s).is_dir()]
        if not dirs:
            return
        try:
            run_privileged(priv, ["chown", "-R", "-P", f"{priv.uid}:{priv.gid}", *dirs],
                           timeout=60)
        except (PermissionError, OSError, subprocess.TimeoutExpired):
            pass  # best effort: the next start copes with root-owned state too

    def start(self) -> None:
        why = samba_available()
        if why:
            raise RuntimeError(f"NAS (Samba) cannot start: {why}")
        priv = current()
        if priv.via_sudo:
            self._clear_runtime_dirs()
        account = self._ensure_account(priv)
        path, prefix = None, []
        if priv.is_root:
            self.share_dir.mkdir(parents=True, exist_ok=True)
            self._hand_share_to(account)
            path, prefix = self._served_path(account)
        self._write_conf(share_owner(priv, self.username), path)
        self._set_password(priv)
        # Root: exec chain unshare -> sh -> smbd keeps one PID, so stop/kill signal smbd.
        proc = spawn(priv.argv([*prefix, _smbd_binary(), "-F", "--no-process-group", "-s",
                                str(self.conf_path)]), self.log_path)
        # Via sudo this is sudo's PID, as for every server the process spawn() started and
        # the leader of its session: sudo lives exactly as long as smbd (it waits for it and
        # relays its user's signals to it), so alive() and `stack down` see the server.
        self.pid = proc.pid
        wait_until(self.healthy, 20, f"Samba on {LOOPBACK}:{self.port}", self.log_path, proc)

    def stop(self) -> None:
        if current().is_root:  # root signals its smbd itself, as always
            super().stop()
            return
        self._stop_as_user(signal.SIGTERM, self.stop_grace)

    def kill(self) -> None:
        if current().is_root:
            super().kill()
            return
        self._stop_as_user(signal.SIGKILL, 2.0)

    def _stop_as_user(self, sig: signal.Signals, grace: float) -> None:
        """A normal user cannot signal a root smbd: signal its process tree through
        `sudo -n kill`, and SIGKILL whatever outlives `grace`. If that fails (sudo wants a
        password by now: a cached sudo login expired), signal the sudo that started smbd
        instead: its user may, and sudo relays SIGTERM to smbd. Bounded: every step has a
        timeout. Then smbd's root-owned state goes back to the user."""
        pid, self.pid = self.pid, None
        priv = current()
        procs = _server_processes(pid) if pid else []
        if procs:
            if not _signal_as_root(priv, procs, sig):  # the whole tree, as stop_pid does
                try:
                    launcher = psutil.Process(pid)
                    if launcher.name() == "sudo":
                        launcher.send_signal(signal.SIGTERM)  # relayed; SIGKILL could not be
                except psutil.Error:
                    pass
            left = wait_gone(procs, grace)
            if left:
                _signal_as_root(priv, left, signal.SIGKILL)
                wait_gone(left, 5.0)
        if not priv.missing:
            self._give_back(priv)

    def healthy(self) -> bool:
        return port_open(self.port)

    def env(self) -> dict[str, str]:
        return {"HP_NAS_PROTOCOL": "smb", "HP_NAS_HOST": LOOPBACK, "HP_NAS_PORT": str(self.port),
                "HP_NAS_SHARE": self.share, "HP_NAS_USERNAME": self.username,
                "HP_NAS_PASSWORD": self.password, "HP_NAS_LOCAL_ROOT": str(self.share_dir)}
