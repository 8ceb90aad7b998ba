"""The platform's own tables, verbatim from its designs (`platform_seed.sql`, a byte-for-byte
copy of the shared seed DDL; hybrid_pipelines_tests checks the copy). Our migrations create them
only on a database where the platform has not (a fresh local stack, a test database); on the
platform's databases they already exist and are left exactly as they are."""

from __future__ import annotations

import re
from importlib import resources as pkg_resources

FILE_SERVER = "file_server"   # block 1: the hybrid file server's database (file_metadata)
AI_PLATFORM = "ai_platform"   # block 2: ai_platform (model_locations, user_contexts, ...)
_BLOCKS = {FILE_SERVER: 1, AI_PLATFORM: 2}
_MARKER = re.compile(r"^-- ===== (\d+)\. .*$", re.MULTILINE)


def seed_text() -> str:
    return pkg_resources.files("hybrid_pipelines.sql").joinpath("platform_seed.sql").read_text()


def platform_ddl(block: str) -> str:
    """One database's block of the verbatim DDL, as the platform ran it."""
    number = _BLOCKS[block]
    text = seed_text()
    marks = list(_MARKER.finditer(text))
    for i, m in enumerate(marks):
        if int(m.group(1)) == number:
            end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
            return text[m.end():end].strip() + "\n"
    raise KeyError(f"platform_seed.sql has no block {number} ({block})")
