"""NAS path -> catalog / series / content / players, by configurable rules.

A share is organised as `<catalog>/<series>/<content...>/<file>`, e.g.
`WSOP/WSOP 2024/Main Event/Day1.mp4` is catalog "WSOP", series "WSOP 2024" and content
"Main Event/Day1". The catalog is always the top-level folder (it is also the Dagster
partition); how many folder levels make the series, which names are ignored and how player
names are found in file names are rules an operator can change (JSON in HP_CATALOG_RULES).

Pure functions only: no I/O, no Dagster.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hybrid_pipelines.media_catalog.rules.player_names import (
    split_default,
    vs_player_spans,
)

# "A vs B [vs C]" after a " - " separator or at the start of the file name, up to the end or a
# bracket: "Final Table - Phil Ivey vs Tom Dwan (HD).mp4" -> Phil Ivey, Tom Dwan.
DEFAULT_PLAYER_PATTERNS: tuple[str, ...] = (
    r"(?:^|\s[-–—]\s)(?P<players>[^-–—\[\]()]+?\s+(?:vs|VS|Vs)\.?\s+[^-–—\[\]()]+?)"
    r"\s*(?:$|[\[(]|\s[-–—]\s)",
)
DEFAULT_PLAYER_SEPARATORS = r"\s+(?:vs|VS|Vs)\.?\s+|\s*,\s*|\s+&\s+"
# The defaults above are never run by the regex engine on a name: rules/player_names.py finds
# the same matches in linear time (the regex form stays the one operators override, and keeps
# the rules' fingerprint). Operators' own regexes see at most this many characters of a name.
MAX_PLAYER_SCAN_CHARS = 200

# The SQLite catalog's keys are [a-z0-9-] only, whatever script the name is in. They were the
# Firestore document ids too until readable ids (rules.firestore_ids); LegacyIds in
# firestore_paths still produces them, so the one-off migration finds those documents.
_SLUG_STRIP = re.compile(r"[^a-z0-9]+")


class CatalogRulesError(ValueError):
    """HP_CATALOG_RULES (or a rules override) is not valid."""


@dataclass(frozen=True)
class CatalogRules:
    # Folder levels under the catalog that name the series ("WSOP 2024"); 0 puts every
    # content straight under an unnamed series.
    series_depth: int = 1
    # Name of the series for files that sit directly in the catalog folder.
    default_series: str = ""
    strip_extension: bool = True
    # Hidden files, macOS resource forks, Office locks and copies in progress are not media.
    ignore_prefixes: tuple[str, ...] = (".", "~$")
    ignore_suffixes: tuple[str, ...] = (".part", ".partial", ".tmp", ".crdownload")
    ignore_names: tuple[str, ...] = ("Thumbs.db", "desktop.ini", "@eaDir", "#recycle",
                                     "$RECYCLE.BIN", "System Volume Information")
    # Only these extensions are catalogued when set (lower case, with the dot); empty means
    # every file, so that non-media files show up as invalid instead of being invisible.
    media_extensions: tuple[str, ...] = ()
    player_patterns: tuple[str, ...] = DEFAULT_PLAYER_PATTERNS
    player_separators: str = DEFAULT_PLAYER_SEPARATORS

    def __post_init__(self) -> None:
        if self.series_depth < 0:
            raise CatalogRulesError(f"series_depth must be >= 0, got {self.series_depth}")
        for pattern in (*self.player_patterns, self.player_separators):
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise CatalogRulesError(f"player rule {pattern!r} is not a regex: {exc}") from exc
            if pattern in self.player_patterns and "players" not in compiled.groupindex:
                raise CatalogRulesError(
                    f"player pattern {pattern!r} needs a named group (?P<players>...)")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> CatalogRules:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CatalogRulesError(
                f"unknown catalog rule(s) {unknown}; known rules are {sorted(known)}")
        kw: dict[str, Any] = {}
        for key, value in data.items():
            kw[key] = tuple(value) if isinstance(value, list) else value
        try:
            return cls(**kw)
        except TypeError as exc:
            raise CatalogRulesError(f"bad catalog rules: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> CatalogRules:
        """Rules from JSON text, or from a file when the text is `@/path/to/rules.json`."""
        text = text.strip()
        if not text:
            return cls()
        source = "HP_CATALOG_RULES"
        if text.startswith("@"):
            source = text[1:]
            try:
                text = Path(source).read_text(encoding="utf-8")
            except OSError as exc:
                raise CatalogRulesError(f"cannot read catalog rules file {source}: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CatalogRulesError(f"catalog rules in {source} are not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise CatalogRulesError(f"catalog rules in {source} must be a JSON object")
        return cls.from_mapping(data)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CatalogRules:
        env = os.environ if environ is None else environ
        return cls.from_json(env.get("HP_CATALOG_RULES", ""))

    def fingerprint(self) -> str:
        """Changes when any rule changes, so the catalog is rebuilt under the new rules."""
        blob = json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CatalogPlace:
    catalog: str
    series: str
    content: str
    players: tuple[str, ...] = field(default=())
    catalog_id: str = ""
    series_id: str = ""
    content_id: str = ""
    player_ids: tuple[str, ...] = field(default=())


# ---------------------------------------------------------------- ids


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return _SLUG_STRIP.sub("-", ascii_text.lower()).strip("-")[:48].strip("-")


def stable_id(*names: str) -> str:
    """A collision-safe SQLite key: a slug of the last name plus a hash of all of them
    ("wsop-2024-1f2e3d4c5b"); names without Latin letters get the hash alone. Firestore ids
    before readable ids (firestore_paths.LegacyIds)."""
    digest = _digest(*names)
    readable = slug(names[-1]) if names else ""
    return f"{readable}-{digest[:10]}" if readable else digest[:20]


def file_id(path: str) -> str:
    """Document id of a file: a hash of its share-relative path."""
    return _digest("file", path)[:32]


def catalog_id(catalog: str) -> str:
    return stable_id(catalog)


def series_id(catalog: str, series: str) -> str:
    return stable_id(catalog, series) if series else "_none-" + _digest(catalog, "")[:10]


def content_id(catalog: str, series: str, content: str) -> str:
    return stable_id(catalog, series, content)


def player_key(name: str) -> str:
    """Two spellings differing only in case or spacing are one player."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def player_id(name: str) -> str:
    return stable_id(player_key(name))


