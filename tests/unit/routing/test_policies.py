"""The four routing policies, as a caller sees them: which replica each call lands on and
what each replica is charged, over token-id prompts several 16-token blocks long."""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.blocks import block_hashes
from orchestrator.domain import CallRequest, Sampling
from orchestrator.routing import (
    LeastLoadRouter,
    NoReplicaAvailable,
    PrefixAffinityRouter,
    ProgramAwareRouter,
    ReplicaView,
    RoundRobinRouter,
    Router,
    RouterSettings,
    RoutingPolicy,
    make_router,
)
from orchestrator.routing.policy import INDEX_BLOCK_TOKENS, call_tokens
from orchestrator.sim.kv import KvCache

BLOCK = INDEX_BLOCK_TOKENS
ALL = list(RoutingPolicy)
PREFIX_AWARE = [RoutingPolicy.PREFIX_AFFINITY, RoutingPolicy.PROGRAM_AWARE]
NONE: frozenset[str] = frozenset()


# ---- factories -------------------------------------------------------------------------


def replica(
    name: str,
    *,
    healthy: bool = True,
    in_flight: int = 0,
    waiting: int = 0,
    running: int = 0,
    kv_usage: float = 0.0,
    kv_block_tokens: int = 16,
    kv_capacity_blocks: int = 0,
    evicted_blocks: int = 0,
) -> ReplicaView:
    return ReplicaView(
        name,
        healthy,
        in_flight,
        waiting_requests=waiting,
        running_requests=running,
        kv_usage=kv_usage,
        kv_block_tokens=kv_block_tokens,
        kv_capacity_blocks=kv_capacity_blocks,
        evicted_blocks=evicted_blocks,
    )


def cluster(n: int, *, down: Sequence[str] = ()) -> list[ReplicaView]:
    """Replicas r0..r{n-1}; those named in `down` unhealthy."""
    return [replica(f"r{i}", healthy=f"r{i}" not in down) for i in range(n)]


def names(n: int) -> list[str]:
    return [f"r{i}" for i in range(n)]


@functools.cache
def tokens(seed: int, blocks: int, extra: int = 0) -> tuple[int, ...]:
    """`blocks` full 16-token blocks (and `extra` more tokens) of ids unique to `seed`."""
    rng = random.Random(seed)
    return tuple(rng.randrange(2, 32_000) for _ in range(blocks * BLOCK + extra))


def call(
    call_id: str, prompt: tuple[int, ...], max_tokens: int = 16, task_id: str = ""
) -> CallRequest:
    return CallRequest(call_id, prompt, Sampling(max_tokens=max_tokens), task_id=task_id)


def router_for(policy: RoutingPolicy) -> Router:
    return make_router(RouterSettings(policy=policy))


def prefix_router(policy: RoutingPolicy) -> PrefixAffinityRouter | ProgramAwareRouter:
    router = router_for(policy)
    assert isinstance(router, PrefixAffinityRouter | ProgramAwareRouter)
    return router


def loads(router: Router) -> dict[str, int]:
    return dict(router.outstanding_tokens())


# ---- construction ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "cls"),
    [
        (RoutingPolicy.ROUND_ROBIN, RoundRobinRouter),
        (RoutingPolicy.LEAST_LOAD, LeastLoadRouter),
        (RoutingPolicy.PREFIX_AFFINITY, PrefixAffinityRouter),
        (RoutingPolicy.PROGRAM_AWARE, ProgramAwareRouter),
    ],
)
def test_make_router_builds_the_configured_policy(policy: RoutingPolicy, cls: type[Router]) -> None:
    assert type(make_router(RouterSettings(policy=policy))) is cls


def test_make_router_passes_the_policy_knobs() -> None:
    affinity = make_router(
        RouterSettings(
            policy=RoutingPolicy.PREFIX_AFFINITY,
            load_epsilon=0.5,
            min_match_ratio=0.3,
            load_slack_tokens=7,
        )
    )
    assert isinstance(affinity, PrefixAffinityRouter)
    knobs = affinity.settings
    assert (knobs.load_epsilon, knobs.min_match_ratio, knobs.load_slack_tokens) == (0.5, 0.3, 7)
    aware = make_router(RouterSettings(policy=RoutingPolicy.PROGRAM_AWARE, overlap_weight=9.0))
    assert isinstance(aware, ProgramAwareRouter)
    assert aware.settings.overlap_weight == 9.0


