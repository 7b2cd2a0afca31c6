"""The executor's driver loop against an in-process fake replica pool."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TypeVar

import pytest

from agents import BUILTIN_PROGRAMS, Program, plan_execute
from orchestrator.domain import (
    AnswerDelta,
    CallRequest,
    ErrorCode,
    GenerateSpec,
    Mode,
    Sampling,
    StepFinished,
    StepStarted,
    TaskAccepted,
    TaskCompleted,
    TaskEvent,
    TaskSpec,
)
from orchestrator.executor.executor import Executor, TaskFailed
from orchestrator.replicas.engine import EngineError
from orchestrator.routing import RoundRobinRouter

from ..factories import FakeDispatcher, FakeTokenizer, engine_error, llm_step, program, step_of


def executor(
    dispatcher: FakeDispatcher,
    programs: Mapping[str, Program] = BUILTIN_PROGRAMS,
    max_running: int = 32,
) -> Executor:
    return Executor(
        dispatcher,
        RoundRobinRouter(),
        FakeTokenizer(),
        programs,
        max_concurrent_calls_per_task=max_running,
    )


def spec(**fields: object) -> TaskSpec:
    options: dict[str, object] = {"agent": "plan_execute", "input": "plan a trip"}
    options.update(fields)
    return TaskSpec(**options)  # type: ignore[arg-type]


T = TypeVar("T")


async def collect(items: AsyncIterator[T]) -> list[T]:
    return [item async for item in items]


async def run_task(ex: Executor, task: TaskSpec) -> list[TaskEvent]:
    return await collect(ex.run(ex.prepare(task)))


def completed(events: list[TaskEvent]) -> TaskCompleted:
    last = events[-1]
    assert isinstance(last, TaskCompleted)
    return last


def steps_of(ids: set[str]) -> set[str]:
    return {step_of(call_id)[0] for call_id in ids}


async def test_events_arrive_in_the_order_a_client_expects() -> None:
    fake = FakeDispatcher()
    events = await run_task(executor(fake), spec())
    assert isinstance(events[0], TaskAccepted)
    assert events[0].agent == "plan_execute"
    assert isinstance(events[-1], TaskCompleted)
    assert sum(isinstance(e, (TaskAccepted, TaskCompleted)) for e in events) == 2

    started = {e.call_id: i for i, e in enumerate(events) if isinstance(e, StepStarted)}
    finished = {e.call.call_id: i for i, e in enumerate(events) if isinstance(e, StepFinished)}
    assert started.keys() == finished.keys()
    assert len(started) == 5
    assert all(started[call_id] < finished[call_id] for call_id in started)

    by_id = {e.call_id: e for e in events if isinstance(e, StepStarted)}
    [answer_id] = [c for c, e in by_id.items() if e.step == "synthesizer"]
    deltas = [i for i, e in enumerate(events) if isinstance(e, AnswerDelta)]
    assert deltas
    assert all(started[answer_id] < i < finished[answer_id] for i in deltas)
    # Only the answer streams; the other steps are plain calls.
    assert fake.streamed == [answer_id]
    text = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    assert text == completed(events).result.answer
    assert text.startswith("[synthesizer0]")


async def test_planner_then_workers_then_synthesizer() -> None:
    fake = FakeDispatcher()
    events = await run_task(executor(fake), spec())
    order = [e.step for e in events if isinstance(e, StepStarted)]
    assert order == ["planner", "worker", "worker", "worker", "synthesizer"]
    finished_steps = [e.call.step for e in events if isinstance(e, StepFinished)]
    assert finished_steps[0] == "planner"
    assert finished_steps[-1] == "synthesizer"
    replicas = {e.replica for e in events if isinstance(e, StepStarted)}
    assert replicas == {"replica-0", "replica-1"}


async def test_task_usage_is_the_sum_over_its_calls() -> None:
    fake = FakeDispatcher()
    result = completed(await run_task(executor(fake), spec(input="four"))).result
    usage = result.usage
    assert usage.llm_calls == len(result.calls) == len(fake.requests) == 5
    assert usage.prompt_tokens_total == sum(len(r.prompt_token_ids) for r in fake.requests)
    assert usage.prompt_tokens_total == sum(c.usage.prompt_tokens for c in result.calls)
    assert usage.cached_tokens_total == sum(c.usage.cached_prompt_tokens for c in result.calls)
    assert usage.output_tokens_total == 64 + 3 * 48 + 64
    assert usage.user_input_tokens == 4
    assert usage.final_output_tokens == 64
    assert usage.critical_path_calls == 3
    assert usage.token_amplification == pytest.approx(
        (usage.prompt_tokens_total + usage.output_tokens_total) / (4 + 64)
    )
    assert 0.0 < usage.task_ttft <= usage.task_latency
    assert {c.step for c in result.calls} == {"planner", "worker", "synthesizer"}


async def test_task_options_reach_the_calls() -> None:
    fake = FakeDispatcher()
    task = spec(seed=3, temperature=0.2, max_tokens=40, step_max_tokens=(("worker", 8),))
    await run_task(executor(fake), task)
    by_step = {step_of(r.call_id): r.sampling for r in fake.requests}
    assert by_step["planner", 0].max_tokens == 40
    assert by_step["worker", 1].max_tokens == 8
    assert all(s.ignore_eos and s.temperature == 0.2 for s in by_step.values())
    assert len({s.seed for s in by_step.values()}) == 5


async def test_same_seed_gives_the_same_prompts_and_sampling() -> None:
    first, second = FakeDispatcher(), FakeDispatcher()
    await run_task(executor(first), spec(seed=11))
    await run_task(executor(second), spec(seed=11))

    def calls(fake: FakeDispatcher) -> dict[tuple[str, int], object]:
        return {step_of(r.call_id): (r.prompt_token_ids, r.sampling) for r in fake.requests}

    assert calls(first) == calls(second)


async def test_live_mode_fans_out_per_plan_line() -> None:
    def output(request: CallRequest) -> str:
        return "a\nb\n\nc\nd\n" if step_of(request.call_id)[0] == "planner" else "done"

    fake = FakeDispatcher(output=output)
    events = await run_task(executor(fake), spec(mode=Mode.LIVE))
    assert completed(events).result.usage.llm_calls == 1 + 4 + 1
    assert not any(r.sampling.ignore_eos for r in fake.requests)


async def test_bound_on_calls_in_flight_holds_for_parallel_steps() -> None:
    prog = program(
        llm_step("a"), llm_step("b"), llm_step("c"), llm_step("d", "a", "b", "c", answer=True)
    )
    fake = FakeDispatcher(delay=lambda call_id: 0.005)
    events = await run_task(executor(fake, {"prog": prog}, max_running=2), spec(agent="prog"))
    assert completed(events).result.usage.llm_calls == 4
    assert fake.peak_in_flight == 2


async def test_bound_below_the_fanout_width_still_completes() -> None:
    fake = FakeDispatcher(delay=lambda call_id: 0.005)
    events = await run_task(executor(fake, max_running=2), spec())
    assert completed(events).result.usage.llm_calls == 5
    assert fake.peak_in_flight == 2


async def test_deadline_fails_the_task_with_partial_usage_and_aborts_calls() -> None:
    fake = FakeDispatcher(delay=lambda call_id: None if "worker" in call_id else 0.0)
    ex = executor(fake)
    events: list[TaskEvent] = []
    with pytest.raises(TaskFailed) as failed:
        async for event in ex.run(ex.prepare(spec(deadline_s=0.05))):
            events.append(event)
    assert failed.value.code is ErrorCode.DEADLINE_EXCEEDED
    assert "deadline of 0.050 s" in failed.value.message
    usage = failed.value.usage
    assert usage is not None
    assert usage.llm_calls == 1  # the planner finished; the workers did not
    assert usage.output_tokens_total == 64
    assert 0.05 <= usage.task_latency < 1.0
    workers = {e.call_id for e in events if isinstance(e, StepStarted) and e.step == "worker"}
    assert len(workers) == 3
    assert fake.cancelled == workers
    assert fake.in_flight == 0
    assert not any(isinstance(e, TaskCompleted) for e in events)


async def test_failing_call_fails_the_task_with_its_code_and_cancels_the_rest() -> None:
    def fail(call_id: str) -> EngineError | None:
        if call_id.endswith("worker-1"):
            return engine_error(ErrorCode.INTERNAL, "engine exploded")
        return None

    def delay(call_id: str) -> float | None:
        if "worker" not in call_id:
            return 0.0
        return 0.02 if call_id.endswith("worker-1") else None

    fake = FakeDispatcher(delay=delay, fail=fail)
    ex = executor(fake)
    with pytest.raises(TaskFailed) as failed:
        await run_task(ex, spec())
    assert failed.value.code is ErrorCode.INTERNAL
    assert "engine exploded" in failed.value.message
    assert "'worker'" in failed.value.message
    assert failed.value.usage is not None and failed.value.usage.llm_calls == 1
    assert {step_of(c) for c in fake.cancelled} == {("worker", 0), ("worker", 2)}
    assert fake.in_flight == 0


async def test_unavailable_engine_error_keeps_its_code() -> None:
    fake = FakeDispatcher(fail=lambda call_id: engine_error(ErrorCode.UNAVAILABLE, "gone"))
    with pytest.raises(TaskFailed) as failed:
        await run_task(executor(fake), spec())
    assert failed.value.code is ErrorCode.UNAVAILABLE


async def test_closing_the_event_stream_early_cancels_calls_in_flight() -> None:
    fake = FakeDispatcher(delay=lambda call_id: None if "worker" in call_id else 0.0)
    ex = executor(fake)
    events = ex.run(ex.prepare(spec()))
    workers = set()
    async for event in events:
        if isinstance(event, StepStarted) and event.step == "worker":
            workers.add(event.call_id)
            if len(workers) == 3:
                break
    await fake.wait_started(4)
    await events.aclose()
    assert fake.cancelled == workers
    assert fake.in_flight == 0


async def test_closing_while_the_answer_streams_cancels_the_answer_call() -> None:
    fake = FakeDispatcher()
    ex = executor(fake)
    events = ex.run(ex.prepare(spec()))
    async for event in events:
        if isinstance(event, AnswerDelta):
            break
    await events.aclose()
    [answer] = fake.streamed
    assert answer in fake.cancelled
    assert fake.in_flight == 0


def test_unknown_agent_is_not_found_and_lists_known_agents() -> None:
    programs = {"plan_execute": plan_execute(), "other": plan_execute(2)}
    with pytest.raises(TaskFailed) as failed:
        executor(FakeDispatcher(), programs).prepare(spec(agent="nope"))
    assert failed.value.code is ErrorCode.NOT_FOUND
    assert "'nope'" in failed.value.message
    assert "known agents: other, plan_execute" in failed.value.message
    assert failed.value.usage is None


def test_input_that_cannot_fit_the_context_is_rejected_before_any_call() -> None:
    fake = FakeDispatcher(max_model_len=700)
    ex = executor(fake)
    ex.prepare(spec(input="short"))  # fits
    with pytest.raises(TaskFailed) as failed:
        ex.prepare(spec(input="x" * 300))
    assert failed.value.code is ErrorCode.INVALID_ARGUMENT
    assert "max_model_len of 700" in failed.value.message
    assert "300 tokens of input" in failed.value.message
    assert fake.requests == []


def test_lower_max_tokens_makes_a_long_input_fit() -> None:
    ex = executor(FakeDispatcher(max_model_len=700))
    with pytest.raises(TaskFailed):
        ex.prepare(spec(input="x" * 200))
    ex.prepare(spec(input="x" * 200, max_tokens=8))


async def test_no_healthy_replica_fails_unavailable() -> None:
    fake = FakeDispatcher(replicas=0)
    with pytest.raises(TaskFailed) as failed:
        await run_task(executor(fake), spec())
    assert failed.value.code is ErrorCode.UNAVAILABLE


async def test_generate_streams_deltas_then_the_call_record() -> None:
    fake = FakeDispatcher()
    outputs = [
        o
        async for o in executor(fake).generate(
            GenerateSpec(prompt="hi there", prompt_token_ids=(), sampling=Sampling(max_tokens=10))
        )
    ]
    *deltas, last = outputs
    assert all(o.call is None for o in deltas)
    assert last.call is not None
    assert last.call.usage.prompt_tokens == len("hi there")
    text = "".join(o.text for o in deltas)
    assert text == "[gen0][gen"
    assert tuple(i for o in deltas for i in o.token_ids) == tuple(ord(c) for c in text)
    assert fake.requests[0].prompt_token_ids == tuple(ord(c) for c in "hi there")


async def test_generate_rejects_prompts_over_the_context() -> None:
    fake = FakeDispatcher(max_model_len=64)
    with pytest.raises(TaskFailed) as failed:
        await collect(
            executor(fake).generate(
                GenerateSpec(prompt="", prompt_token_ids=(5,) * 60, sampling=Sampling(8))
            )
        )
    assert failed.value.code is ErrorCode.INVALID_ARGUMENT
    assert "max_model_len of 64" in failed.value.message
    assert fake.requests == []


async def test_generate_deadline_aborts_the_call() -> None:
    fake = FakeDispatcher(delay=lambda call_id: None)
    with pytest.raises(TaskFailed) as failed:
        await collect(
            executor(fake).generate(
                GenerateSpec("hi", prompt_token_ids=(), sampling=Sampling(4), deadline_s=0.02)
            )
        )
    assert failed.value.code is ErrorCode.DEADLINE_EXCEEDED
    assert len(fake.cancelled) == 1
