"""The executor's driver loop against an in-process fake replica pool."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Mapping
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import Program, plan_execute
from agents.distributions import Constant
from agents.dsl import Parallel, ProgramError, Tool
from orchestrator.domain import (
    AnswerDelta,
    CallRequest,
    ErrorCode,
    GenerateSpec,
    Mode,
    Sampling,
    StepFinished,
    StepKind,
    StepStarted,
    TaskAccepted,
    TaskCompleted,
    TaskEvent,
    TaskResult,
    TaskSpec,
)
from orchestrator.executor.driver import TaskFailed
from orchestrator.executor.executor import Executor
from orchestrator.replicas.engine import EngineError
from orchestrator.routing import RoundRobinRouter

from ..factories import (
    FakeDispatcher,
    FakeTokenizer,
    encode,
    engine_error,
    labelled_output,
    llm,
    program,
    step_of,
)
from ..strategies import programs

PROGRAMS: Mapping[str, Program] = {"plan_execute": plan_execute()}


def executor(
    dispatcher: FakeDispatcher,
    programs: Mapping[str, Program] = PROGRAMS,
    max_running: int = 32,
    max_retries: int = 2,
) -> Executor:
    return Executor(
        dispatcher,
        RoundRobinRouter(),
        FakeTokenizer(),
        programs,
        max_concurrent_calls_per_task=max_running,
        max_retries=max_retries,
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


def completed(events: list[TaskEvent]) -> TaskResult:
    last = events[-1]
    assert isinstance(last, TaskCompleted)
    return last.result


def finished_ids(events: list[TaskEvent]) -> dict[str, int]:
    """Event index of each StepFinished, by call or tool id."""
    out = {}
    for i, e in enumerate(events):
        if isinstance(e, StepFinished):
            out[e.call.call_id if e.call is not None else e.tool.tool_id if e.tool else ""] = i
    return out


def content(fake: FakeDispatcher) -> list[tuple[str, tuple[int, ...], Sampling]]:
    """Every request without its (random) task id."""
    return sorted(
        ((step_of(r.call_id), r.prompt_token_ids, r.sampling) for r in fake.requests),
        key=repr,
    )


# ---- a task's life ------------------------------------------------------------------


async def test_events_arrive_in_the_order_a_client_expects() -> None:
    fake = FakeDispatcher()
    events = await run_task(executor(fake), spec())
    assert isinstance(events[0], TaskAccepted)
    assert events[0].agent == "plan_execute"
    assert isinstance(events[-1], TaskCompleted)
    assert sum(isinstance(e, TaskAccepted | TaskCompleted) for e in events) == 2

    started = {e.call_id: i for i, e in enumerate(events) if isinstance(e, StepStarted)}
    finished = finished_ids(events)
    assert started.keys() == finished.keys()
    assert len(started) == 5
    assert all(started[call_id] < finished[call_id] for call_id in started)
    assert {e.kind for e in events if isinstance(e, StepStarted)} == {StepKind.LLM}

    by_id = {e.call_id: e for e in events if isinstance(e, StepStarted)}
    [answer_id] = [c for c, e in by_id.items() if e.step == "synthesizer"]
    deltas = [i for i, e in enumerate(events) if isinstance(e, AnswerDelta)]
    assert deltas
    assert all(started[answer_id] < i < finished[answer_id] for i in deltas)
    # Only the answer streams; the other steps are plain calls.
    assert fake.streamed == [answer_id]
    text = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    assert text == completed(events).answer
    assert text.startswith("[synthesizer]")


async def test_planner_then_workers_then_synthesizer() -> None:
    fake = FakeDispatcher()
    events = await run_task(executor(fake), spec())
    order = [(e.step, e.branch) for e in events if isinstance(e, StepStarted)]
    assert order == [
        ("planner", 0),
        ("worker", 0),
        ("worker", 1),
        ("worker", 2),
        ("synthesizer", 0),
    ]
    finished_steps = [e.call.step for e in events if isinstance(e, StepFinished) and e.call]
    assert finished_steps[0] == "planner"
    assert finished_steps[-1] == "synthesizer"
    replicas = {e.replica for e in events if isinstance(e, StepStarted)}
    assert replicas == {"replica-0", "replica-1"}


async def test_task_usage_is_the_sum_over_its_calls() -> None:
    fake = FakeDispatcher()
    result = completed(await run_task(executor(fake), spec(input="four")))
    usage = result.usage
    assert usage.llm_calls == len(result.calls) == len(fake.requests) == 5
    assert (usage.tool_calls, usage.retried_calls, result.tools) == (0, 0, ())
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
    [synth] = [c for c in result.calls if c.step == "synthesizer"]
    assert set(synth.after) == {c.call_id for c in result.calls if c.step == "worker"}


async def test_task_options_reach_the_calls() -> None:
    fake = FakeDispatcher()
    task = spec(seed=3, temperature=0.2, max_tokens=40, step_max_tokens=(("worker", 8),))
    await run_task(executor(fake), task)
    sampling = {step_of(r.call_id): r.sampling for r in fake.requests}
    assert sampling["planner"].max_tokens == 40
    assert sampling["worker"].max_tokens == 8
    assert all(s.ignore_eos and s.temperature == 0.2 for s in sampling.values())
    assert len({r.sampling.seed for r in fake.requests}) == 5


async def test_same_seed_gives_the_same_prompts_and_sampling() -> None:
    first, second = FakeDispatcher(), FakeDispatcher()
    await run_task(executor(first), spec(seed=11))
    await run_task(executor(second), spec(seed=11))
    assert content(first) == content(second)


async def test_live_mode_fans_out_per_plan_line() -> None:
    def output(request: CallRequest) -> str:
        return "a\nb\n\nc\nd\n" if step_of(request.call_id) == "planner" else "done"

    fake = FakeDispatcher(output=output)
    events = await run_task(executor(fake), spec(mode=Mode.LIVE))
    assert completed(events).usage.llm_calls == 1 + 4 + 1
    assert not any(r.sampling.ignore_eos for r in fake.requests)


async def test_bound_on_calls_in_flight_holds_for_parallel_steps() -> None:
    prog = program(Parallel("fan", body=(llm("a"),), branches=Constant(3.0)), llm("d"))
    fake = FakeDispatcher(delay=lambda call_id: 0.005)
    events = await run_task(executor(fake, {"prog": prog}, max_running=2), spec(agent="prog"))
    assert completed(events).usage.llm_calls == 4
    assert fake.peak_in_flight == 2


async def test_bound_below_the_fanout_width_still_completes() -> None:
    fake = FakeDispatcher(delay=lambda call_id: 0.005)
    events = await run_task(executor(fake, max_running=2), spec())
    assert completed(events).usage.llm_calls == 5
    assert fake.peak_in_flight == 2


async def test_each_call_carries_the_remaining_deadline() -> None:
    fake = FakeDispatcher(delay=lambda call_id: 0.01)
    await run_task(executor(fake), spec(deadline_s=5.0))
    budgets = [r.deadline_s for r in fake.requests]
    assert all(b is not None and 0 < b <= 5.0 for b in budgets)
    planner, synth = budgets[0], budgets[-1]
    assert planner is not None and synth is not None and synth < planner
    plain = FakeDispatcher()
    await run_task(executor(plain), spec())
    assert {r.deadline_s for r in plain.requests} == {None}


# ---- tools --------------------------------------------------------------------------


def tool_program(tool: Tool) -> Program:
    return program(llm("ask"), tool, llm("answer", "\n<answer>\n"))


async def test_simulated_tool_steps_are_events_records_and_context() -> None:
    tool = Tool("lookup", latency_s=Constant(0.01), result_tokens=Constant(12.0))
    fake = FakeDispatcher()
    events = await run_task(executor(fake, {"prog": tool_program(tool)}), spec(agent="prog"))
    result = completed(events)
    [started] = [e for e in events if isinstance(e, StepStarted) and e.kind is StepKind.TOOL]
    assert (started.step, started.replica, started.branch) == ("lookup", "", 0)
    [finished] = [e for e in events if isinstance(e, StepFinished) and e.call is None]
    record = finished.tool
    assert record is not None
    assert record.tool_id == started.call_id
    assert (record.tool, record.ok, record.result_tokens) == ("simulated", True, 12)
    assert record.elapsed >= 0.009  # asyncio may wake a hair early
    assert result.tools == (record,)
    [ask, answer] = result.calls
    assert record.after == (ask.call_id,)
    assert answer.after == (record.tool_id,)
    assert (result.usage.tool_calls, result.usage.llm_calls) == (1, 2)
    assert result.usage.critical_path_calls == 2
    # The answer's prompt holds the observation: a header, then 12 result tokens.
    prompt = fake.requests[-1].prompt_token_ids
    header = encode("\nObservation from lookup:\n")
    instruction = encode("\n<answer>\n")
    assert prompt[-len(instruction) :] == instruction
    observation = prompt[: -len(instruction)]
    assert observation[-12 - len(header) : -12] == header


async def test_synthetic_mode_simulates_real_tools() -> None:
    tool = Tool("calc", tool="calculator", result_tokens=Constant(7.0))
    fake = FakeDispatcher(output=calc_output)
    result = completed(
        await run_task(executor(fake, {"prog": tool_program(tool)}), spec(agent="prog"))
    )
    [record] = result.tools
    assert (record.tool, record.result_tokens) == ("simulated", 7)


def calc_output(request: CallRequest) -> str:
    return "calculate: 2 + 3 * 4" if step_of(request.call_id) == "ask" else "ok"


async def test_live_calculator_result_reaches_the_record_and_the_next_prompt() -> None:
    tool = Tool("calc", tool="calculator", argument="{output}")
    fake = FakeDispatcher(output=calc_output)
    result = completed(
        await run_task(
            executor(fake, {"prog": tool_program(tool)}), spec(agent="prog", mode=Mode.LIVE)
        )
    )
    [record] = result.tools
    assert (record.tool, record.ok, record.result_tokens) == ("calculator", True, len("14"))
    prompt = fake.requests[-1].prompt_token_ids
    tail = encode("\nObservation from calculator:\n14\n<answer>\n")
    assert prompt[-len(tail) :] == tail


async def test_a_failing_live_tool_is_an_observation_not_a_failure() -> None:
    tool = Tool("calc", tool="calculator", argument="what is {output}")
    fake = FakeDispatcher(output=lambda request: "unknown_thing")
    result = completed(
        await run_task(
            executor(fake, {"prog": tool_program(tool)}), spec(agent="prog", mode=Mode.LIVE)
        )
    )
    [record] = result.tools
    assert (record.tool, record.ok) == ("calculator", False)
    assert b"error: " in bytes(fake.requests[-1].prompt_token_ids)


def test_an_unknown_tool_is_rejected_with_the_program() -> None:
    with pytest.raises(ProgramError, match="unknown tool 'no_such_tool'"):
        tool_program(Tool("t", tool="no_such_tool"))


async def test_a_tool_that_blows_up_fails_the_task_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(name: str) -> object:
        raise RuntimeError("registry unavailable")

    monkeypatch.setattr("orchestrator.executor.executor.get_tool", broken)
    ex = executor(FakeDispatcher(), {"prog": tool_program(Tool("t", tool="calculator"))})
    with pytest.raises(TaskFailed) as failed:
        async with asyncio.timeout(2.0):
            await run_task(ex, spec(agent="prog", mode=Mode.LIVE))
    assert failed.value.code is ErrorCode.INTERNAL
    assert "registry unavailable" in failed.value.message


# ---- failures, retries, deadlines, cancellation -------------------------------------


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
    # The planner finished; the three workers were aborted and count with their prompts.
    assert usage.llm_calls == 4
    assert usage.output_tokens_total == 64
    workers_prompt = sum(len(r.prompt_token_ids) for r in fake.requests[1:])
    assert usage.prompt_tokens_total == len(fake.requests[0].prompt_token_ids) + workers_prompt
    assert 0.05 <= usage.task_latency < 1.0
    workers = {e.call_id for e in events if isinstance(e, StepStarted) and e.step == "worker"}
    assert len(workers) == 3
    assert fake.cancelled == workers
    assert fake.in_flight == 0
    assert not any(isinstance(e, TaskCompleted) for e in events)


def nth_worker(call_id: str, n: int) -> bool:
    """Worker call ids count up after the planner's: the n-th worker ends in -worker-{n+1}."""
    return call_id.endswith(f"-worker-{n + 1}")


