"""A sensor's JSON cursor read back (no Dagster, no I/O)."""

from __future__ import annotations

import json
from typing import Any


def load_cursor(cursor: str | None) -> dict[str, Any]:
    """The cursor's object; {} when it is empty or unreadable (an unreadable cursor only
    costs one extra evaluation, never a failing tick)."""
    try:
        value = json.loads(cursor) if cursor else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
