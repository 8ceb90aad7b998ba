"""Pure rules of the hybrid cache: hashing copy, circuit breaker, eviction policy, merge,
alarms and sensor decisions (no servers)."""

from __future__ import annotations

import hashlib
import io
import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from hybrid_pipelines.hybrid_cache.hashing_copy import (
    HashingReader,
    copy_with_sha256,
    sha256_of_stream,
)
from hybrid_pipelines.hybrid_cache.rules.alarms import CacheStats, evaluate
from hybrid_pipelines.hybrid_cache.rules.cache_diff import UnsortedInputError, merge_by_key
from hybrid_pipelines.hybrid_cache.rules.circuit_breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerPolicy,
    BreakerState,
    decide,
    on_failure,
    on_success,
)
from hybrid_pipelines.hybrid_cache.rules.eviction_policy import (
    Candidate,
    Policy,
    bytes_to_free,
    choose,
    parse_policy,
    take_until,
)
from hybrid_pipelines.hybrid_cache.rules.sensor_decisions import recache_decision, usage_decision


class ChunkSpy(io.BytesIO):
    """A source that records the largest read asked of it."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.largest = 0

    def read(self, n: int | None = -1) -> bytes:  # type: ignore[override]
        self.largest = max(self.largest, n if n is not None and n >= 0 else 1 << 62)
        return super().read(n)


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096 + 5])
def test_copy_hashes_what_it_streams_in_bounded_chunks(size: int) -> None:
    data = random.Random(size).randbytes(size)
    src, dst = ChunkSpy(data), io.BytesIO()
    result = copy_with_sha256(src, dst, chunk_size=4096)
    assert dst.getvalue() == data
    assert result.size == size and result.sha256 == hashlib.sha256(data).hexdigest()
    assert src.largest <= 4096  # never asks for the whole stream at once
    assert sha256_of_stream(io.BytesIO(data), 1000) == result


def test_copy_finishes_partial_writes_of_raw_streams() -> None:
    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.buf = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:  # type: ignore[override]
            take = bytes(b[:3])  # a raw stream may take fewer bytes than offered
            self.buf += take
            return len(take)

    dst = Trickle()
    copy_with_sha256(io.BytesIO(b"0123456789"), dst, chunk_size=8)
    assert bytes(dst.buf) == b"0123456789"


class Dribble:
    """A source that returns at most 3 bytes per read, like a raw socket or SMB stream."""

    def __init__(self, data: bytes):
        self.src = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self.src.read(3 if n is None or n < 0 else min(n, 3))


def test_hashing_reader_fills_each_read_and_hashes_what_was_pulled() -> None:
    reader = HashingReader(Dribble(b"abcdefghij"), chunk_size=4)
    assert reader.read(4) == b"abcd"  # short source reads are joined, never passed on
    assert reader.read(5) == b"efghi"
    assert reader.read() == b"j" and reader.read(10) == b""
    assert reader.result().sha256 == hashlib.sha256(b"abcdefghij").hexdigest()
    assert reader.result().size == 10


def test_breaker_opens_after_n_failures_and_half_opens_after_cooldown() -> None:
    policy = BreakerPolicy(failure_threshold=3, cooldown_s=60)
    state = BreakerState()
    for t in (0, 1):
        state = on_failure(state, policy, t, "refused")
        assert state.state == CLOSED and decide(state, policy, t).allowed
    state = on_failure(state, policy, 2, "refused")
    assert state.state == OPEN and state.opened_at == 2
    blocked = decide(state, policy, 30)
    assert not blocked.allowed and "refused" in blocked.reason and "32s" in blocked.reason
    trial = decide(state, policy, 62)
    assert trial.allowed and trial.state.state == HALF_OPEN
    reopened = on_failure(trial.state, policy, 62, "still refused")
    assert reopened.state == OPEN and reopened.opened_at == 62
    assert not decide(reopened, policy, 100).allowed
    closed = on_success(decide(reopened, policy, 122).state)
    assert closed == BreakerState()


def test_breaker_success_resets_the_failure_count() -> None:
    policy = BreakerPolicy(2, 10)
    state = on_failure(BreakerState(), policy, 0)
    state = on_success(state)
    assert on_failure(state, policy, 1).state == CLOSED


def test_breaker_rejects_bad_policy_and_state() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        BreakerPolicy(0, 1)
    with pytest.raises(ValueError, match="unknown breaker state"):
        BreakerState("ajar")


T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _cands() -> list[Candidate]:
    h = timedelta(hours=1)
    return [
        # id, key, size, created, last_accessed, access_count
        Candidate("a", "a", 10, T0, T0 + 9 * h, 1),       # oldest upload, used recently, rarely
        Candidate("b", "b", 10, T0 + h, T0 + 2 * h, 50),  # used long ago, very often
        Candidate("c", "c", 10, T0 + 2 * h, None, 0),     # never accessed (counts as created)
        Candidate("d", "d", 10, T0 + 3 * h, T0 + 8 * h, 5),
    ]


@pytest.mark.parametrize("policy,expected", [
    (Policy.LRU, ["b", "c"]), (Policy.LFU, ["c", "a"]), (Policy.FIFO, ["a", "b"])])
def test_each_policy_orders_candidates_its_own_way(policy: Policy, expected: list[str]) -> None:
    assert [c.id for c in choose(_cands(), policy, need_bytes=20)] == expected


def test_bytes_to_free_and_take_until() -> None:
    assert bytes_to_free(800, 1000, 0.8, 0.7) == 0  # at the threshold: nothing
    assert bytes_to_free(801, 1000, 0.8, 0.7) == 101  # above: down to the target
    with pytest.raises(ValueError, match="below the threshold"):
        bytes_to_free(900, 1000, 0.8, 0.8)
    with pytest.raises(ValueError, match="capacity"):
        bytes_to_free(1, 0, 0.8, 0.7)
    assert [c.id for c in take_until(_cands(), 11)] == ["a", "b"]
    assert [c.id for c in take_until(_cands(), 100, max_files=1)] == ["a"]
    assert take_until(_cands(), 0) == []


def test_parse_policy_names_the_valid_choices() -> None:
    assert parse_policy(" LFU ") is Policy.LFU
    with pytest.raises(ValueError, match="lru, lfu, fifo"):
        parse_policy("random")


def test_merge_by_key_pairs_sorted_streams_and_refuses_unsorted_ones() -> None:
    left = ["a", "a/b", "a-c", "é"]
    right = ["a-c", "b", "é"]
    out = [(k, lv is not None, rv is not None) for k, lv, rv in
           merge_by_key(sorted(left), sorted(right), str, str)]
    assert out == [("a", True, False), ("a-c", True, True), ("a/b", True, False),
                   ("b", False, True), ("é", True, True)]
    with pytest.raises(UnsortedInputError, match="COLLATE"):
        list(merge_by_key(["b", "a"], [], str, str))


def test_alarms_fire_at_the_platform_thresholds() -> None:
    ok = CacheStats(90.0, 1000, 0.05, 0.70, True, True)
    assert all(a.passed for a in evaluate(ok))
    bad = CacheStats(90.1, 1001, 0.051, 0.69, True, False)
    failed = {a.check_name: a.description for a in evaluate(bad) if not a.passed}
    assert set(failed) == {"cache_usage_ok", "sync_queue_ok", "sync_failure_rate_ok",
                           "cache_hit_rate_ok", "cache_backends_healthy"}
    assert "NAS" in failed["cache_backends_healthy"]
    no_reads = CacheStats(0, 0, 0, None, True, True)
    assert all(a.passed for a in evaluate(no_reads))


def test_usage_sensor_requests_on_crossing_and_repeats_while_above() -> None:
    d1 = usage_decision(None, 850, 1000, 0.8, now=100)
    assert d1.request
    d2 = usage_decision(d1.cursor, 860, 1000, 0.8, now=160)
    assert not d2.request and "still above" in d2.reason
    d3 = usage_decision(d2.cursor, 860, 1000, 0.8, now=100 + 600)
    assert d3.request
    d4 = usage_decision(d3.cursor, 500, 1000, 0.8, now=800)
    assert not d4.request and json.loads(d4.cursor)["above"] is False
    assert usage_decision(d4.cursor, 900, 1000, 0.8, now=801).request  # crossed again
    assert usage_decision("not json", 900, 1000, 0.8, now=1).request


def test_recache_sensor_fires_on_recovery_and_throttles() -> None:
    down = recache_decision(None, False, 5, now=0)
    assert not down.request
    back = recache_decision(down.cursor, True, 5, now=10)
    assert back.request and "recovered" in back.reason
    assert not recache_decision(back.cursor, True, 5, now=20).request
    assert recache_decision(back.cursor, True, 5, now=10 + 300).request
    assert not recache_decision(back.cursor, True, 0, now=1000).request
