"""Listing diffs, stability, directory skipping, walk order, renames (pure)."""

from __future__ import annotations

import random

import pytest

from hybrid_pipelines.media_catalog.rules.scan_diff import (
    CHANGED,
    CONFIRMED,
    GROWING,
    NEW,
    PENDING,
    STABLE,
    UNCHANGED,
    DirState,
    Entry,
    Gone,
    Known,
    Observed,
    Progress,
    StabilityRule,
    decide_file,
    diff_listing,
    file_done,
    listing_reason,
    pair_renames,
    path_key,
    subtree_done,
)

NOW = 1_000_000.0
RULE = StabilityRule(min_stable_s=30, quiet_s=600)


def known(path: str = "A/x.mp4", size: int = 10, mtime: float = NOW - 5, status: str = PENDING,
          seen_at: float = NOW - 60) -> Known:
    return Known(path, size, mtime, status, seen_at)


def test_new_files_wait_unless_long_quiet() -> None:
    fresh = decide_file(None, Observed("A/x.mp4", 10, NOW - 5), NOW, RULE)
    assert (fresh.kind, fresh.status, fresh.seen_at) == (NEW, PENDING, NOW)
    old = decide_file(None, Observed("A/x.mp4", 10, NOW - 3600), NOW, RULE)
    assert (old.kind, old.status) == (NEW, STABLE)
    strict = decide_file(None, Observed("A/x.mp4", 10, NOW - 3600), NOW, StabilityRule(30, 0))
    assert strict.status == PENDING


def test_pending_file_becomes_stable_only_when_unchanged_long_enough() -> None:
    same = Observed("A/x.mp4", 10, NOW - 5)
    assert decide_file(known(seen_at=NOW - 60), same, NOW, RULE).kind == CONFIRMED
    too_soon = decide_file(known(seen_at=NOW - 10), same, NOW, RULE)
    assert (too_soon.kind, too_soon.status, too_soon.writes) == (UNCHANGED, PENDING, False)
    grown = decide_file(known(), Observed("A/x.mp4", 20, NOW - 5), NOW, RULE)
    assert (grown.kind, grown.status, grown.seen_at) == (GROWING, PENDING, NOW)
    touched = decide_file(known(), Observed("A/x.mp4", 10, NOW - 1), NOW, RULE)
    assert touched.kind == GROWING


def test_probed_file_rewritten_is_changed_and_waits_again() -> None:
    d = decide_file(known(status="valid"), Observed("A/x.mp4", 11, NOW - 1), NOW, RULE)
    assert (d.kind, d.status) == (CHANGED, PENDING)
    assert not decide_file(known(status="valid"), Observed("A/x.mp4", 10, NOW - 5), NOW,
                           RULE).writes
    back = decide_file(known(status="deleted"), Observed("A/x.mp4", 10, NOW - 5), NOW, RULE)
    assert back.kind == NEW


def test_which_directories_are_listed() -> None:
    leaf = DirState("A/B", 5.0, False)
    inner = DirState("A", 5.0, True)
    assert listing_reason(5.0, leaf, full=False, has_pending=False) is None
    assert listing_reason(6.0, leaf, full=False, has_pending=False) == "changed"
    assert listing_reason(5.0, None, full=False, has_pending=False) == "new"
    assert listing_reason(5.0, inner, full=False, has_pending=False) == "inner"
    assert listing_reason(5.0, leaf, full=False, has_pending=True) == "pending"
    assert listing_reason(5.0, leaf, full=True, has_pending=False) == "full"


def _tree(rng: random.Random) -> list[str]:
    names = ["a", "a b", "a.b", "a-b", "B", "é", "가", "z", "a0", "ab"]
    files = []
    for _ in range(200):
        depth = rng.randint(1, 4)
        files.append("/".join(rng.choice(names) for _ in range(depth)) + "/f" + rng.choice(names))
    return sorted(set(files))