# ---- no usable replica -----------------------------------------------------------------


@pytest.mark.parametrize("policy", ALL)
@pytest.mark.parametrize(
    ("replicas", "exclude"),
    [
        ([], NONE),
        (cluster(3, down=("r0", "r1", "r2")), NONE),
        (cluster(2), frozenset({"r0", "r1"})),
        (cluster(3, down=("r0",)), frozenset({"r1", "r2"})),
    ],
    ids=["empty", "all-unhealthy", "all-excluded", "unhealthy-or-excluded"],
)
def test_no_usable_replica_raises_naming_the_count(
    policy: RoutingPolicy, replicas: list[ReplicaView], exclude: frozenset[str]
) -> None:
    router = router_for(policy)
    with pytest.raises(NoReplicaAvailable, match=f"no healthy replica among {len(replicas)} "):
        router.choose(call("c", tokens(1, 4)), replicas, exclude)
    # Nothing was routed: no replica carries the refused call.
    assert loads(router) == {}


# ---- ties and determinism --------------------------------------------------------------


@pytest.mark.parametrize("policy", ALL)
@pytest.mark.parametrize("finish_each", [True, False], ids=["idle", "concurrent"])
def test_distinct_tasks_spread_over_an_idle_cluster(
    policy: RoutingPolicy, finish_each: bool
) -> None:
    router = router_for(policy)
    views = cluster(4)
    placed = []
    for i in range(8):
        c = call(f"t{i}/0", tokens(i, 4), task_id=f"t{i}")
        placed.append(router.choose(c, views))
        if finish_each:
            router.finished(c.call_id, tokens(100 + i, 2))
    # Not all on "r0": an even spread, two first calls per replica.
    assert Counter(placed) == dict.fromkeys(names(4), 2)