# ---------------------------------------------------------------- partitions
# Dagster refuses partition keys containing "..." or control characters; folder names may
# contain "..." (control characters never pass safe_relpath). Encoding only '%' and '.' keeps
# every other folder name readable as its own partition key and makes the mapping reversible.


def partition_key_for(folder: str) -> str:
    if not folder or "/" in folder:
        raise ValueError(f"partition folder {folder!r} must be one non-empty path component")
    key = folder.replace("%", "%25")
    while "..." in key:
        key = key.replace("...", "%2E%2E%2E", 1)
    return key


def folder_for(partition_key: str) -> str:
    return re.sub(r"%(25|2E)", lambda m: "%" if m.group(1) == "25" else ".", partition_key)


# ---------------------------------------------------------------- names that cannot be catalogued

MAX_NAME_BYTES = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def name_problem(name: str) -> str | None:
    """Why one NAS name (a folder or file name, not a path) cannot be catalogued, or None.

    The NAS path checks (shared.nas_paths.safe_relpath) refuse these names on every call, so
    a folder named so can be neither listed nor probed: the sensor and the scan skip it and
    report it instead of failing on it every time."""
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        return f"{name!r} is not a plain name"
    if _CONTROL.search(name):  # one C-level pass: every listed folder name is checked
        bad = sorted(set(_CONTROL.findall(name)))
        return (f"{name!r} contains control character(s) {', '.join(repr(c) for c in bad)}; "
                "rename it on the NAS")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"{name[:40]!r}... is longer than {MAX_NAME_BYTES} bytes; shorten it on the NAS"
    return None


# ---------------------------------------------------------------- rules applied


def split_rel(rel: str) -> list[str]:
    return [p for p in rel.split("/") if p]


def is_ignored(rel: str, rules: CatalogRules) -> bool:
    """True for files (or folders on the way to them) that are not catalogued."""
    parts = split_rel(rel)
    if any(is_ignored_dir_name(part, rules) for part in parts[:-1]):
        return True
    return is_ignored_name(parts[-1] if parts else "", rules)


def is_ignored_name(name: str, rules: CatalogRules) -> bool:
    """is_ignored of a file's own name, the folders on the way already checked: what a scan
    asks once per listed file."""
    if is_ignored_dir_name(name, rules) or name.endswith(rules.ignore_suffixes):
        return True
    if rules.media_extensions:
        return os.path.splitext(name)[1].lower() not in rules.media_extensions
    return False


def is_ignored_dir_name(name: str, rules: CatalogRules) -> bool:
    return name in rules.ignore_names or name.startswith(rules.ignore_prefixes)


def _player_spans(pattern: str, stem: str) -> list[str]:
    if pattern == DEFAULT_PLAYER_PATTERNS[0]:
        return vs_player_spans(stem)  # the same matches, in linear time
    # An operator's own regex may backtrack badly too: it sees a bounded prefix of the name.
    return [m.group("players") for m in re.finditer(pattern, stem[:MAX_PLAYER_SCAN_CHARS])]


def _split_players(players: str, rules: CatalogRules) -> list[str]:
    if rules.player_separators == DEFAULT_PLAYER_SEPARATORS:
        return split_default(players)
    return re.split(rules.player_separators, players[:MAX_PLAYER_SCAN_CHARS])


def find_players(stem: str, rules: CatalogRules) -> tuple[str, ...]:
    found: list[str] = []
    seen: set[str] = set()
    for pattern in rules.player_patterns:
        for players in _player_spans(pattern, stem):
            for name in _split_players(players, rules):
                name = " ".join(name.split())
                key = player_key(name)
                if name and key not in seen:
                    seen.add(key)
                    found.append(name)
    return tuple(found)


def place(rel: str, rules: CatalogRules | None = None) -> CatalogPlace:
    """Where a file sits in the catalog; `rel` is relative to the catalogued root, so its
    first component is the catalog (top-level folder)."""
    rules = rules or CatalogRules()
    parts = split_rel(rel)
    if len(parts) < 2:
        raise ValueError(f"{rel!r} is not inside a catalog folder (files at the root of the "
                         "catalogued tree belong to no catalog)")
    catalog, dirs, name = parts[0], parts[1:-1], parts[-1]
    stem = os.path.splitext(name)[0] if rules.strip_extension else name
    if not stem:  # ".mp4" style names keep their full name as the title
        stem = name
    series_parts, content_dirs = dirs[: rules.series_depth], dirs[rules.series_depth:]
    series = " / ".join(series_parts) if series_parts else rules.default_series
    content = "/".join([*content_dirs, stem])
    players = find_players(stem, rules)
    return CatalogPlace(
        catalog=catalog, series=series, content=content, players=players,
        catalog_id=catalog_id(catalog), series_id=series_id(catalog, series),
        content_id=content_id(catalog, series, content),
        player_ids=tuple(player_id(p) for p in players),
    )
