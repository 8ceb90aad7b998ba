"""The few local-stack steps that need root (Samba's system user and smbd itself): run them
directly as root, through `sudo -n` for a normal user with passwordless sudo, or not at all,
with the reason and the fix.

`sudo -n` never prompts: the stack starts servers in the background, where a password prompt
would hang instead of failing."""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

SudoState = Literal["ok", "needs-password", "missing"]

SUDO_PREFIX: tuple[str, ...] = ("sudo", "-n")
# A normal user's PATH lacks the sbin directories on Debian, where smbd and useradd live.
_SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


@dataclass(frozen=True)
class Privilege:
    """How this process reaches root, and who it is (files servers write on our behalf
    belong to `user`, so the caller can read, change and delete them)."""

    user: str
    uid: int
    gid: int
    prefix: tuple[str, ...] = ()  # prepended to a privileged command; () when we are root
    missing: str | None = None  # why root is out of reach, naming the fix; None if reachable

    @property
    def is_root(self) -> bool:
        return self.uid == 0

    @property
    def via_sudo(self) -> bool:
        return bool(self.prefix)

    def argv(self, command: Sequence[str]) -> list[str]:
        """`command` as it must be run to get root."""
        if self.missing:
            raise PermissionError(self.missing)
        return [*self.prefix, *command]


def decide(uid: int, gid: int, user: str, sudo: SudoState) -> Privilege:
    """The pure decision: root runs privileged steps itself; a normal user through `sudo -n`
    when that works without a password; else nobody, with a reason naming what to do."""
    if uid == 0:
        return Privilege(user=user, uid=uid, gid=gid)
    if sudo == "ok":
        return Privilege(user=user, uid=uid, gid=gid, prefix=SUDO_PREFIX)
    why = ("sudo is not installed" if sudo == "missing"
           else f"`sudo -n true` fails for {user} (sudo wants a password)")
    return Privilege(user=user, uid=uid, gid=gid,
                     missing=f"needs root and {why}: run as root or give {user} "
                             "passwordless sudo")


@functools.cache
def sudo_state() -> SudoState:
    """Whether `sudo -n` works for this user. Cached: each answer costs a process, and
    samba_available() is asked once per server."""
    if not shutil.which("sudo"):
        return "missing"
    try:
        res = subprocess.run([*SUDO_PREFIX, "true"], stdin=subprocess.DEVNULL,
                             capture_output=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return "needs-password"
    return "ok" if res.returncode == 0 else "needs-password"


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a container's arbitrary UID: name it, the message still makes sense
        return str(uid)


def current() -> Privilege:
    uid = os.geteuid()
    # Root never needs sudo; do not even ask (it costs a process and may log to auth.log).
    sudo: SudoState = "ok" if uid == 0 else sudo_state()
    return decide(uid, os.getegid(), _user_name(uid), sudo)


def find_tool(name: str) -> str | None:
    """`shutil.which`, also searching the sbin directories a normal user's PATH lacks."""
    path = os.pathsep.join([os.environ.get("PATH", os.defpath), *_SBIN_DIRS])
    return shutil.which(name, path=path)


def run_privileged(priv: Privilege, command: Sequence[str], *, input_text: str | None = None,
                   timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `command` as root (itself or via sudo); bounded, output captured, never prompts."""
    return subprocess.run(priv.argv(command), input=input_text, text=True, capture_output=True,
                          timeout=timeout,
                          stdin=None if input_text is not None else subprocess.DEVNULL)