def _mixed_sequence(router: Router) -> list[str]:
    """A task mix with shared prefixes, fan-outs, finishes and a replica outage."""
    views = cluster(3)
    system = tokens(7, 3)
    out: list[str] = []
    for i in range(12):
        task = f"t{i % 4}"
        prompt = system + tokens(i % 4, 2 + i // 4)
        c = call(f"{task}/{i}", prompt, max_tokens=8 * (1 + i % 3), task_id=task)
        current = cluster(3, down=("r1",)) if 5 <= i < 8 else views
        out.append(router.choose(c, current))
        if i % 3:
            router.finished(c.call_id, tokens(200 + i, 1, 5))
    return out


@pytest.mark.parametrize("policy", ALL)
def test_same_sequence_gets_the_same_choices(policy: RoutingPolicy) -> None:
    first = _mixed_sequence(router_for(policy))
    assert first == _mixed_sequence(router_for(policy))
    assert "r1" not in first[5:8]


# ---- least load ------------------------------------------------------------------------


def test_least_load_counts_outstanding_tokens_not_requests() -> None:
    router = make_router(RouterSettings(policy=RoutingPolicy.LEAST_LOAD))
    views = cluster(2)
    huge = call("huge", tokens(1, 200), max_tokens=512)
    assert router.choose(huge, views, frozenset({"r1"})) == "r0"
    for i in range(2):
        tiny = call(f"tiny{i}", tokens(10 + i, 1), max_tokens=4)
        assert router.choose(tiny, views, frozenset({"r0"})) == "r1"
    assert loads(router) == {"r0": 200 * BLOCK + 512, "r1": 2 * (BLOCK + 4)}
    # r0 holds fewer calls (1 against 2) but far more tokens.
    counted = [replica("r0", in_flight=1), replica("r1", in_flight=2)]
    assert router.choose(call("next", tokens(20, 4)), counted) == "r1"


@pytest.mark.parametrize("policy", ALL)
def test_finished_releases_the_load(policy: RoutingPolicy) -> None:
    router = router_for(policy)
    views = cluster(3)
    calls = [call(f"c{i}", tokens(i, 3 + i), max_tokens=10 * (i + 1)) for i in range(6)]
    for c in calls:
        router.choose(c, views)
    assert sum(loads(router).values()) > 0
    before = sum(loads(router).values())
    router.finished("c5")
    assert sum(loads(router).values()) < before
    for c in calls[:5]:
        router.finished(c.call_id, tokens(50, 1))
    assert loads(router) == {}


def test_least_load_sends_the_next_call_where_load_was_released() -> None:
    router = LeastLoadRouter()
    views = cluster(2)
    assert router.choose(call("a", tokens(1, 10)), views, frozenset({"r1"})) == "r0"
    assert router.choose(call("b", tokens(2, 4)), views, frozenset({"r0"})) == "r1"
    router.finished("a")
    assert loads(router) == {"r1": 4 * BLOCK + 16}
    assert router.choose(call("c", tokens(3, 4)), views) == "r0"


@pytest.mark.parametrize("policy", ALL)
def test_finishing_an_unknown_or_finished_call_changes_nothing(policy: RoutingPolicy) -> None:
    router = router_for(policy)
    c = call("c", tokens(1, 4))
    name = router.choose(c, cluster(2))
    router.finished("never-routed")
    assert loads(router) == {name: call_tokens(c)}
    router.finished("c")
    router.finished("c", tokens(2, 1))
    assert loads(router) == {}


# ---- a task's steps follow its context -------------------------------------------------


@pytest.mark.parametrize("policy", PREFIX_AWARE)
def test_a_tasks_next_step_goes_to_the_replica_holding_its_context(
    policy: RoutingPolicy,
) -> None:
    router = router_for(policy)
    views = cluster(4)
    tasks = [f"t{i}" for i in range(4)]
    context = {t: tokens(i, 6) for i, t in enumerate(tasks)}
    home = {}
    for t in tasks:  # first calls, concurrently: one per replica
        home[t] = router.choose(call(f"{t}/0", context[t], 32, t), views)
    assert sorted(home.values()) == names(4)
    for step in (1, 2):
        for i, t in enumerate(tasks):
            output = tokens(1000 * step + i, 2, 5)
            router.finished(f"{t}/{step - 1}", output)
            context[t] += output
        # The next steps, in another order and all in flight at once, each extend
        # the previous prompt + output.
        for i, t in reversed(list(enumerate(tasks))):
            context[t] += tokens(2000 * step + i, 1, 3)
            assert router.choose(call(f"{t}/{step}", context[t], 32, t), views) == home[t]


@pytest.mark.parametrize("report_output", [True, False])
def test_prefix_affinity_counts_the_reported_output_as_cached(report_output: bool) -> None:
    router = PrefixAffinityRouter(min_match_ratio=0.5)
    views = cluster(2)
    prompt, output = tokens(1, 2), tokens(2, 6)
    home = router.choose(call("t/0", prompt, task_id="t"), views)
    other = "r1" if home == "r0" else "r0"
    # Another call keeps the home replica the busier one.
    router.choose(call("busy", tokens(3, 4), 64), views, frozenset({other}))
    router.finished("t/0", output if report_output else None)
    # 8 of the next prompt's 9 blocks are prompt + output, 2 are the prompt alone:
    # only the first clears min_match_ratio (5 blocks); the second goes by load.
    step = call("t/1", prompt + output + tokens(4, 1), task_id="t")
    assert router.choose(step, views) == (home if report_output else other)


def test_prefix_affinity_weak_match_goes_to_least_load() -> None:
    router = make_router(RouterSettings(policy=RoutingPolicy.PREFIX_AFFINITY))
    views = cluster(2)
    held = tokens(1, 10)
    assert router.choose(call("held", held, 64), views, frozenset({"r1"})) == "r0"
    # A 20-block prompt needs 2 matching blocks (min_match_ratio 0.1).
    for shared, expected in [(0, "r1"), (1, "r1"), (2, "r0"), (5, "r0")]:
        prompt = held[: shared * BLOCK] + tokens(100 + shared, 20 - shared)
        c = call(f"probe{shared}", prompt)
        assert router.choose(c, views) == expected, shared
        router.finished(c.call_id)


# ---- hot prefix under the bounded load -------------------------------------------------


def _hot_calls(n: int) -> list[CallRequest]:
    prefix = tokens(1, 64)
    return [call(f"hot{i}", prefix + tokens(1000 + i, 1), 16, f"t{i}") for i in range(n)]


def test_hot_prefix_spills_over_once_the_load_bound_is_exceeded() -> None:
    router = PrefixAffinityRouter(epsilon=0.25, slack_tokens=0)
    views = cluster(4)
    calls = _hot_calls(24)
    full, cached = call_tokens(calls[0]), BLOCK + 16  # work without / with the prefix
    placed = []
    for c in calls:
        placed.append(router.choose(c, views))
        now = loads(router)
        bound = 1.25 * sum(now.values()) / 4 + router.settings.load_slack_tokens
        assert max(now.values()) <= bound + full, (len(placed), now)
    assert set(placed) == set(names(4))
    # Each replica prefilled the prefix once; every other call found it cached.
    assert sum(loads(router).values()) == 4 * full + 20 * cached


def test_hot_prefix_stays_on_one_replica_within_the_slack() -> None:
    router = make_router(RouterSettings(policy=RoutingPolicy.PREFIX_AFFINITY))
    views = cluster(4)
    placed = [router.choose(c, views) for c in _hot_calls(24)]
    assert len(set(placed)) == 1


# ---- program-aware ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_tokens", "overlap_weight", "spreads"),
    [(16, 4.0, False), (1024, 4.0, True), (1024, 64.0, False)],
    ids=["cheap", "expensive", "expensive-heavy-overlap-weight"],
)
def test_fan_out_siblings_share_the_parent_context_while_it_pays(
    max_tokens: int, overlap_weight: float, spreads: bool
) -> None:
    router = make_router(
        RouterSettings(policy=RoutingPolicy.PROGRAM_AWARE, overlap_weight=overlap_weight)
    )
    views = cluster(4)
    parent_prompt, parent_output = tokens(1, 24), tokens(2, 8)
    parent_blocks = 32
    holder = router.choose(call("t/parent", parent_prompt, 64, "t"), views)
    router.finished("t/parent", parent_output)
    context = parent_prompt + parent_output
    threshold = overlap_weight * parent_blocks * BLOCK  # tokens
    placed = []
    for b in range(8):
        before = router.load(holder)
        sibling = call(f"t/sib{b}", context + tokens(100 + b, 1), max_tokens, "t")
        placed.append(router.choose(sibling, views))
        if placed[-1] != holder and placed.count(holder) == b:  # the first to leave
            assert before > threshold
        elif placed[-1] == holder:
            assert before <= threshold
    assert placed[0] == holder
    if spreads:
        assert placed[1] == holder  # the prefill saved still outweighs one sibling's load
        assert len(set(placed)) == 4
    else:
        assert placed == [holder] * 8


