"""Readable Firestore document ids (pure): the name itself where Firestore takes it, an
escaped form with a hash only where it does not, and never two names on one id."""

from __future__ import annotations

import re

import pytest

from hybrid_pipelines.media_catalog.rules.firestore_ids import (
    MAX_ID_BYTES,
    doc_id,
    firestore_refuses,
    is_escaped,
    player_doc_id,
)

HASHED = re.compile(r"~[0-9a-f]{10}\Z")


def _valid(doc: str) -> bool:
    return firestore_refuses(doc) is None


@pytest.mark.parametrize("name", [
    "WSOP", "HCL", "PAD", "WSOP 2024", "포커 2025", "100% 완료 #1 (final)", "Day1 - Ivey vs Dwan",
    "a.b", "...", "_x_", "__init", "x__", "~tilde", "ends~abc", "café", "wsop",
    "x" * MAX_ID_BYTES,
])
def test_names_firestore_accepts_are_their_own_id(name: str) -> None:
    assert doc_id(name) == name


@pytest.mark.parametrize(("name", "readable"), [
    ("Main Event/Day1", "Main Event%2FDay1"),  # '/': a content title with folders
    ("WSOP / 2024", "WSOP %2F 2024"),
    (".", "."),
    ("..", ".."),
    ("__x__", "__x__"),
    ("____", "____"),
    ("", ""),  # the unnamed series
    ("Day1~0123456789", "Day1~0123456789"),  # looks escaped: reserved, so escaped itself
    ("bad\udcff", "bad%uDCFF"),  # a lone surrogate is not UTF-8
])
def test_names_firestore_refuses_are_escaped_with_a_hash(name: str, readable: str) -> None:
    doc = doc_id(name)
    assert doc.startswith(readable) and HASHED.fullmatch(doc[len(readable):])
    assert is_escaped(doc) and _valid(doc)
    assert doc_id(name) == doc  # stable


def test_over_1500_bytes_is_cut_on_a_character_boundary() -> None:
    name = "가" * 600  # 1,800 bytes
    doc = doc_id(name)
    assert len(doc.encode()) <= MAX_ID_BYTES and _valid(doc) and HASHED.search(doc)
    assert doc.startswith("가" * 400)
    assert doc_id("가" * 600) != doc_id("가" * 601)  # same cut, different names


def test_refusal_reasons_name_the_rule() -> None:
    assert "'/'" in firestore_refuses("a/b")
    assert "'.'" in firestore_refuses(".")
    assert "__.*__" in firestore_refuses("__a__")
    assert "1500" in firestore_refuses("x" * 1501)
    assert "empty" in firestore_refuses("")
    assert firestore_refuses("WSOP 2024") is None


def test_no_two_names_share_an_id() -> None:
    escaped_to_same_text = ["A/B", "A%2FB~", "A%2FB"]
    names = [*escaped_to_same_text, ".", "..", "__x__", "", "Day1~0123456789",
             doc_id("A/B"), "WSOP", "wsop", "Wsop"]
    ids = [doc_id(n) for n in names]
    assert len(set(ids)) == len(names)
    # An escaped id used as a name is escaped again, not taken as itself.
    assert doc_id(doc_id("A/B")) != doc_id("A/B")


def test_case_only_differences_stay_distinct() -> None:
    assert (doc_id("WSOP"), doc_id("wsop")) == ("WSOP", "wsop")


def test_player_ids_are_the_player_key() -> None:
    assert player_doc_id("Phil Ivey") == player_doc_id("phil  IVEY") == "phil ivey"
    assert player_doc_id("홍길동") == "홍길동"