async def test_failing_call_fails_the_task_with_its_code_and_cancels_the_rest() -> None:
    def fail(replica: str, call_id: str) -> EngineError | None:
        return (
            engine_error(ErrorCode.INTERNAL, "engine exploded") if nth_worker(call_id, 1) else None
        )

    def delay(call_id: str) -> float | None:
        if "worker" not in call_id:
            return 0.0
        return 0.02 if nth_worker(call_id, 1) else None

    fake = FakeDispatcher(delay=delay, fail=fail)
    with pytest.raises(TaskFailed) as failed:
        await run_task(executor(fake), spec())
    assert failed.value.code is ErrorCode.INTERNAL
    assert "engine exploded" in failed.value.message
    assert "'worker'" in failed.value.message
    # The planner, and the two workers aborted when their sibling failed.
    assert failed.value.usage is not None and failed.value.usage.llm_calls == 3
    workers = {r.call_id for r in fake.requests if step_of(r.call_id) == "worker"}
    assert fake.cancelled == {c for c in workers if not nth_worker(c, 1)}
    # INTERNAL is the engine's own failure: another replica would not help.
    assert sum(1 for _, c in fake.attempts if nth_worker(c, 1)) == 1
    assert fake.in_flight == 0


async def test_unavailable_replica_is_retried_on_another() -> None:
    def fail(replica: str, call_id: str) -> EngineError | None:
        if replica == "replica-0" and step_of(call_id) == "planner":
            return engine_error(ErrorCode.UNAVAILABLE, "replica died")
        return None

    fake = FakeDispatcher(fail=fail)
    events = await run_task(executor(fake), spec())
    result = completed(events)
    planner_attempts = [a for a in fake.attempts if step_of(a[1]) == "planner"]
    assert [replica for replica, _ in planner_attempts] == ["replica-0", "replica-1"]
    assert result.usage.retried_calls == 1
    assert result.usage.llm_calls == len(result.calls) == 5
    [planner] = [c for c in result.calls if c.step == "planner"]
    assert planner.replica == "replica-1"