def test_program_aware_ties_go_to_the_tasks_previous_replica() -> None:
    router = make_router(RouterSettings(policy=RoutingPolicy.PROGRAM_AWARE))
    views = cluster(2)
    shared = tokens(1, 6)
    assert router.choose(call("a/0", shared, task_id="a"), views, frozenset({"r1"})) == "r0"
    assert router.choose(call("b/0", shared, task_id="b"), views, frozenset({"r0"})) == "r1"
    router.finished("a/0")
    router.finished("b/0")
    # Both replicas hold `shared` and are idle: every cost ties, in either order.
    home = {"a": "r0", "b": "r1"}
    for step in range(1, 6):
        order = ["a", "b"] if step % 2 else ["b", "a"]
        for t in order:
            c = call(f"{t}/{step}", shared + tokens(10 * step + ord(t), 2), task_id=t)
            assert router.choose(c, views) == home[t], (step, t)
            router.finished(c.call_id)


# ---- saturation, deaths, exclusion -----------------------------------------------------


@pytest.mark.parametrize("policy", ALL)
def test_a_saturated_cluster_still_gets_a_healthy_replica(policy: RoutingPolicy) -> None:
    router = router_for(policy)
    swamped = [
        replica(f"r{i}", in_flight=500, waiting=1000, running=256, kv_usage=1.0) for i in range(3)
    ]
    views = [*swamped, replica("r3", healthy=False)]
    for i in range(60):
        c = call(f"c{i}", tokens(i % 5, 40), max_tokens=2048, task_id=f"t{i % 7}")
        assert router.choose(c, views) in {"r0", "r1", "r2"}
    assert set(loads(router)) == {"r0", "r1", "r2"}


