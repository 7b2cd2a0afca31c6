"""The routing book's accounting (placed / finished / observe / replica_down) and the
purity of the choice functions: a choice reads the book and never changes it."""

from __future__ import annotations

import copy
import random

import pytest

from orchestrator.config import RouterSettings, RoutingPolicy
from orchestrator.domain import CallRequest, Sampling
from orchestrator.routing import PrefixIndex, ReplicaView, RoutingBook
from orchestrator.routing.book import INDEX_BLOCK_TOKENS as BLOCK
from orchestrator.routing.choose import CHOOSERS, candidates

ALL = list(RoutingPolicy)


def prompt(seed: int, blocks: int) -> tuple[int, ...]:
    rng = random.Random(seed)
    return tuple(rng.randrange(2, 32_000) for _ in range(blocks * BLOCK))


def request(
    call_id: str, tokens: tuple[int, ...], max_tokens: int = 16, task_id: str = ""
) -> CallRequest:
    return CallRequest(call_id, tokens, Sampling(max_tokens=max_tokens), task_id=task_id)


def view(name: str, *, healthy: bool = True, capacity: int = 0, evicted: int = 0) -> ReplicaView:
    return ReplicaView(name, healthy, 0, kv_capacity_blocks=capacity, evicted_blocks=evicted)


def index_size(book: RoutingBook, name: str) -> int:
    index = book.index(name)
    return 0 if index is None else len(index)


@pytest.mark.parametrize("track_prefixes", [False, True])
def test_placed_then_finished_returns_the_load_to_zero(track_prefixes: bool) -> None:
    book = RoutingBook(track_prefixes=track_prefixes)
    a = book.routed(request("a", prompt(1, 4), max_tokens=10))
    b = book.routed(request("b", prompt(2, 2), max_tokens=6))
    book.placed(a, "r0")
    book.placed(b, "r0")
    assert book.load("r0") == 4 * BLOCK + 10 + 2 * BLOCK + 6
    assert book.turn == 2
    book.finished("a")
    assert dict(book.outstanding_tokens()) == {"r0": 2 * BLOCK + 6}
    book.finished("b", (7, 8, 9))
    assert dict(book.outstanding_tokens()) == {}


def test_a_cached_prefix_is_not_counted_as_work() -> None:
    book = RoutingBook(track_prefixes=True)
    shared = prompt(3, 6)
    book.placed(book.routed(request("a", shared, max_tokens=5)), "r0")
    book.placed(book.routed(request("b", shared + prompt(4, 2), max_tokens=5)), "r0")
    # b's first 6 blocks are already held: it brings only its last 2 and its output.
    assert book.load("r0") == (6 * BLOCK + 5) + (2 * BLOCK + 5)


def test_a_double_finish_releases_the_call_once() -> None:
    book = RoutingBook(track_prefixes=True)
    book.placed(book.routed(request("a", prompt(1, 3))), "r0")
    book.placed(book.routed(request("b", prompt(2, 3))), "r0")
    book.finished("a", (1,) * BLOCK)
    after_first = (dict(book.outstanding_tokens()), index_size(book, "r0"))
    book.finished("a", (1,) * BLOCK)
    book.finished("a")
    book.finished("never-placed")
    assert (dict(book.outstanding_tokens()), index_size(book, "r0")) == after_first
    assert book.load("r0") == 3 * BLOCK + 16


def test_placing_a_call_again_gives_up_its_previous_placement() -> None:
    book = RoutingBook(track_prefixes=False)
    call = book.routed(request("a", prompt(1, 2), max_tokens=4))
    book.placed(call, "r0")
    book.placed(call, "r1")  # a retry on another replica
    assert dict(book.outstanding_tokens()) == {"r1": 2 * BLOCK + 4}


def test_a_finished_calls_output_extends_the_index() -> None:
    book = RoutingBook(track_prefixes=True)
    tokens = prompt(5, 2)
    book.placed(book.routed(request("a", tokens)), "r0")
    book.finished("a", prompt(6, 3))
    # The next step's prompt (this prompt + the output) is held in full.
    follow_up = book.routed(request("b", tokens + prompt(6, 3)))
    assert book.matched("r0", follow_up.hashes) == 5
    # A failed call's output is unknown: nothing is added.
    book.placed(book.routed(request("c", prompt(7, 2))), "r1")
    book.finished("c", None)
    assert index_size(book, "r1") == 2


