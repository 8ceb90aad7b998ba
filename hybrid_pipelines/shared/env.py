"""Reading HP_* environment variables that must be whole numbers, with an error an operator can
act on (the variable, the bad value and what to set it to) instead of int()'s bare
"invalid literal for int()"."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


class EnvVarError(ValueError):
    """An environment variable holds a value the code cannot use."""


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int | None = None,
            maximum: int | None = None, what: str = "a whole number") -> int:
    """`env[name]` as an int (`default` when unset or blank), within [minimum, maximum]."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    bounds = _bounds(minimum, maximum)
    try:
        value = int(raw)
    except ValueError:
        raise EnvVarError(f"{name}={raw!r} is not {what}; set it to a whole number{bounds} "
                          f"or unset it for the default {default}") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise EnvVarError(f"{name}={raw!r} is out of range; set it to a whole number{bounds} "
                          f"or unset it for the default {default}")
    return value


def env_port(env: Mapping[str, str], name: str, default: int) -> int:
    """A TCP port number from `env[name]`."""
    return env_int(env, name, default, minimum=1, maximum=65535, what="a port number")


def _bounds(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum} to {maximum}"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def stack_env_path() -> Path:
    return Path(os.environ.get("HP_STACK_DIR", ".local")) / "stack.env"


def read_env_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def connection_env(env_file: Path | None = None) -> dict[str, str]:
    """HP_* variables from the environment, falling back to the local stack's stack.env."""
    return {**read_env_file(env_file or stack_env_path()), **os.environ}