@pytest.mark.parametrize("policy", ALL)
def test_a_replica_that_died_gets_no_more_calls(policy: RoutingPolicy) -> None:
    router = router_for(policy)
    context = tokens(1, 8)
    first = router.choose(call("t/0", context, 32, "t"), cluster(3))
    output = tokens(2, 3)
    router.finished("t/0", output)
    context += output
    for step in range(1, 6):
        context += tokens(10 + step, 1)
        c = call(f"t/{step}", context, 32, "t")
        assert router.choose(c, cluster(3, down=(first,))) != first
        router.finished(c.call_id, tokens(20 + step, 1))


@pytest.mark.parametrize("policy", PREFIX_AWARE)
def test_a_dead_replicas_prefix_index_is_forgotten(policy: RoutingPolicy) -> None:
    router = prefix_router(policy)
    context = tokens(1, 8)
    first = router.choose(call("t/0", context, 32, "t"), cluster(3))
    context += tokens(2, 3)
    router.finished("t/0", context[-3 * BLOCK :])
    assert len(router.index(first)) == 11
    context += tokens(3, 1)
    second = router.choose(call("t/1", context, 32, "t"), cluster(3, down=(first,)))
    assert second != first
    assert len(router.index(first)) == 0
    router.finished("t/1", tokens(4, 1))
    # Back up: the task follows the replica that took it over, not its old one.
    context += tokens(4, 1) + tokens(5, 1)
    assert router.choose(call("t/2", context, 32, "t"), cluster(3)) == second
    assert len(router.index(first)) == 0
    # New calls landing there rebuild its index.
    others = frozenset(set(names(3)) - {first})
    assert router.choose(call("u/0", tokens(6, 5)), cluster(3), others) == first
    assert len(router.index(first)) == 5


@pytest.mark.parametrize("policy", PREFIX_AWARE)
def test_a_whole_cluster_outage_forgets_every_prefix_index(policy: RoutingPolicy) -> None:
    router = prefix_router(policy)
    name = router.choose(call("t/0", tokens(1, 8), task_id="t"), cluster(2))
    router.finished("t/0", tokens(2, 2))
    with pytest.raises(NoReplicaAvailable):
        router.choose(call("t/1", tokens(3, 1), task_id="t"), cluster(2, down=("r0", "r1")))
    assert len(router.index(name)) == 0


@pytest.mark.parametrize("policy", ALL)
def test_exclude_overrides_affinity_and_load(policy: RoutingPolicy) -> None:
    router = router_for(policy)
    views = cluster(3)
    context = tokens(1, 10)
    home = router.choose(call("t/0", context, task_id="t"), views)
    router.finished("t/0", tokens(2, 2))
    context += tokens(2, 2) + tokens(3, 1)
    for i in range(6):
        c = call(f"t/{i + 1}", context, task_id="t")
        assert router.choose(c, views, frozenset({home})) != home
        router.finished(c.call_id)
    keep = "r2" if home != "r2" else "r1"
    others = frozenset(names(3)) - {keep}
    assert router.choose(call("t/x", context, task_id="t"), views, others) == keep


# ---- engine-reported evictions and capacity --------------------------------------------


