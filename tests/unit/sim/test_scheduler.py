"""The continuous-batching scheduler: per-step limits hold, long prompts are chunked,
agent contexts hit the prefix cache block by block, overload preempts without losing
output, priorities and aborts are honoured, and the same inputs give the same timeline."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.sim.catalog import load_catalog
from orchestrator.sim.kv import block_hashes
from orchestrator.sim.perf import Hardware, PerfModel, SpecDecode
from orchestrator.sim.scheduler import (
    RequestState,
    Scheduler,
    SchedulerConfig,
    SimRequest,
    StepResult,
)

CATALOG = load_catalog()
B = 16


def perf(spec: SpecDecode | None = None) -> PerfModel:
    return PerfModel(
        Hardware(
            gpu=CATALOG.gpu("h100"),
            model=CATALOG.model("llama-3.1-8b"),
            family=CATALOG.family("vllm"),
            spec=spec,
        )
    )


def scheduler(
    num_blocks: int = 10_000, spec: SpecDecode | None = None, **config: object
) -> Scheduler:
    return Scheduler(perf(spec), SchedulerConfig(**config), num_blocks)  # type: ignore[arg-type]


_ids = random.Random(1234)


def fresh(n: int) -> tuple[int, ...]:
    """Tokens no other prompt in the test shares."""
    return tuple(_ids.randrange(1000, 100_000) for _ in range(n))


def request(
    prompt: int | tuple[int, ...],
    output: int = 4,
    *,
    arrival: float = 0.0,
    priority: int = 0,
    name: str | None = None,
) -> SimRequest:
    tokens = fresh(prompt) if isinstance(prompt, int) else prompt
    return SimRequest(
        request_id=name or f"r{_ids.randrange(10**9)}",
        prompt=tokens,
        output_ids=fresh(output),
        arrival=arrival,
        priority=priority,
    )


def run(sched: Scheduler, requests: Iterable[SimRequest], now: float = 0.0) -> list[StepResult]:
    """Add each request at its arrival time and step until the scheduler is idle."""
    pending = sorted(requests, key=lambda r: r.arrival)
    steps = []
    while pending or sched.has_work:
        while pending and pending[0].arrival <= now:
            sched.add(pending.pop(0))
        result = sched.step(now)
        if result is None:
            assert pending, "the scheduler has work it never schedules"
            now = pending[0].arrival
            continue
        steps.append(result)
        now = result.end
    return steps


def tokens_out(steps: list[StepResult], req: SimRequest) -> int:
    return sum(n for s in steps for r, n in s.produced if r is req)


# ---- limits per step ---------------------------------------------------------------------

workload = st.lists(
    st.tuples(st.integers(1, 300), st.integers(1, 40), st.floats(0.0, 0.2)),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(
    jobs=workload,
    budget=st.integers(B, 512),
    max_num_seqs=st.integers(1, 16),
    num_blocks=st.integers(22, 200),
    chunked=st.booleans(),
    caching=st.booleans(),
)
def test_each_step_respects_budget_and_sequence_limit_and_every_request_finishes(
    jobs: list[tuple[int, int, float]],
    budget: int,
    max_num_seqs: int,
    num_blocks: int,
    chunked: bool,
    caching: bool,
) -> None:
    # Every request fits the KV cache alone (as build_replica guarantees), and without
    # chunked prefill every prompt fits the budget (as vLLM requires).
    capacity = num_blocks * B
    max_len = min(capacity, 340)
    if not chunked:
        budget = max(budget, max_len)
    sched = scheduler(
        num_blocks,
        max_num_batched_tokens=budget,
        max_num_seqs=max_num_seqs,
        max_model_len=max_len,
        chunked_prefill=chunked,
        prefix_caching=caching,
    )
    shared = fresh(64)  # some prompts share a prefix
    requests = [
        request((shared + fresh(p))[:p] if i % 2 else p, out, arrival=t)
        for i, (p, out, t) in enumerate(jobs)
    ]
    steps = run(sched, requests)
    for step in steps:
        assert step.n_decode + step.prefill_tokens <= budget
        assert step.end > step.start
    assert all(r.state is RequestState.FINISHED for r in requests)
    for r in requests:
        assert r.num_output == r.target == tokens_out(steps, r)
        assert r.first_token is not None and r.first_token >= r.arrival
    assert sched.kv.used_blocks == 0


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 40), max_num_seqs=st.integers(1, 8))
def test_no_more_than_max_num_seqs_sequences_run_at_once(n: int, max_num_seqs: int) -> None:
    sched = scheduler(max_num_seqs=max_num_seqs)
    requests = [request(20, 10) for _ in range(n)]
    for r in requests:
        sched.add(r)
    while sched.has_work:
        result = sched.step(0.0)
        assert result is not None
        # Every sequence of the step is still running or has just finished.
        assert len(sched.running) + len(result.finished) <= max_num_seqs
    assert all(r.num_output == 10 for r in requests)


# ---- chunked prefill ---------------------------------------------------------------------


def test_a_long_prompt_is_prefilled_in_chunks_and_its_first_token_follows_the_last() -> None:
    sched = scheduler(max_num_batched_tokens=512)
    long = request(2000, 3, arrival=1.0)
    steps = run(sched, [long], now=1.0)
    assert [s.prefill_tokens for s in steps[:4]] == [512, 512, 512, 464]
    assert all(not s.produced for s in steps[:3])
    assert long.first_token == steps[3].end
    assert long.first_token - long.arrival == pytest.approx(sum(s.cost.total for s in steps[:4]))
    assert len(steps) == 6  # then two decode steps


def test_without_chunking_a_prompt_is_prefilled_in_one_step() -> None:
    sched = scheduler(max_num_batched_tokens=4096, chunked_prefill=False)
    long = request(2000, 2)
    steps = run(sched, [long])
    assert steps[0].prefill_tokens == 2000
    assert long.first_token == steps[0].end


def test_a_prompt_chunk_shares_its_step_with_running_decodes() -> None:
    sched = scheduler(max_num_batched_tokens=256)
    decoding = request(30, 20)
    run(sched, [])
    sched.add(decoding)
    sched.step(0.0)  # prefill
    sched.add(request(1000, 2))
    step = sched.step(1.0)
    assert step is not None
    assert step.n_decode == 1 and step.prefill_tokens == 255


# ---- prefix caching ----------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    first=st.integers(1, 200),
    turns=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 60)), min_size=1, max_size=8),
)
def test_an_agent_context_hits_the_cache_for_its_shared_whole_blocks(
    first: int, turns: list[tuple[int, int]]
) -> None:
    """Each call's prompt is the previous prompt, its output and a new instruction; the
    previous call's KV covers all of that but its last sampled token (never fed back), so
    the hit is the whole blocks of prompt + output - 1 tokens."""
    sched = scheduler()
    previous = request(first, turns[0][0])
    run(sched, [previous])
    assert previous.cached_tokens == 0
    for output, instruction in turns:
        prompt = previous.prompt + previous.output_ids + fresh(instruction)
        call = request(prompt, output)
        run(sched, [call])
        shared = len(previous.prompt) + len(previous.output_ids)
        assert call.cached_tokens == (shared - 1) // B * B
        previous = call


def test_siblings_hit_their_shared_parent_and_not_each_other() -> None:
    sched = scheduler()
    parent = fresh(100)
    siblings = [request(parent + fresh(50), 4) for _ in range(3)]
    run(sched, [siblings[0]])
    run(sched, siblings[1:])  # together: the second reuses what the first of them wrote
    assert siblings[0].cached_tokens == 0
    assert [s.cached_tokens for s in siblings[1:]] == [96, 96]


def test_a_repeated_prompt_recomputes_only_its_last_block() -> None:
    sched = scheduler()
    aligned, ragged = request(64, 4), request(70, 4)
    run(sched, [aligned, ragged])
    again = [request(aligned.prompt), request(ragged.prompt)]
    run(sched, again)
    assert [r.cached_tokens for r in again] == [48, 64]
    assert sched.cached_prompt_tokens == 48 + 64
    assert sched.prompt_tokens == 2 * (64 + 70)


def test_prefix_caching_off_never_hits() -> None:
    sched = scheduler(prefix_caching=False)
    first = request(100, 4)
    run(sched, [first])
    second = request(first.prompt + first.output_ids + fresh(10))
    run(sched, [second])
    assert second.cached_tokens == 0


def test_cached_blocks_are_evicted_least_recently_used_first() -> None:
    sched = scheduler(num_blocks=12, max_model_len=12 * B)
    old, recent, filler = request(64, 1), request(64, 1), request(64, 1)
    for r in (old, recent, filler):  # 4 full blocks each, all 12 cached once finished
        run(sched, [r])

    def cached(r: SimRequest) -> int:
        return sched.kv.cached_prefix(block_hashes(r.prompt)) * B

    assert [cached(r) for r in (old, recent, filler)] == [64, 64, 64]
    run(sched, [request(32, 1)])  # two blocks: the oldest request's last two go
    assert [cached(r) for r in (old, recent, filler)] == [32, 64, 64]


# ---- preemption ----------------------------------------------------------------------------


def test_overload_preempts_and_every_request_still_gets_its_whole_output() -> None:
    sched = scheduler(num_blocks=24, max_model_len=24 * B)
    requests = [request(40, 80) for _ in range(6)]  # 8 blocks each at the end, 48 in all
    steps = run(sched, requests)
    assert sched.preemptions > 0 and sum(s.preempted for s in steps) == sched.preemptions
    assert sum(r.preemptions for r in requests) == sched.preemptions
    for r in requests:
        assert r.state is RequestState.FINISHED
        assert r.num_output == 80 == tokens_out(steps, r)
    assert sched.kv.used_blocks == 0


def test_no_preemption_when_the_cache_holds_everything() -> None:
    sched = scheduler(num_blocks=48, max_model_len=48 * B)
    run(sched, [request(40, 80) for _ in range(6)])
    assert sched.preemptions == 0


# ---- priority, abort, determinism --------------------------------------------------------


def test_priority_policy_serves_lower_values_first() -> None:
    sched = scheduler(priority=True, max_num_seqs=1)
    requests = [request(30, 3, priority=p, name=f"p{p}") for p in (3, 1, 2, 0)]
    steps = run(sched, requests)
    finished = [r.request_id for s in steps for r in s.finished]
    assert finished == ["p0", "p1", "p2", "p3"]


def test_fcfs_policy_ignores_priority() -> None:
    sched = scheduler(max_num_seqs=1)
    requests = [request(30, 3, priority=p, name=f"p{p}") for p in (3, 1, 2, 0)]
    steps = run(sched, requests)
    assert [r.request_id for s in steps for r in s.finished] == ["p3", "p1", "p2", "p0"]


def test_priority_policy_preempts_the_least_important_request() -> None:
    sched = scheduler(num_blocks=10, max_model_len=10 * B, priority=True)
    important = request(40, 100, priority=0)
    background = request(40, 100, priority=5)
    run(sched, [important, background])
    assert important.preemptions == 0 and background.preemptions > 0
    assert important.num_output == background.num_output == 100
    assert important.last_token is not None and background.last_token is not None
    assert important.last_token < background.last_token


def test_aborting_a_running_request_frees_its_blocks() -> None:
    sched = scheduler()
    victim, other = request(100, 50), request(40, 50)
    sched.add(victim)
    sched.add(other)
    for _ in range(3):
        sched.step(0.0)
    used_by_other = len(other.blocks)
    sched.abort(victim)
    assert victim.state is RequestState.ABORTED
    assert sched.kv.used_blocks == used_by_other
    steps = run(sched, [])
    assert tokens_out(steps, victim) == 0
    assert other.num_output == 50 and sched.kv.used_blocks == 0


def test_an_aborted_waiting_request_is_never_scheduled() -> None:
    sched = scheduler(max_num_seqs=1)
    first, queued = request(30, 5), request(30, 5)
    sched.add(first)
    sched.add(queued)
    sched.step(0.0)
    sched.abort(queued)
    assert sched.num_waiting == 0
    steps = run(sched, [])
    assert queued.first_scheduled is None and tokens_out(steps, queued) == 0
    assert not sched.has_work


def timeline() -> list[tuple[str, tuple[float, ...], int | None, int]]:
    """A loaded run (chunked prefills, shared prefixes, preemptions) from fixed inputs."""
    ids = random.Random(7)
    shared = tuple(ids.randrange(1000, 2000) for _ in range(50))
    sched = scheduler(num_blocks=40, max_model_len=40 * B, max_num_batched_tokens=128)
    requests = [
        SimRequest(
            f"r{i}",
            shared + tuple(ids.randrange(1000, 2000) for _ in range(10 * i)),
            tuple(range(20 + i)),
            arrival=0.0,  # all at once: preemptions then follow from block counts alone
        )
        for i in range(10)
    ]
    run(sched, requests)
    assert sched.preemptions > 0
    return [(r.request_id, tuple(r.token_times), r.cached_tokens, r.preemptions) for r in requests]


def test_the_same_inputs_give_the_same_timeline() -> None:
    assert timeline() == timeline()


# ---- engine modes --------------------------------------------------------------------------


def test_v0_mode_runs_prefills_and_decodes_in_separate_steps() -> None:
    sched = scheduler(v0_prefill_first=True, chunked_prefill=False)
    early = request(30, 10)
    late = request(30, 10, arrival=0.02)
    steps = run(sched, [early, late])
    assert all(s.n_decode == 0 or s.prefill_tokens == 0 for s in steps)
    assert late.first_token is not None and early.last_token is not None
    assert late.first_token < early.last_token  # the late prefill cut in ahead of decodes


def test_speculative_decoding_yields_the_expected_tokens_per_step() -> None:
    spec = SpecDecode(k=3, alpha=0.7)
    sched = scheduler(spec=spec)
    long = request(20, 1001)
    steps = run(sched, [long])
    assert long.num_output == 1001
    decode_steps = len(steps) - 1
    assert decode_steps == pytest.approx(1000 / spec.tokens_per_step, abs=1)