def test_the_index_stays_within_the_reported_capacity_and_shrinks_by_evictions() -> None:
    book = RoutingBook(track_prefixes=True)
    book.observe([view("r0", capacity=10)])
    for i in range(5):
        book.placed(book.routed(request(f"c{i}", prompt(10 + i, 4))), "r0")
        assert index_size(book, "r0") <= 10
    assert index_size(book, "r0") == 10
    newest = book.routed(request("x", prompt(14, 4)))
    assert book.matched("r0", newest.hashes) == 4
    book.observe([view("r0", capacity=10, evicted=3)])
    assert index_size(book, "r0") == 7
    # The same cumulative count again is not a new eviction.
    book.observe([view("r0", capacity=10, evicted=3)])
    assert index_size(book, "r0") == 7
    assert book.matched("r0", newest.hashes) == 4  # the least recently used went first


def test_a_replica_down_forgets_its_index_but_keeps_its_load() -> None:
    book = RoutingBook(track_prefixes=True)
    book.placed(book.routed(request("a", prompt(1, 4))), "r0")
    book.placed(book.routed(request("b", prompt(2, 4))), "r1")
    book.observe([view("r0", healthy=False), view("r1")])
    assert (index_size(book, "r0"), index_size(book, "r1")) == (0, 4)
    assert book.load("r0") == 4 * BLOCK + 16  # its calls still count until they end
    book.replica_down("r1")
    assert index_size(book, "r1") == 0
    book.replica_down("never-seen")  # nothing to forget


def test_without_prefix_tracking_the_book_keeps_no_index() -> None:
    book = RoutingBook(track_prefixes=False)
    book.observe([view("r0", capacity=10)])
    book.placed(book.routed(request("a", prompt(1, 4))), "r0")
    book.finished("a", prompt(2, 2))
    assert book.index("r0") is None


def test_the_book_remembers_each_tasks_latest_replica() -> None:
    book = RoutingBook(track_prefixes=True)
    book.placed(book.routed(request("a", prompt(1, 1), task_id="t")), "r0")
    book.placed(book.routed(request("b", prompt(2, 1), task_id="t")), "r2")
    book.placed(book.routed(request("c", prompt(3, 1))), "r1")
    assert (book.home("t"), book.home("other"), book.home("")) == ("r2", None, None)


def _busy_book(policy: RoutingPolicy) -> tuple[RoutingBook, list[ReplicaView]]:
    """A book with load, prefixes and task homes spread over four replicas."""
    book = RoutingBook(
        track_prefixes=policy in (RoutingPolicy.PREFIX_AFFINITY, RoutingPolicy.PROGRAM_AWARE)
    )
    views = [view(f"r{i}", capacity=64) for i in range(4)]
    book.observe(views)
    shared = prompt(99, 5)
    for i in range(9):
        call = book.routed(request(f"c{i}", shared + prompt(i, 1 + i % 3), task_id=f"t{i % 2}"))
        book.placed(call, f"r{i % 3}")
    book.finished("c0", prompt(50, 2))
    return book, views


@pytest.mark.parametrize("policy", ALL)
def test_each_choice_is_pure(policy: RoutingPolicy) -> None:
    book, views = _busy_book(policy)
    live = candidates(views, frozenset())
    settings = RouterSettings(policy=policy)
    choose = CHOOSERS[policy]
    before = _snapshot(book)
    for i in range(6):
        call = book.routed(request(f"n{i}", prompt(99, 5) + prompt(200 + i, 2), task_id="t1"))
        first = choose(call, live, book, settings)
        assert choose(call, live, book, settings) == first
        assert first in {v.name for v in live}
    assert _snapshot(book) == before


def _snapshot(book: RoutingBook) -> dict[str, object]:
    """Every field of the book, prefix indexes as (capacity, blocks in LRU order)."""

    def plain(value: object) -> object:
        if isinstance(value, PrefixIndex):
            return (value.capacity, list(value._lru))
        if isinstance(value, dict):
            return [(k, plain(v)) for k, v in value.items()]
        return copy.deepcopy(value)

    return {name: plain(value) for name, value in vars(book).items()}