@pytest.mark.parametrize("policy", PREFIX_AWARE)
@pytest.mark.parametrize(
    ("kv_block_tokens", "evicted", "left"),
    [(16, 0, 10), (16, 5, 5), (16, 3, 7), (128, 1, 2), (32, 2, 6), (16, 50, 0)],
)
def test_reported_evictions_shrink_the_index_oldest_first(
    policy: RoutingPolicy, kv_block_tokens: int, evicted: int, left: int
) -> None:
    router = prefix_router(policy)
    views = cluster(2)
    old, new = tokens(1, 5), tokens(2, 5)
    for c in (call("old", old), call("new", new)):
        assert router.choose(c, views, frozenset({"r1"})) == "r0"
        router.finished(c.call_id)
    assert len(router.index("r0")) == 10
    reported = [
        replica("r0", kv_block_tokens=kv_block_tokens, evicted_blocks=evicted),
        replica("r1"),
    ]
    # r0 is not chosen (excluded), yet its report is taken in.
    for i in range(3):  # the same cumulative count, reported again, evicts nothing more
        router.choose(call(f"elsewhere{i}", tokens(3 + i, 2)), reported, frozenset({"r0"}))
        assert len(router.index("r0")) == left
    # Least recently used first: the old prompt's blocks go before the new one's.
    index = router.index("r0")
    assert (index.match(block_hashes(old)) == 5) == (left == 10)
    if left >= 5:
        assert index.match(block_hashes(new)) == 5


@pytest.mark.parametrize("policy", PREFIX_AWARE)
def test_a_partial_eviction_leaves_the_index_agreeing_with_the_engine(
    policy: RoutingPolicy,
) -> None:
    context = tokens(1, 10)
    hashes = block_hashes(context)
    engine = KvCache(12)  # the simulated engine's cache, for reference
    blocks = engine.allocate(10)
    assert blocks is not None
    for block, block_hash in zip(blocks, hashes, strict=True):
        engine.commit(block, block_hash)
    engine.free(blocks)
    assert engine.allocate(5) is not None  # 2 free blocks and 3 evicted ones
    assert (engine.evictions, engine.cached_prefix(hashes)) == (3, 7)

    router = prefix_router(policy)
    assert router.choose(call("t/0", context), cluster(2), frozenset({"r1"})) == "r0"
    router.finished("t/0")
    reported = [replica("r0", evicted_blocks=engine.evictions), replica("r1")]
    router.choose(call("other", tokens(2, 2)), reported, frozenset({"r0"}))
    assert len(router.index("r0")) == 7
    assert router.index("r0").match(hashes) == engine.cached_prefix(hashes)


@pytest.mark.parametrize("policy", PREFIX_AWARE)
def test_an_evicted_context_no_longer_attracts_its_task(policy: RoutingPolicy) -> None:
    router = prefix_router(policy)
    context = tokens(1, 12)
    assert router.choose(call("t/0", context, task_id="t"), cluster(2), frozenset({"r1"})) == "r0"
    router.finished("t/0")
    # A busy replica holding the context still gets the task's next step ...
    router.choose(call("busy", tokens(2, 2), 200), cluster(2), frozenset({"r1"}))
    step = call("t/1", context + tokens(3, 1), task_id="t")
    assert router.choose(step, cluster(2)) == "r0"
    router.finished("t/1")
    # ... until the engine reports every block it held evicted.
    evicted = [replica("r0", evicted_blocks=16), replica("r1")]
    assert router.choose(call("t/2", context + tokens(4, 1), task_id="t"), evicted) == "r1"


@pytest.mark.parametrize("policy", PREFIX_AWARE)
@pytest.mark.parametrize(
    ("kv_block_tokens", "capacity", "bound"), [(16, 4, 4), (32, 3, 6), (128, 1, 8)]
)
def test_reported_kv_capacity_bounds_the_index(
    policy: RoutingPolicy, kv_block_tokens: int, capacity: int, bound: int
) -> None:
    router = prefix_router(policy)
    views = [
        replica("r0", kv_block_tokens=kv_block_tokens, kv_capacity_blocks=capacity),
        replica("r1"),
    ]
    for i in range(4):
        c = call(f"c{i}", tokens(i, 10))
        assert router.choose(c, views, frozenset({"r1"})) == "r0"
        router.finished(c.call_id, tokens(100 + i, 3))
        assert len(router.index("r0")) == bound
    # An unreported capacity leaves room for all of them.
    assert len(router.index("r1")) == 0
    for i in range(4):
        router.choose(call(f"d{i}", tokens(i, 10)), views, frozenset({"r0"}))
    assert len(router.index("r1")) == 40


