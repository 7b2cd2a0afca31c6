"""The paged KV cache: prefix hashes that match exactly when whole-block prefixes do, block
accounting that never loses or double-books a block, and vLLM's eviction order."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.sim.kv import KvCache, block_hashes, extend_hash

B = 16

tokens = st.lists(st.integers(0, 200_000), max_size=8 * B)


@given(a=tokens, edits=st.lists(st.tuples(st.integers(0, 8 * B - 1), st.integers(0, 200_000))))
def test_block_hashes_match_exactly_when_whole_block_prefixes_match(
    a: list[int], edits: list[tuple[int, int]]
) -> None:
    b = list(a)
    for position, token in edits:
        if position < len(b):
            b[position] = token
    ha, hb = block_hashes(a), block_hashes(b)
    assert len(ha) == len(a) // B
    for i in range(min(len(ha), len(hb))):
        assert (ha[i] == hb[i]) == (a[: (i + 1) * B] == b[: (i + 1) * B]), i


@given(prefix=st.lists(st.integers(0, 1000), min_size=B, max_size=4 * B), tail=tokens)
def test_a_shared_block_in_a_different_position_or_after_a_different_prefix_differs(
    prefix: list[int], tail: list[int]
) -> None:
    block = prefix[:B]
    # The same 16 tokens after different histories are different cache entries.
    assert block_hashes(block)[0] != block_hashes([*block, *block])[1]
    if tail[:B] != block and len(tail) >= B:
        assert block_hashes([*tail[:B], *block])[1] != block_hashes([*block, *block])[1]


@given(ids=tokens)
def test_extending_a_hash_block_by_block_equals_hashing_the_whole_sequence(ids: list[int]) -> None:
    previous = 0
    chained = []
    for i in range(len(ids) // B):
        previous = extend_hash(previous, ids[i * B : (i + 1) * B])
        chained.append(previous)
    assert chained == block_hashes(ids)


# ---- block accounting ------------------------------------------------------------------

# A handful of prompts built from three shared prefixes, so requests hit each other.
PREFIXES = [[p * 1000 + i for i in range(3 * B)] for p in range(3)]
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 2), st.integers(0, 4 * B), st.integers(0, 9)),
        st.tuples(st.just("free"), st.integers(0, 20), st.just(0), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300)
@given(num_blocks=st.integers(1, 24), ops=operations)
def test_blocks_are_conserved_and_never_double_booked(
    num_blocks: int, ops: list[tuple[str, int, int, int]]
) -> None:
    kv = KvCache(num_blocks)
    live: list[list[int]] = []  # each live request's blocks
    for op, a, length, salt in ops:
        if op == "free":
            if live:
                kv.free(live.pop(a % len(live)))
        else:
            prompt = PREFIXES[a][: B + length] + [salt] * length
            hashes = block_hashes(prompt)
            hits = kv.cached_prefix(hashes)
            reclaimed = sum(kv.is_free_cached(h) for h in hashes[:hits])
            need = len(hashes) - hits
            if need + reclaimed > kv.free_blocks:
                continue  # what the scheduler does: wait (or preempt)
            shared = kv.touch_prefix(hashes[:hits])
            held = Counter(b for blocks in live for b in blocks)
            fresh = kv.allocate(need)
            assert fresh is not None
            # A fresh block is nobody's; a cached one is the block others hold for it.
            assert not set(fresh) & set(held)
            assert len(set(shared + fresh)) == len(hashes)
            for block, h in zip(shared + fresh, hashes, strict=True):
                kv.commit(block, h)
            assert kv.cached_prefix(hashes) == len(hashes)
            live.append(shared + fresh)
        held = Counter(b for blocks in live for b in blocks)
        assert kv.used_blocks == len(held)
        assert kv.free_blocks + len(held) == num_blocks
        assert 0 <= kv.usage <= 1
    for blocks in live:
        kv.free(blocks)
    assert kv.free_blocks == num_blocks and kv.used_blocks == 0


def test_allocation_fails_whole_when_blocks_run_out() -> None:
    kv = KvCache(4)
    assert kv.allocate(3) is not None
    assert kv.allocate(2) is None
    assert kv.free_blocks == 1


def filled(kv: KvCache, ids: list[int]) -> list[int]:
    """A request that filled and committed blocks for `ids`."""
    hashes = block_hashes(ids)
    blocks = kv.allocate(len(hashes))
    assert blocks is not None
    for block, h in zip(blocks, hashes, strict=True):
        kv.commit(block, h)
    return blocks


def test_a_freed_requests_tail_blocks_are_evicted_before_its_prefix() -> None:
    kv = KvCache(4)
    ids = list(range(4 * B))
    hashes = block_hashes(ids)
    kv.free(filled(kv, ids))
    assert kv.cached_prefix(hashes) == 4
    for still_cached in (3, 2, 1, 0):
        assert kv.allocate(1) is not None
        assert kv.cached_prefix(hashes) == still_cached
    assert kv.evictions == 4


def test_the_least_recently_freed_request_is_evicted_first() -> None:
    kv = KvCache(4)
    first, second = list(range(2 * B)), list(range(1000, 1000 + 2 * B))
    first_blocks = filled(kv, first)
    second_blocks = filled(kv, second)
    kv.free(first_blocks)
    kv.free(second_blocks)
    kv.allocate(2)
    assert kv.cached_prefix(block_hashes(first)) == 0
    assert kv.cached_prefix(block_hashes(second)) == 2


def test_unhashed_blocks_are_reused_before_cached_ones() -> None:
    kv = KvCache(4)
    ids = list(range(2 * B))
    cached = filled(kv, ids)
    scratch = kv.allocate(2)  # e.g. partial blocks, never committed
    assert scratch is not None
    kv.free(cached)
    kv.free(scratch)
    assert sorted(kv.allocate(2) or []) == sorted(scratch)
    assert kv.cached_prefix(block_hashes(ids)) == 2
    assert kv.evictions == 0


def test_reusing_a_cached_block_takes_it_out_of_the_free_queue() -> None:
    kv = KvCache(2)
    ids = list(range(2 * B))
    hashes = block_hashes(ids)
    kv.free(filled(kv, ids))
    assert kv.free_blocks == 2 and kv.used_blocks == 0  # cached but free
    assert kv.touch_prefix(hashes[:1])
    assert kv.free_blocks == 1
    assert kv.allocate(1) is not None  # evicts the second block, not the touched one
    assert kv.cached_prefix(hashes) == 1


def test_without_prefix_caching_nothing_is_found() -> None:
    kv = KvCache(4, prefix_caching=False)
    ids = list(range(2 * B))
    kv.free(filled(kv, ids))
    assert kv.cached_prefix(block_hashes(ids)) == 0