async def test_unavailable_on_every_replica_fails_the_task_unavailable() -> None:
    fake = FakeDispatcher(fail=lambda replica, call_id: engine_error(ErrorCode.UNAVAILABLE, "gone"))
    with pytest.raises(TaskFailed) as failed:
        await run_task(executor(fake), spec())
    assert failed.value.code is ErrorCode.UNAVAILABLE
    assert "gone" in failed.value.message
    assert sorted(replica for replica, _ in fake.attempts) == ["replica-0", "replica-1"]


@pytest.mark.parametrize(("max_retries", "attempts"), [(0, 1), (1, 2), (2, 3)])
async def test_retries_are_bounded_by_max_retries(max_retries: int, attempts: int) -> None:
    fake = FakeDispatcher(
        replicas=5, fail=lambda replica, call_id: engine_error(ErrorCode.UNAVAILABLE, "gone")
    )
    with pytest.raises(TaskFailed) as failed:
        await run_task(executor(fake, max_retries=max_retries), spec())
    assert failed.value.code is ErrorCode.UNAVAILABLE
    replicas = [replica for replica, _ in fake.attempts]
    assert len(replicas) == len(set(replicas)) == attempts


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


async def test_a_synthetic_task_that_passes_the_context_check_fits_every_call() -> None:
    limit = smallest_fitting_model_len(Mode.SYNTHETIC, "x" * 50)
    fake = FakeDispatcher(max_model_len=limit)
    await run_task(executor(fake), spec(input="x" * 50))
    peak = max(len(r.prompt_token_ids) + r.sampling.max_tokens for r in fake.requests)
    assert peak == limit


