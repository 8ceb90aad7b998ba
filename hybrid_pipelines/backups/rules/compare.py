"""Comparisons that decide whether a backup part verified: object listings (key, size,
ETag), pg_restore's table list, JuiceFS metadata trees. Each returns the problems found,
as lines an operator can act on; an empty list means verified."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ObjectFacts:
    size: int
    etag: str  # as S3 reports it, quotes stripped

    @property
    def multipart(self) -> bool:
        return "-" in self.etag


def clean_etag(etag: str) -> str:
    return etag.strip().strip('"')


def etags_comparable(a: ObjectFacts, b: ObjectFacts) -> bool:
    """Two ETags prove equal content only when both are plain MD5s: a multipart ETag (`-N`)
    depends on the part size, and a server-side copy of a multipart object gets a new one."""
    return not a.multipart and not b.multipart


def compare_listings(expected: Mapping[str, ObjectFacts], found: Mapping[str, ObjectFacts],
                     limit: int = 20) -> tuple[list[str], list[str]]:
    """(problems, keys to re-hash). Keys missing or extra, sizes or comparable ETags that
    differ are problems; equal sizes with an incomparable ETag need re-hashing."""
    problems: list[str] = []
    rehash: list[str] = []
    for key in sorted(expected.keys() - found.keys()):
        problems.append(f"{key}: missing from the backup")
    for key in sorted(found.keys() - expected.keys()):
        problems.append(f"{key}: in the backup but not in the source listing")
    for key in sorted(expected.keys() & found.keys()):
        want, got = expected[key], found[key]
        if want.size != got.size:
            problems.append(f"{key}: size {got.size} in the backup, {want.size} in the source")
        elif not etags_comparable(want, got):
            rehash.append(key)
        elif want.etag != got.etag:
            problems.append(f"{key}: ETag {got.etag} in the backup, {want.etag} in the source")
    if len(problems) > limit:
        problems = [*problems[:limit], f"... and {len(problems) - limit} more"]
    return problems, rehash


def multipart_etag(part_md5s: list[bytes]) -> str:
    """The ETag S3 gives an object uploaded in these parts (MD5 of the parts' MD5s, -N)."""
    import hashlib

    if len(part_md5s) == 1:
        return part_md5s[0].hex()
    return f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"  # noqa: S324


def restore_list_tables(listing: str) -> list[str]:
    """`schema.table` for every TABLE entry of `pg_restore --list` output (`;` lines are
    comments): e.g. `215; 1259 16390 TABLE public file_metadata postgres`."""
    tables = []
    for line in listing.splitlines():
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        fields = line.split()
        # id; catalog oid  TYPE schema name owner
        try:
            at = fields.index("TABLE")
        except ValueError:
            continue
        if at + 2 < len(fields) and fields[at - 1] != "DATA" and fields[at + 1] != "DATA":
            tables.append(f"{fields[at + 1]}.{fields[at + 2]}")
    return sorted(set(tables))


def juicefs_entries(dump: Mapping[str, Any]) -> dict[str, tuple[Any, ...]]:
    """path -> (type, length, slice sizes) for every node of a `juicefs dump` JSON tree. Inode
    numbers and times are left out: they are the store's bookkeeping, not the content."""
    out: dict[str, tuple[Any, ...]] = {}
    stack: list[tuple[str, Mapping[str, Any]]] = [("/", dump.get("FSTree") or {})]
    if dump.get("Trash"):  # deleted files kept for the volume's trash days: restorable
        stack.append(("/.trash", dump["Trash"]))
    while stack:  # iterative: a deep tree must not hit the recursion limit
        path, node = stack.pop()
        attr = node.get("attr", {})
        slices = tuple(s.get("size", 0) for c in node.get("chunks", []) or []
                       for s in c.get("slices", []) or [])
        out[path] = (attr.get("type"), attr.get("length"), slices, node.get("symlink"))
        for name, child in (node.get("entries") or {}).items():
            stack.append((f"{path.rstrip('/')}/{name}", child))
    return out


def compare_juicefs(original: Mapping[str, Any], reloaded: Mapping[str, Any],
                    limit: int = 20) -> list[str]:
    """Problems between a metadata dump and the dump of the scratch store it was loaded into:
    the trees (the files and the trash: paths, types, lengths, slices) must agree. The
    usage counters are not compared: a live volume's stored counters lag its tree (they are
    flushed in batches), and `juicefs load` recomputes them from the tree."""
    problems = []
    a, b = juicefs_entries(original), juicefs_entries(reloaded)
    for path in sorted(a.keys() - b.keys()):
        problems.append(f"{path}: in the dump, missing after loading it")
    for path in sorted(b.keys() - a.keys()):
        problems.append(f"{path}: appeared after loading the dump")
    for path in sorted(a.keys() & b.keys()):
        if a[path] != b[path]:
            problems.append(f"{path}: {a[path]} in the dump, {b[path]} after loading it")
    if len(problems) > limit:
        problems = [*problems[:limit], f"... and {len(problems) - limit} more"]
    return problems
