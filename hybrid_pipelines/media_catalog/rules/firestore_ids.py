"""Firestore document ids the web app can find: the readable name itself wherever Firestore
accepts it as an id, an escaped form only where it does not.

    catalogs/{doc_id(catalog name)}                       catalogs/WSOP
      series/{doc_id(series name)}                        .../series/WSOP 2024
        contents/{doc_id(content title)}                  .../contents/Day1 - Ivey vs Dwan
    players/{player_doc_id(name)}                         players/phil ivey
    files/{file_id(path)}                                 (a hash of the path, see below)

Pure functions only: no I/O, no Dagster.
"""

from __future__ import annotations

import hashlib
import re

from hybrid_pipelines.media_catalog.rules.catalog_paths import player_key

# Firestore's limit on a document id, in UTF-8 bytes.
MAX_ID_BYTES = 1500
# Escaped ids end with "~" and this many lowercase hex digits of the name's SHA-256.
HASH_CHARS = 10
_ESCAPED = re.compile(rf"~[0-9a-f]{{{HASH_CHARS}}}\Z")
_DUNDER = re.compile(r"__.*__\Z", re.DOTALL)


def firestore_refuses(name: str) -> str | None:
    """Why Firestore refuses `name` as a document id, or None when it takes it as is."""
    if not name:
        return "it is empty"
    if "/" in name:
        return "it contains '/'"
    if name in (".", ".."):
        return f"it is {name!r}"
    if _DUNDER.match(name):
        return "it matches __.*__ (reserved by Firestore)"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid UTF-8 (a lone surrogate)"
    if size > MAX_ID_BYTES:
        return f"it is {size} bytes long (more than {MAX_ID_BYTES})"
    return None


def is_escaped(doc: str) -> bool:
    return _ESCAPED.search(doc) is not None


def _name_hash(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]


def _readable_part(name: str, budget: int) -> str:
    out: list[str] = []
    used = 0
    for ch in name:
        if ch == "/":
            piece = "%2F"
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            piece = f"%u{ord(ch):04X}"
        else:
            piece = ch
        size = len(piece.encode("utf-8"))
        if used + size > budget:
            break  # cut on a character boundary: the hash keeps the id unique
        out.append(piece)
        used += size
    return "".join(out)


def doc_id(name: str) -> str:
    """The Firestore document id of a catalog, series or content (or a player key).

    The name itself whenever Firestore accepts it as an id, so `WSOP`, `WSOP 2024`,
    `포커 2025` and `100% 완료 #1` are their own ids and the web app needs no lookup.

    Escaped only when Firestore refuses the name or it looks like an escaped id:
      - empty, contains '/', is exactly '.' or '..', matches `__.*__`, is longer than 1,500
        UTF-8 bytes, or holds a lone surrogate (not UTF-8);
      - ends with '~' and 10 lowercase hex digits (the escaped form's own shape, reserved so
        that no readable id can ever equal an escaped one).
    The escaped form is `<readable part>~<first 10 hex digits of SHA-256(name)>`, where the
    readable part is the name with '/' written '%2F' and lone surrogates '%uXXXX', cut on a
    character boundary to fit 1,500 bytes with the suffix: `Main Event/Day1` becomes
    `Main Event%2FDay1~<hash>`, `.` becomes `.~<hash>`, `__x__` becomes `__x__~<hash>`, the
    empty series name becomes `~<hash>`. The hash is of the original name, so two names that
    escape to the same readable part still get different ids, and the suffix breaks the
    `__.*__`, '.' and '..' shapes. Names differing only in case are different names, and
    Firestore ids are case-sensitive: `WSOP` and `wsop` are two documents, as on the NAS.
    """
    if firestore_refuses(name) is None and not is_escaped(name):
        return name
    suffix = "~" + _name_hash(name)
    return _readable_part(name, MAX_ID_BYTES - len(suffix)) + suffix


def player_doc_id(name: str) -> str:
    """players/{id}: the player key (NFKC, case-folded, spaces collapsed), so `Phil Ivey` and
    `phil  ivey` are one document `phil ivey`; the web app computes it from any spelling."""
    return doc_id(player_key(name))
