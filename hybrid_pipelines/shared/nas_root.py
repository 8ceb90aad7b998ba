"""The NAS root as the platform names it (NAS_ROOT_PATH + NAS_MOUNT_TYPE), and the forms a
stored path can take under it. Pure: no I/O.

NAS_ROOT_PATH is a UNC path `\\\\host\\share\\dir`, an `smb://host[:port]/share/dir` URL, or a
mount path `/mnt/nas/dir`. NAS_MOUNT_TYPE (unc | smb | nfs) says how the platform reaches it:
unc and smb mean SMB (host, share, and a root folder inside the share); nfs, or a plain path,
means a mounted file system at that path."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from urllib.parse import urlsplit

from hybrid_pipelines.shared.env import EnvVarError
from hybrid_pipelines.shared.nas_paths import UnsafePathError, safe_relpath

NAS_ROOT_PATH = "NAS_ROOT_PATH"
NAS_MOUNT_TYPE = "NAS_MOUNT_TYPE"
MOUNT_TYPES = ("unc", "smb", "nfs")
SMB_PORT = 445


@dataclass(frozen=True)
class NASRootSpec:
    """What NAS_ROOT_PATH says, in NASResource's terms."""

    protocol: str            # "smb" or "local"
    host: str = ""
    port: int | None = None  # only when the URL names one
    share: str = ""
    root_dir: str = ""       # folder inside the share ('' = the share itself)
    local_root: str = ""     # the mount path (protocol local)

    def hp_values(self) -> dict[str, str]:
        """HP_* name -> value, for the variables NAS_ROOT_PATH stands for."""
        if self.protocol == "local":
            return {"HP_NAS_PROTOCOL": "local", "HP_NAS_LOCAL_ROOT": self.local_root}
        out = {"HP_NAS_PROTOCOL": "smb", "HP_NAS_HOST": self.host, "HP_NAS_SHARE": self.share,
               "HP_NAS_ROOT_DIR": self.root_dir}
        if self.port is not None:
            out["HP_NAS_PORT"] = str(self.port)
        return out


def _bad(raw: str, why: str) -> EnvVarError:
    return EnvVarError(
        f"{NAS_ROOT_PATH}={raw!r} {why}; set it to a UNC path (\\\\host\\share\\folder), an "
        f"smb://host/share/folder URL or a mount path (/mnt/nas/folder), with {NAS_MOUNT_TYPE} "
        "unc or smb for the first two and nfs for a mount path")


def _root_dir(raw: str, parts: list[str]) -> str:
    try:
        return safe_relpath("/".join(parts))
    except UnsafePathError as exc:
        raise _bad(raw, f"has an unusable folder inside the share ({exc})") from None


def parse_nas_root(raw: str, mount_type: str = "") -> NASRootSpec:
    """NAS_ROOT_PATH (and NAS_MOUNT_TYPE, '' = guess from the form) -> NASRootSpec."""
    text = raw.strip()
    kind = mount_type.strip().lower()
    if kind and kind not in MOUNT_TYPES:
        raise EnvVarError(f"{NAS_MOUNT_TYPE}={mount_type!r} is not one of unc, nfs, smb; set it "
                          f"to how {NAS_ROOT_PATH} is reached (unc/smb: an SMB share; nfs: a "
                          "mounted path) or unset it to guess from the path's form")
    if text.lower().startswith("smb://"):
        form = "smb"
    elif text.startswith(("\\\\", "//")):
        form = "unc"
    elif text.startswith("/"):
        form = "path"
    else:
        raise _bad(raw, "is neither a UNC path, an smb:// URL nor an absolute mount path")
    if kind == "nfs" and form != "path":
        raise _bad(raw, f"is an SMB location but {NAS_MOUNT_TYPE}=nfs expects the path where "
                        "the share is mounted")
    if kind in ("unc", "smb") and form == "path":
        raise _bad(raw, f"is a mount path but {NAS_MOUNT_TYPE}={kind} expects an SMB location "
                        "(use nfs for a mounted path)")
    if form == "path":
        return NASRootSpec("local", local_root=posixpath.normpath(text))
    port: int | None = None
    if form == "smb":
        url = urlsplit(text)
        try:
            host, port = url.hostname or "", url.port
        except ValueError:
            raise _bad(raw, "has a port that is not a number") from None
        parts = [p for p in url.path.split("/") if p]
    else:
        parts = [p for p in text.replace("\\", "/").split("/") if p]
        host, parts = (parts[0], parts[1:]) if parts else ("", [])
    if not host or not parts:
        raise _bad(raw, "names no host and share")
    return NASRootSpec("smb", host=host, port=port, share=parts[0],
                       root_dir=_root_dir(raw, parts[1:]))


@dataclass(frozen=True)
class NASRoot:
    """Where the jobs' NAS root is, in every form the platform may have stored a path under
    it: `forms()` are the prefixes that each mean "the root" (a stored `nas_path` that starts
    with one of them, followed by a separator or nothing, lies beneath the root).

    protocol 'smb': host, port, share, root_dir (a folder inside the share, '' = the share);
    mount_path: where the platform's own servers mount that root, if they do (absolute
    `nas_path` values start with it). protocol 'local': mount_path is the root itself.
    Host and share compare case-insensitively (SMB names do); paths compare exactly."""

    protocol: str
    host: str = ""
    port: int = SMB_PORT
    share: str = ""
    root_dir: str = ""
    mount_path: str = ""

    def forms(self) -> tuple[str, ...]:
        out: list[str] = []
        if self.protocol == "smb" and self.host and self.share:
            tail = [self.share, *([self.root_dir] if self.root_dir else [])]
            slash = "/".join(tail)
            out += ["\\\\" + "\\".join([self.host, *slash.split("/")]),
                    f"//{self.host}/{slash}", f"smb://{self.host}/{slash}",
                    f"smb://{self.host}:{self.port}/{slash}"]
        if self.mount_path:
            out.append(posixpath.normpath(self.mount_path))
        return tuple(dict.fromkeys(out))