def smallest_fitting_model_len(mode: Mode, user_input: str) -> int:
    """The smallest max_model_len prepare accepts for plan_execute in `mode`."""
    low, high = 1, 1 << 14
    while low < high:
        middle = (low + high) // 2
        try:
            executor(FakeDispatcher(max_model_len=middle)).prepare(
                spec(input=user_input, mode=mode)
            )
            high = middle
        except TaskFailed:
            low = middle + 1
    return low


def test_live_mode_context_check_covers_the_widest_live_fanout() -> None:
    synthetic = smallest_fitting_model_len(Mode.SYNTHETIC, "x" * 50)
    live = smallest_fitting_model_len(Mode.LIVE, "x" * 50)
    # Live mode may run up to max_branches (8) workers, synthetic mode runs 3.
    assert live > synthetic


async def test_no_healthy_replica_fails_unavailable() -> None:
    fake = FakeDispatcher(replicas=0)
    with pytest.raises(TaskFailed) as failed:
        await run_task(executor(fake), spec())
    assert failed.value.code is ErrorCode.UNAVAILABLE


def test_info_reports_the_expected_cost_per_task() -> None:
    ex = executor(FakeDispatcher())
    info = ex.info("plan_execute")
    assert info.name == "plan_execute"
    assert info.expected_llm_calls == 5.0
    assert info.expected_token_amplification > 1.0
    assert [(s.name, s.kind, s.path) for s in info.steps] == [
        ("planner", "llm", "body[0]"),
        ("workers", "parallel", "body[1]"),
        ("worker", "llm", "body[1].body[0]"),
        ("synthesizer", "llm", "body[2]"),
    ]
    assert [s.mean_count for s in info.steps] == [1.0, 3.0, 1.0, 1.0]
    assert [s.mean_tokens for s in info.steps] == [64.0, 0.0, 48.0, 64.0]
    assert ex.info("plan_execute") is info  # computed once