@pytest.mark.parametrize("policy", PREFIX_AWARE)
def test_a_capacity_reported_late_trims_the_index_at_once(policy: RoutingPolicy) -> None:
    router = prefix_router(policy)
    router.choose(call("c", tokens(1, 10)), cluster(2), frozenset({"r1"}))
    assert len(router.index("r0")) == 10
    reported = [replica("r0", kv_capacity_blocks=4), replica("r1")]
    router.choose(call("d", tokens(2, 2)), reported, frozenset({"r0"}))
    assert len(router.index("r0")) <= 4


# ---- retries ---------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ALL)
def test_a_retried_call_moves_its_load_instead_of_adding_it(policy: RoutingPolicy) -> None:
    router = router_for(policy)
    views = cluster(3)
    c = call("c", tokens(1, 4), 32, "t")
    failed: set[str] = set()
    for _ in range(3):
        name = router.choose(c, views, frozenset(failed))
        assert name not in failed
        assert loads(router) == {name: call_tokens(c)}
        failed.add(name)
    router.finished("c")
    assert loads(router) == {}


@pytest.mark.parametrize("policy", ALL)
def test_a_call_retried_anywhere_counts_once(policy: RoutingPolicy) -> None:
    router = router_for(policy)
    views = cluster(3)
    c = call("c", tokens(1, 4, 7), 32)
    for _ in range(5):
        router.choose(c, views)
        assert len(loads(router)) == 1
        assert 0 < sum(loads(router).values()) <= call_tokens(c)
    router.finished("c")
    assert loads(router) == {}


# ---- property: always a usable replica, books balance ----------------------------------


@st.composite
def _views(draw: st.DrawFn, evicted: dict[str, int]) -> list[ReplicaView]:
    out = []
    for name in names(4):
        evicted[name] += draw(st.integers(0, 4))
        out.append(
            replica(
                name,
                healthy=draw(st.booleans()),
                in_flight=draw(st.integers(0, 5)),
                kv_block_tokens=draw(st.sampled_from([16, 128])),
                kv_capacity_blocks=draw(st.sampled_from([0, 6, 1000])),
                evicted_blocks=evicted[name],
            )
        )
    return out


@pytest.mark.parametrize("policy", ALL)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_every_choice_is_healthy_and_not_excluded(
    policy: RoutingPolicy, data: st.DataObject
) -> None:
    router = router_for(policy)
    evicted = dict.fromkeys(names(4), 0)
    open_calls: dict[str, CallRequest] = {}
    for step in range(data.draw(st.integers(1, 40), label="steps")):
        kind = data.draw(st.sampled_from(["new", "retry", "finish"]))
        if kind == "finish" and open_calls:
            call_id = data.draw(st.sampled_from(sorted(open_calls)))
            del open_calls[call_id]
            output = data.draw(st.sampled_from([None, tokens(step, 1, 3), ()]))
            router.finished(call_id, output)
        else:
            if kind == "retry" and open_calls:
                c = open_calls[data.draw(st.sampled_from(sorted(open_calls)))]
            else:
                prompt = tokens(data.draw(st.integers(0, 3)), data.draw(st.integers(0, 6)))
                prompt += tokens(1000 + step, data.draw(st.integers(0, 3)), 1)
                task = data.draw(st.sampled_from(["", "t0", "t1", "t2"]))
                c = call(f"c{step}", prompt, data.draw(st.integers(1, 64)), task)
            views = data.draw(_views(evicted))
            exclude = data.draw(st.frozensets(st.sampled_from(names(4))))
            usable = {v.name for v in views if v.healthy} - exclude
            if usable:
                assert router.choose(c, views, exclude) in usable
                open_calls[c.call_id] = c
            else:
                with pytest.raises(NoReplicaAvailable):
                    router.choose(c, views, exclude)
                open_calls.pop(c.call_id, None)  # a retry that found no replica
        books = loads(router)
        assert all(tokens_ > 0 for tokens_ in books.values())
        assert sum(books.values()) <= sum(call_tokens(c) for c in open_calls.values())
        assert bool(books) == bool(open_calls)
    for call_id in sorted(open_calls):
        router.finished(call_id)
    assert loads(router) == {}
