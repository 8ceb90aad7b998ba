"""Path -> catalog rules (pure)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hybrid_pipelines.media_catalog.rules.catalog_paths import (
    CatalogRules,
    CatalogRulesError,
    file_id,
    find_players,
    folder_for,
    is_ignored,
    partition_key_for,
    place,
    player_id,
    series_id,
    stable_id,
)

DOC_ID = re.compile(r"^[a-z0-9_-]{1,100}$")


def test_default_rules_split_catalog_series_content() -> None:
    p = place("WSOP/WSOP 2024/Main Event/Day1.mp4")
    assert (p.catalog, p.series, p.content) == ("WSOP", "WSOP 2024", "Main Event/Day1")
    assert p.catalog_id.startswith("wsop-") and p.series_id.startswith("wsop-2024-")
    flat = place("WSOP/clip.mp4")
    assert (flat.series, flat.content) == ("", "clip")
    assert flat.series_id.startswith("_none-")


def test_rules_are_configurable() -> None:
    deep = CatalogRules(series_depth=2, strip_extension=False, default_series="Misc")
    p = place("WSOP/WSOP 2024/Main Event/Day1.mp4", deep)
    assert (p.series, p.content) == ("WSOP 2024 / Main Event", "Day1.mp4")
    assert place("WSOP/clip.mp4", deep).series == "Misc"
    none = place("HCL/HCL 2025/Episode 01.ts", CatalogRules(series_depth=0))
    assert (none.series, none.content) == ("", "HCL 2025/Episode 01")


def test_files_outside_a_catalog_folder_are_refused() -> None:
    with pytest.raises(ValueError, match="not inside a catalog folder"):
        place("loose.mp4")


@pytest.mark.parametrize(("stem", "players"), [
    ("Final Table - Phil Ivey vs Tom Dwan (HD)", ("Phil Ivey", "Tom Dwan")),
    ("Ivey vs. Dwan vs Negreanu", ("Ivey", "Dwan", "Negreanu")),
    ("결승전 - 홍길동 vs 김철수", ("홍길동", "김철수")),
    ("Day 3 - phil ivey VS Phil  Ivey", ("phil ivey",)),  # one player, two spellings
    ("Main Event Day1", ()),
    ("Episode 01 [1080p, x264]", ()),
    ("Survivors - dvs notes", ()),
])
def test_players_from_file_names(stem: str, players: tuple[str, ...]) -> None:
    assert find_players(stem, CatalogRules()) == players


def test_player_rule_can_be_replaced() -> None:
    rules = CatalogRules.from_mapping({"player_patterns": [r"\[(?P<players>[^\]]+)\]"]})
    assert find_players("Episode 01 [Ivey, Dwan & Hellmuth]", rules) == \
        ("Ivey", "Dwan", "Hellmuth")
    p = place("HCL/S1/Episode 01 [Ivey, Dwan].mp4", rules)
    assert p.player_ids == (player_id("Ivey"), player_id("dwan"))


def test_ids_are_stable_distinct_and_valid_firestore_ids() -> None:
    names = ["WSOP 2024", "wsop-2024", "WSOP  2024", "포커 2025", "포커 2026", "🂡", "." * 5,
             "__x__", "a/b"]
    ids = [stable_id("WSOP", n) for n in names]
    assert len(set(ids)) == len(ids)
    assert all(DOC_ID.match(i) for i in ids), ids
    assert stable_id("WSOP", "포커 2025") == stable_id("WSOP", "포커 2025")
    assert series_id("A", "") != series_id("B", "")
    assert re.fullmatch(r"[0-9a-f]{32}", file_id("WSOP/포커/x.mp4"))
    assert file_id("a/b.mp4") != file_id("a/B.mp4")


@pytest.mark.parametrize("folder", ["WSOP", "Wait... what", "100% done", "%2E%2E%2E", "포커",
                                    "....", "a..b", " spaced "])
def test_partition_keys_round_trip_and_are_valid_for_dagster(folder: str) -> None:
    key = partition_key_for(folder)
    assert "..." not in key
    assert folder_for(key) == folder
    if "..." not in folder and "%" not in folder:
        assert key == folder  # readable in the UI


def test_ignored_names() -> None:
    rules = CatalogRules()
    for rel in ("A/.DS_Store", "A/._clip.mp4", "A/~$notes.docx", "A/Thumbs.db",
                "A/@eaDir/x.jpg", "A/clip.mp4.part", "A/.partial-clip.mp4"):
        assert is_ignored(rel, rules), rel
    assert not is_ignored("A/clip.mp4", rules)
    only_video = CatalogRules(media_extensions=(".mp4", ".mkv"))
    assert is_ignored("A/readme.txt", only_video) and not is_ignored("A/x.MKV", only_video)


def test_rules_from_json_and_file(tmp_path: Path) -> None:
    assert CatalogRules.from_json("") == CatalogRules()
    rules = CatalogRules.from_json('{"series_depth": 2, "ignore_suffixes": [".tmp"]}')
    assert rules.series_depth == 2 and rules.ignore_suffixes == (".tmp",)
    f = tmp_path / "rules.json"
    f.write_text(json.dumps({"default_series": "기타"}), encoding="utf-8")
    assert CatalogRules.from_env({"HP_CATALOG_RULES": f"@{f}"}).default_series == "기타"
    assert rules.fingerprint() != CatalogRules().fingerprint()


@pytest.mark.parametrize(("text", "message"), [
    ('{"series_dept": 1}', "unknown catalog rule"),
    ("[1]", "must be a JSON object"),
    ("{nope", "not JSON"),
    ('{"series_depth": -1}', "series_depth"),
    ('{"player_patterns": ["(unclosed"]}', "not a regex"),
    ('{"player_patterns": ["(?P<name>.+)"]}', "named group"),
    ("@/nonexistent/rules.json", "cannot read"),
])
def test_bad_rules_are_explained(text: str, message: str) -> None:
    with pytest.raises(CatalogRulesError, match=message):
        CatalogRules.from_json(text)
