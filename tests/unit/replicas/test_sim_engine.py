"""`SimEngine`: what a caller of a simulated replica sees (deltas, results, usage and
cached tokens, timings that follow the performance model in scaled real time) and how
it refuses, aborts and prioritises calls. In-process: no Ray."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from orchestrator.config import SchedulingPolicy, SimEngineConfig
from orchestrator.domain import (
    CallDelta,
    CallRequest,
    CallResult,
    ErrorCode,
    FinishReason,
    Sampling,
)
from orchestrator.replicas.engine import EngineError
from orchestrator.replicas.sim_engine import SimEngine
from orchestrator.sim.catalog import CatalogError
from orchestrator.sim.tokens import EOS_ID
from tests.polling import async_wait_until

_ids = iter(range(10**9))


def call(
    prompt: int | tuple[int, ...] = 256,
    max_tokens: int = 16,
    *,
    ignore_eos: bool = True,
    seed: int | None = None,
    priority: int = 0,
    deadline_s: float | None = None,
    call_id: str | None = None,
) -> CallRequest:
    """A call; an int prompt is that many distinct tokens (a fresh prefix each time)."""
    if isinstance(prompt, int):
        start = 1000 + next(_ids) * 100_000 % 120_000
        prompt = tuple(range(start, start + prompt))
    return CallRequest(
        call_id=call_id or f"call-{next(_ids)}",
        prompt_token_ids=prompt,
        sampling=Sampling(max_tokens=max_tokens, ignore_eos=ignore_eos, seed=seed),
        priority=priority,
        deadline_s=deadline_s,
    )


@pytest.fixture
async def engine_factory() -> AsyncIterator[Any]:
    """Builds started engines (instant unless told otherwise); shuts them down after."""
    engines: list[SimEngine] = []

    async def make(**fields: Any) -> SimEngine:
        fields.setdefault("time_scale", 0.0)
        engine = SimEngine(SimEngineConfig(**fields))
        await engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.shutdown()


async def collect(
    items: AsyncIterator[CallDelta | CallResult],
) -> tuple[list[CallDelta], CallResult]:
    deltas: list[CallDelta] = []
    async for item in items:
        if isinstance(item, CallResult):
            return deltas, item
        deltas.append(item)
    raise AssertionError("no result")


async def run(engine: SimEngine, request: CallRequest, *, stream: bool = False) -> CallResult:
    _, result = await collect(engine.generate(request, stream=stream))
    return result


def idle(engine: SimEngine) -> bool:
    scheduler = engine.scheduler
    return not scheduler.has_work and scheduler.kv.used_blocks == 0


# ---- output -------------------------------------------------------------------------


async def test_streaming_gives_one_delta_per_step_then_one_result(engine_factory: Any) -> None:
    engine = await engine_factory()
    deltas, result = await collect(engine.generate(call(max_tokens=40)))
    assert len(deltas) == 40  # one token per decode step (no speculative decoding)
    assert tuple(t for d in deltas for t in d.token_ids) == result.token_ids
    assert "".join(d.text for d in deltas) == result.text
    assert result.finish_reason is FinishReason.LENGTH
    assert result.usage.output_tokens == 40


async def test_without_streaming_only_the_result_comes(engine_factory: Any) -> None:
    engine = await engine_factory()
    deltas, result = await collect(engine.generate(call(max_tokens=40), stream=False))
    assert deltas == []
    assert len(result.token_ids) == 40 and result.text


async def test_a_seeded_call_writes_the_same_output_on_any_engine(engine_factory: Any) -> None:
    a, b = await engine_factory(), await engine_factory()
    first = await run(a, call(max_tokens=50, seed=7))
    second = await run(b, call(max_tokens=50, seed=7))
    assert first.token_ids == second.token_ids and first.text == second.text
    assert (await run(a, call(max_tokens=50, seed=8))).token_ids != first.token_ids
    other = await run(await engine_factory(seed=1), call(max_tokens=50, seed=7))
    assert other.token_ids != first.token_ids  # the engine seed matters too


async def test_without_ignore_eos_the_model_stops_early_at_end_of_sequence(
    engine_factory: Any,
) -> None:
    engine = await engine_factory()
    results = [await run(engine, call(max_tokens=64, ignore_eos=False)) for _ in range(40)]
    for result in results:
        n = result.usage.output_tokens
        assert 32 <= n <= 64
        if n < 64:
            assert result.finish_reason is FinishReason.STOP
            assert result.token_ids[-1] == EOS_ID
        else:
            assert result.finish_reason is FinishReason.LENGTH
    assert any(r.finish_reason is FinishReason.STOP for r in results)


# ---- usage and the prefix cache ------------------------------------------------------------


async def test_usage_reports_cached_tokens_of_a_shared_prefix(engine_factory: Any) -> None:
    engine = await engine_factory()
    shared = call(prompt=4010).prompt_token_ids  # 250 whole blocks of 16, and 10 tokens
    first = await run(engine, call(prompt=(*shared, 1, 2, 3), max_tokens=8))
    second = await run(engine, call(prompt=(*shared, 9, 9, 9, 9), max_tokens=8))
    assert first.usage.prompt_tokens == 4013
    assert first.usage.cached_prompt_tokens == 0
    assert second.usage.prompt_tokens == 4014
    assert second.usage.cached_prompt_tokens == 4000
    assert second.usage.output_tokens == 8
    # Cached tokens are not computed again: the second prefill is far shorter.
    assert second.timings.ttft < first.timings.ttft / 5


async def test_prefix_caching_off_reports_no_cached_tokens(engine_factory: Any) -> None:
    engine = await engine_factory(enable_prefix_caching=False)
    prompt = call(prompt=200).prompt_token_ids
    await run(engine, call(prompt=prompt))
    assert (await run(engine, call(prompt=prompt))).usage.cached_prompt_tokens == 0


# ---- timings ----------------------------------------------------------------------


async def test_timings_follow_the_performance_model(engine_factory: Any) -> None:
    engine = await engine_factory()
    perf = engine.scheduler.perf
    result = await run(engine, call(prompt=1000, max_tokens=20))
    t = result.timings
    # An idle engine schedules the call at once: one prefill step, then a decode step
    # per token, each over the context so far.
    assert t.queue_time == 0.0
    assert t.ttft == pytest.approx(perf.step_time(0, 0, [(1000, 0)]))
    decode = [perf.step_time(1, 1000 + i) for i in range(1, 20)]
    assert t.itl == pytest.approx(decode)
    assert t.e2e == pytest.approx(t.ttft + sum(decode))
    assert t.tpot == pytest.approx((t.e2e - t.ttft) / 19)
    # An 8B model on an H100: a few ms per token (docs/simulation.md calibration targets).
    assert 0.004 < t.tpot < 0.015


async def test_in_real_time_a_call_takes_its_simulated_time(engine_factory: Any) -> None:
    engine = await engine_factory(time_scale=1.0)
    started = time.monotonic()
    result = await run(engine, call(prompt=2000, max_tokens=60), stream=True)
    wall = time.monotonic() - started
    assert result.timings.e2e > 0.3
    assert wall == pytest.approx(result.timings.e2e, rel=0.15, abs=0.03)


async def test_time_scale_stretches_wall_time(engine_factory: Any) -> None:
    engine = await engine_factory(time_scale=2.0)
    started = time.monotonic()
    result = await run(engine, call(prompt=500, max_tokens=30))
    wall = time.monotonic() - started
    assert wall == pytest.approx(2 * result.timings.e2e, rel=0.15, abs=0.03)


async def test_time_scale_zero_runs_instantly(engine_factory: Any) -> None:
    engine = await engine_factory(time_scale=0.0)
    started = time.monotonic()
    results = await asyncio.gather(*(run(engine, call(max_tokens=1000)) for _ in range(8)))
    assert time.monotonic() - started < 5.0
    # ...while the simulated GPU still took its time.
    assert all(r.timings.e2e > 5.0 for r in results)


async def test_calls_that_wait_report_their_queue_time(engine_factory: Any) -> None:
    engine = await engine_factory(max_num_seqs=1)
    first, second = await asyncio.gather(
        run(engine, call(max_tokens=30)), run(engine, call(max_tokens=30))
    )
    assert first.timings.queue_time == 0.0
    # The second waits for the only sequence slot: until the first has finished.
    assert second.timings.queue_time == pytest.approx(first.timings.e2e, rel=0.01)
    assert second.timings.ttft > second.timings.queue_time


async def test_an_arrival_while_idle_is_stamped_with_wall_time(engine_factory: Any) -> None:
    engine = await engine_factory(time_scale=1.0)
    await run(engine, call(max_tokens=4))
    await asyncio.sleep(0.2)
    result = await run(engine, call(max_tokens=4))
    # Idle time is not queue time.
    assert result.timings.queue_time == 0.0


# ---- refusals, aborts, deadlines ----------------------------------------------------


async def test_a_prompt_longer_than_the_context_is_refused(engine_factory: Any) -> None:
    engine = await engine_factory(max_model_len=1024)
    with pytest.raises(EngineError) as refused:
        await run(engine, call(prompt=1000, max_tokens=100))
    assert refused.value.code is ErrorCode.INVALID_ARGUMENT
    assert "1024" in refused.value.message
    assert idle(engine)


@pytest.mark.parametrize("prompt", [(), (5, 200_000), (-1,)])
async def test_an_empty_or_out_of_vocabulary_prompt_is_refused(
    engine_factory: Any, prompt: tuple[int, ...]
) -> None:
    engine = await engine_factory()
    with pytest.raises(EngineError) as refused:
        await run(engine, call(prompt=prompt))
    assert refused.value.code is ErrorCode.INVALID_ARGUMENT


async def test_cancelling_the_caller_aborts_the_request(engine_factory: Any) -> None:
    engine = await engine_factory(time_scale=1.0)
    first_delta = asyncio.Event()

    async def consume() -> None:
        async for _ in engine.generate(call(prompt=500, max_tokens=10_000)):
            first_delta.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_delta.wait(), 5)
    assert engine.stats().unfinished_requests == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert idle(engine)
    assert engine.stats().unfinished_requests == 0
    # The replica keeps serving.
    assert (await run(engine, call(max_tokens=4))).usage.output_tokens == 4


async def test_abort_ends_the_call_with_what_it_has_so_far(engine_factory: Any) -> None:
    engine = await engine_factory(time_scale=1.0)
    request = call(max_tokens=10_000)
    items = engine.generate(request)
    first = await anext(items)
    assert isinstance(first, CallDelta)
    await engine.abort(request.call_id)
    deltas, result = await collect(items)
    assert result.finish_reason is FinishReason.ABORT
    assert 1 <= result.usage.output_tokens < 10_000
    assert result.token_ids == first.token_ids + tuple(t for d in deltas for t in d.token_ids)
    assert idle(engine)
    # An aborted call is not "served".
    assert engine.stats().calls_served == 0
    await engine.abort("no-such-call")  # harmless


async def test_a_call_out_of_deadline_fails_and_frees_the_replica(engine_factory: Any) -> None:
    engine = await engine_factory(time_scale=1.0)
    started = time.monotonic()
    with pytest.raises(EngineError) as late:
        await run(engine, call(max_tokens=10_000, deadline_s=0.2))
    assert late.value.code is ErrorCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.0
    assert idle(engine)


async def test_shutdown_aborts_calls_in_flight(engine_factory: Any) -> None:
    engine = await engine_factory(time_scale=1.0)
    task = asyncio.create_task(run(engine, call(max_tokens=10_000)))
    await async_wait_until(lambda: engine.stats().running_requests == 1, timeout=5.0)
    await engine.shutdown()
    assert (await task).finish_reason is FinishReason.ABORT


# ---- scheduling ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [(SchedulingPolicy.PRIORITY, ["p1", "p2", "p3"]), (SchedulingPolicy.FCFS, ["p3", "p1", "p2"])],
)
async def test_priority_policy_serves_lower_priority_values_first(
    engine_factory: Any, policy: SchedulingPolicy, expected: list[str]
) -> None:
    engine = await engine_factory(max_num_seqs=1, scheduling_policy=policy)
    finished: list[str] = []

    async def one(request: CallRequest) -> None:
        await run(engine, request)
        finished.append(request.call_id)

    # The one sequence slot is busy while the others arrive, in this order.
    blocker = asyncio.create_task(one(call(max_tokens=50, call_id="blocker")))
    await asyncio.sleep(0)
    order = [("p3", 3), ("p1", 1), ("p2", 2)]
    await asyncio.gather(
        blocker, *(one(call(call_id=name, priority=priority)) for name, priority in order)
    )
    assert finished == ["blocker", *expected]


async def test_stats_report_load_and_served_work(engine_factory: Any) -> None:
    engine = await engine_factory()
    await asyncio.gather(*(run(engine, call(max_tokens=12)) for _ in range(3)))
    stats = engine.stats()
    assert stats.unfinished_requests == 0
    assert stats.calls_served == 3
    assert stats.output_tokens_served == 36
    assert engine.name == "sim" and engine.max_model_len == 16384


async def test_stats_report_the_prefix_cache_and_the_kv_cache(engine_factory: Any) -> None:
    engine = await engine_factory()
    shared = call(prompt=4010).prompt_token_ids  # 250 whole blocks of 16, and 10 tokens
    await run(engine, call(prompt=(*shared, 1, 2, 3), max_tokens=8))
    await run(engine, call(prompt=(*shared, 9, 9, 9, 9), max_tokens=8))
    stats = engine.stats()
    # Prompt tokens looked up at admission, and those served from the cache: the
    # second call hit the 250 shared blocks.
    assert stats.prefix_queries == 4013 + 4014
    assert stats.prefix_hits == 4000
    assert stats.prefix_hit_rate == pytest.approx(4000 / 8027)
    assert stats.kv_block_tokens == 16
    kv = engine.scheduler.kv
    assert stats.kv_capacity_blocks == kv.num_blocks > 0
    assert stats.evicted_blocks == kv.evictions == 0  # an H100 holds far more
    # Idle: nothing queued or running, no block referenced (cached ones are free).
    assert stats.waiting_requests == stats.running_requests == stats.unfinished_requests == 0
    assert stats.kv_usage == 0.0


async def test_stats_report_waiting_and_running_calls_in_flight(engine_factory: Any) -> None:
    engine = await engine_factory(max_num_seqs=1, time_scale=1.0)
    requests = [call(prompt=1000, max_tokens=500) for _ in range(3)]
    tasks = [asyncio.create_task(run(engine, r)) for r in requests]
    # The first call decodes (~5 ms a token); the others wait.
    await async_wait_until(
        lambda: engine.stats().running_requests == 1 and engine.stats().waiting_requests == 2,
        timeout=5.0,
    )
    stats = engine.stats()
    assert stats.running_requests == 1
    assert stats.waiting_requests == 2
    assert stats.unfinished_requests == 3
    # The running call holds its blocks: 1000 prompt tokens and some output, of 16.
    kv = engine.scheduler.kv
    assert stats.kv_usage == kv.usage > 0.0
    assert stats.kv_usage * stats.kv_capacity_blocks >= 1000 / 16
    assert stats.prefix_queries == 1000 and stats.prefix_hits == 0  # admitted: only one
    for request in requests:
        await engine.abort(request.call_id)
    await asyncio.gather(*tasks)
    stats = engine.stats()
    assert (stats.waiting_requests, stats.running_requests, stats.kv_usage) == (0, 0, 0.0)


async def test_a_failed_stepper_fails_its_calls_and_its_health_check(
    engine_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await engine_factory()

    def broken(now: float) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(engine.scheduler, "step", broken)
    with pytest.raises(EngineError) as failed:
        await run(engine, call())
    assert failed.value.code is ErrorCode.INTERNAL
    with pytest.raises(EngineError) as dead:
        engine.stats()
    assert dead.value.code is ErrorCode.UNAVAILABLE
    with pytest.raises(EngineError):
        await run(engine, call())


async def test_an_engine_must_be_started() -> None:
    engine = SimEngine(SimEngineConfig())
    with pytest.raises(EngineError) as refused:
        await run(engine, call())
    assert refused.value.code is ErrorCode.UNAVAILABLE
    stats = engine.stats()
    assert stats.unfinished_requests == 0
    assert (stats.prefix_queries, stats.kv_capacity_blocks, stats.kv_block_tokens) == (0, 0, 16)


async def test_an_unknown_gpu_fails_at_start_with_the_known_ones() -> None:
    with pytest.raises(CatalogError, match="h100"):
        await SimEngine(SimEngineConfig(gpu="h1000")).start()
