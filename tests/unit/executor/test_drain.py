"""Draining the executor (issue 13 item 2): new tasks and generations are refused with
UNAVAILABLE and a retry hint, tasks in flight finish within the drain timeout, and those
still running at the timeout fail UNAVAILABLE with their partial usage, aborted calls
counted, exactly as at a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from agents import Program, plan_execute
from orchestrator.domain import (
    ErrorCode,
    GenerateOutput,
    GenerateSpec,
    Sampling,
    StepStarted,
    TaskCompleted,
    TaskEvent,
    TaskSpec,
)
from orchestrator.executor.driver import TaskFailed
from orchestrator.executor.executor import DRAIN_RETRY_AFTER_S, Executor
from orchestrator.routing import RoundRobinRouter

from ..factories import FakeDispatcher, FakeTokenizer

PROGRAMS: Mapping[str, Program] = {"plan_execute": plan_execute()}


def executor(fake: FakeDispatcher) -> Executor:
    return Executor(fake, RoundRobinRouter(), FakeTokenizer(), PROGRAMS)


def spec() -> TaskSpec:
    return TaskSpec(agent="plan_execute", input="plan a trip")


async def events_of(ex: Executor, into: list[TaskEvent]) -> None:
    async for event in ex.run(ex.prepare(spec())):
        into.append(event)


async def test_a_drained_executor_refuses_tasks_and_generations_with_a_retry_hint() -> None:
    fake = FakeDispatcher()
    ex = executor(fake)
    drained = await ex.drain(5.0)
    assert (drained.in_flight, drained.cancelled) == (0, 0)
    assert drained.seconds < 0.5
    assert ex.draining
    with pytest.raises(TaskFailed) as refused:
        await anext(ex.run(ex.prepare(spec())))
    assert refused.value.code is ErrorCode.UNAVAILABLE
    assert "draining" in refused.value.message
    assert refused.value.retry_after_s == DRAIN_RETRY_AFTER_S
    generation = GenerateSpec("hi", (), Sampling(max_tokens=4))
    with pytest.raises(TaskFailed) as refused:
        await anext(ex.generate(generation))
    assert refused.value.code is ErrorCode.UNAVAILABLE
    assert refused.value.retry_after_s == DRAIN_RETRY_AFTER_S
    assert fake.requests == []  # nothing reached a replica


async def test_tasks_in_flight_finish_within_the_drain_timeout() -> None:
    fake = FakeDispatcher(delay=lambda call_id: 0.2)
    ex = executor(fake)
    events: list[TaskEvent] = []
    running = asyncio.create_task(events_of(ex, events))
    await fake.wait_started(1)
    assert ex.in_flight == 1
    drained = await ex.drain(10.0)
    await running
    assert isinstance(events[-1], TaskCompleted)
    assert events[-1].result.usage.llm_calls == 5
    assert (drained.in_flight, drained.cancelled) == (1, 0)
    assert 0.3 < drained.seconds < 5.0  # three calls of 0.2 s in a row, then the drain ends
    assert ex.in_flight == 0


async def test_a_task_still_running_at_the_timeout_fails_with_its_partial_usage() -> None:
    fake = FakeDispatcher(delay=lambda call_id: None if "worker" in call_id else 0.0)
    ex = executor(fake)
    events: list[TaskEvent] = []
    running = asyncio.create_task(events_of(ex, events))
    await fake.wait_started(4)  # the planner finished; three workers never will
    drained = await ex.drain(0.1)
    with pytest.raises(TaskFailed) as stopped:
        await running
    assert (drained.in_flight, drained.cancelled) == (1, 1)
    assert 0.1 <= drained.seconds < 2.0
    assert stopped.value.code is ErrorCode.UNAVAILABLE
    assert "drain timeout of 0.1 s" in stopped.value.message
    usage = stopped.value.usage
    assert usage is not None
    # As at a deadline: the planner's call plus the three aborted workers, with prompts.
    assert usage.llm_calls == 4
    assert usage.output_tokens_total == 64  # the planner's
    assert usage.prompt_tokens_total == sum(len(r.prompt_token_ids) for r in fake.requests)
    workers = {e.call_id for e in events if isinstance(e, StepStarted) and e.step == "worker"}
    assert fake.cancelled == workers
    assert fake.in_flight == 0
    assert ex.in_flight == 0


async def test_a_generation_still_running_at_the_timeout_fails_with_its_usage() -> None:
    fake = FakeDispatcher(delay=lambda call_id: None)
    ex = executor(fake)
    outputs: list[GenerateOutput] = []

    async def consume() -> None:
        generation = GenerateSpec("hello there", (), Sampling(max_tokens=8))
        async for output in ex.generate(generation):
            outputs.append(output)

    running = asyncio.create_task(consume())
    await fake.wait_started(1)
    drained = await ex.drain(0.05)
    with pytest.raises(TaskFailed) as stopped:
        await running
    assert drained.cancelled == 1
    assert stopped.value.code is ErrorCode.UNAVAILABLE
    assert "draining" in stopped.value.message
    usage = stopped.value.usage
    assert usage is not None
    assert usage.llm_calls == 1
    assert usage.prompt_tokens_total == len(fake.requests[0].prompt_token_ids)
    assert fake.in_flight == 0