# ---- plain generations --------------------------------------------------------------


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
    assert text == "[gen][gen]"
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


# ---- properties over random programs ------------------------------------------------


def jitter(call_id: str) -> float:
    """0-2 ms, fixed per call id, so calls finish out of order."""
    return (zlib.crc32(call_id.encode()) % 3) / 1000


async def random_run(
    prog: Program, task: TaskSpec, stop_after: int | None, max_running: int
) -> tuple[FakeDispatcher, list[TaskEvent], TaskFailed | None]:
    def output(request: CallRequest) -> str:
        # Live mode: two plan lines and an occasional loop exit.
        text = labelled_output(request)
        return text[:2] + "\nDONE\n" + text[2:] if len(text) > 6 else text

    fake = FakeDispatcher(delay=jitter, output=output, max_model_len=1 << 22)
    ex = executor(fake, {prog.name: prog}, max_running=max_running)
    events: list[TaskEvent] = []
    error = None
    stream = ex.run(ex.prepare(task))
    try:
        async for event in stream:
            events.append(event)
            if stop_after is not None and len(events) >= stop_after:
                break
    except TaskFailed as exc:
        error = exc
    finally:
        await stream.aclose()
    return fake, events, error


@settings(max_examples=40, deadline=None)
@given(
    prog=programs(),
    seed=st.integers(0, 2**31),
    mode=st.sampled_from(Mode),
    ending=st.sampled_from(["complete", "deadline", "close"]),
    stop_after=st.integers(1, 12),
    max_running=st.integers(1, 8),
)
def test_random_programs_on_the_fake_engine(
    prog: Program, seed: int, mode: Mode, ending: str, stop_after: int, max_running: int
) -> None:
    deadline = 0.004 if ending == "deadline" else None
    task = TaskSpec(agent=prog.name, input="hi", mode=mode, seed=seed, deadline_s=deadline)
    stop = stop_after if ending == "close" else None
    fake, events, error = asyncio.run(random_run(prog, task, stop, max_running))

    # No call outlives the task: each one finished or was cancelled.
    assert fake.in_flight == 0
    assert fake.started == fake.finished | fake.cancelled
    if error is not None:
        assert error.code is ErrorCode.DEADLINE_EXCEEDED
        assert ending == "deadline"
    if ending == "complete":
        result = completed(events)
        usage = result.usage
        # Usage is the sum over the task's calls.
        assert usage.llm_calls == len(result.calls) == len(fake.requests)
        assert usage.tool_calls == len(result.tools)
        assert usage.prompt_tokens_total == sum(c.usage.prompt_tokens for c in result.calls)
        assert usage.output_tokens_total == sum(c.usage.output_tokens for c in result.calls)
        assert usage.cached_tokens_total == sum(c.usage.cached_prompt_tokens for c in result.calls)
        assert usage.final_output_tokens == result.calls[-1].usage.output_tokens
        assert 1 <= usage.critical_path_calls <= usage.llm_calls
        # Every call started after the calls and tools it depends on finished.
        started = {e.call_id: i for i, e in enumerate(events) if isinstance(e, StepStarted)}
        finished = finished_ids(events)
        edges = [(c.call_id, c.after) for c in result.calls]
        edges += [(t.tool_id, t.after) for t in result.tools]
        for own, after in edges:
            for dep in after:
                assert finished[dep] < started[own]
                if dep in fake.finished_at and own in fake.started_at:
                    assert fake.finished_at[dep] < fake.started_at[own]
        # Same seed, same shape.
        again, _, _ = asyncio.run(random_run(prog, task, None, max_running))
        assert content(again) == content(fake)