def _dfs(files: list[str]) -> list[str]:
    """The order a name-ordered depth-first walk meets the files in."""
    tree: dict = {}
    for f in files:
        node = tree
        parts = f.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p + "/", {})
        node[parts[-1]] = None
    out: list[str] = []

    def walk(node: dict, prefix: str) -> None:
        for name in sorted(node, key=lambda n: n.rstrip("/")):
            if node[name] is None:
                out.append(prefix + name)
            else:
                walk(node[name], prefix + name)
    walk(tree, "")
    return out


@pytest.mark.parametrize("seed", range(5))
def test_walk_order_is_path_key_order_so_resume_has_no_gaps(seed: int) -> None:
    files = _tree(random.Random(seed))
    order = _dfs(files)
    assert order == sorted(files, key=path_key)
    cut = order[len(order) // 2]
    # Everything the walk met before the checkpoint is done, nothing after it is.
    assert [f for f in order if file_done(f, cut)] == order[: len(order) // 2 + 1]
    dirs = {f.rsplit("/", 1)[0] for f in files}
    for d in dirs:
        below = [f for f in order if f.startswith(d + "/")]
        if subtree_done(d, cut):
            assert all(file_done(f, cut) for f in below), d
        elif below:
            assert not all(file_done(f, cut) for f in below) or cut.startswith(d + "/"), d


def test_subtree_done_edge_cases() -> None:
    assert not subtree_done("A", None)
    assert subtree_done("A", "A b/x")  # "A" < "A b" component-wise
    assert not subtree_done("A", "A/x")  # the checkpoint is inside it
    assert not subtree_done("A b", "A/x")
    assert file_done("A/x", "A/x") and not file_done("A/y", "A/x")


def test_diff_listing_finds_new_deleted_gone_and_ignored() -> None:
    entries = [Entry("A/new.mp4", False, 5, NOW - 5), Entry("A/same.mp4", False, 10, 1.0),
               Entry("A/Sub", True, 0, 2.0), Entry("A/.DS_Store", False, 1, 1.0)]
    known_files = {"A/same.mp4": Known("A/same.mp4", 10, 1.0, "valid", 0.0),
                   "A/gone.mp4": Known("A/gone.mp4", 3, 1.0, "valid", 0.0),
                   "A/old.mp4": Known("A/old.mp4", 3, 1.0, "deleted", 0.0)}
    diff = diff_listing(entries, known_files, ["A/Sub", "A/Removed"], NOW, RULE,
                        ignored=lambda e: e.name.startswith("."))
    assert [getattr(c, "path", None) or c.obs.path for c in diff.children] == \
        ["A/Sub", "A/new.mp4", "A/same.mp4"]
    assert diff.deleted_files == ["A/gone.mp4"]
    assert diff.gone_dirs == ["A/Removed"]
    assert diff.ignored == 1
    assert [c.path for c in diff.subdirs] == ["A/Sub"]


def test_renames_pair_only_unambiguous_matches() -> None:
    gone = [Gone("A/x.mp4", 100, 1.0), Gone("A/y.mp4", 200, 2.0), Gone("A/e.mp4", 0, 3.0),
            Gone("A/d1.mp4", 300, 4.0), Gone("A/d2.mp4", 300, 4.0)]
    new = [Observed("B/x.mp4", 100, 1.0), Observed("A/renamed.mp4", 200, 2.0),
           Observed("A/e2.mp4", 0, 3.0), Observed("A/d3.mp4", 300, 4.0)]
    assert pair_renames(gone, new) == [("A/x.mp4", "B/x.mp4"), ("A/y.mp4", "A/renamed.mp4")]


def test_progress_rate_and_eta() -> None:
    p = Progress(started=0.0, expected_total=1000, done=250)
    assert p.rate(10.0) == 25.0
    assert p.eta_s(10.0) == 30.0
    assert "250/1000 files, 25 files/s, ETA 30s" in p.line("scan", 10.0)
    assert Progress(0.0).eta_s(5.0) is None
