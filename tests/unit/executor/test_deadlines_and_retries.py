"""Deadlines, retried answers and partial usage, as a hostile client meets them (issue 10,
items 14-16), against in-process fakes of the replica pool."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable

import pytest

from orchestrator.domain import (
    AnswerDelta,
    CallDelta,
    CallRequest,
    CallResult,
    ErrorCode,
    GenerateOutput,
    GenerateSpec,
    Sampling,
    StepStarted,
    TaskCompleted,
    TaskEvent,
)
from orchestrator.executor.driver import TaskFailed

from ..factories import FakeDispatcher, encode, engine_error, labelled_output, step_of
from .test_executor import completed, executor, spec

# ---- item 14: Generate's deadline bounds each engine read, never a yield ----------------


async def test_generate_deadline_fails_cleanly_while_the_consumer_is_busy() -> None:
    """The consumer (the servicer writing to gRPC) is suspended between outputs when the
    deadline passes: it must get DEADLINE_EXCEEDED, not be cancelled itself."""
    fake = FakeDispatcher()
    outputs: list[GenerateOutput] = []
    request = GenerateSpec("hi", prompt_token_ids=(), sampling=Sampling(64), deadline_s=0.03)
    with pytest.raises(TaskFailed) as failed:
        async with asyncio.timeout(2):
            async for output in executor(fake).generate(request):
                outputs.append(output)
                await asyncio.sleep(0.02)  # a slow write to the client
    assert failed.value.code is ErrorCode.DEADLINE_EXCEEDED
    assert outputs and all(o.call is None for o in outputs)
    # Item 16: the call's partial usage goes with the failure.
    usage = failed.value.usage
    assert usage is not None
    assert usage.llm_calls == 1
    assert usage.prompt_tokens_total == len("hi")
    assert usage.output_tokens_total == sum(len(o.token_ids) for o in outputs)
    assert fake.in_flight == 0


async def test_generate_deadline_reports_the_prompt_of_a_call_that_produced_nothing() -> None:
    fake = FakeDispatcher(delay=lambda call_id: None)
    request = GenerateSpec("hello", prompt_token_ids=(), sampling=Sampling(4), deadline_s=0.02)
    with pytest.raises(TaskFailed) as failed:
        async for _ in executor(fake).generate(request):
            pass
    usage = failed.value.usage
    assert usage is not None
    assert (usage.llm_calls, usage.prompt_tokens_total, usage.output_tokens_total) == (1, 5, 0)
    assert len(fake.cancelled) == 1


# ---- item 16: a task's partial usage counts the calls its deadline aborted -------------


async def test_deadline_usage_counts_the_calls_it_aborted() -> None:
    fake = FakeDispatcher(delay=lambda call_id: None)  # nothing ever finishes
    ex = executor(fake)
    with pytest.raises(TaskFailed) as failed:
        async for _ in ex.run(ex.prepare(spec(deadline_s=0.05))):
            pass
    assert failed.value.code is ErrorCode.DEADLINE_EXCEEDED
    usage = failed.value.usage
    assert usage is not None
    [planner] = fake.requests
    assert usage.llm_calls == 1
    assert usage.prompt_tokens_total == len(planner.prompt_token_ids) > 0
    assert usage.output_tokens_total == 0
    assert fake.cancelled == {planner.call_id}


# ---- item 15: a retried answer never repeats or contradicts what was streamed ----------


class DyingAnswer(FakeDispatcher):
    """Streams the answer in chunks of `chunk(replica)` tokens; on replica-0 the stream
    dies (UNAVAILABLE, as when its actor is killed) after `die_after` tokens, or hangs
    there when `hang` is set. `answer(replica, call)` is the text each replica writes."""

    def __init__(
        self,
        *,
        die_after: int = 6,
        chunk: Callable[[str], int] = lambda replica: 4,
        answer: Callable[[str, CallRequest], str] = lambda replica, call: labelled_output(call),
        hang: bool = False,
    ) -> None:
        super().__init__()
        self._die_after = die_after
        self._chunk = chunk
        self._answer = answer
        self._hang = hang

    async def stream(
        self, replica_name: str, call: CallRequest
    ) -> AsyncIterator[CallDelta | CallResult]:
        self.streamed.append(call.call_id)
        result = await self._run(replica_name, call)
        text = self._answer(replica_name, call)
        result = dataclasses.replace(result, token_ids=encode(text), text=text)
        dies = replica_name == "replica-0"
        size = self._chunk(replica_name)
        for i in range(0, len(text), size):
            if dies and i >= self._die_after:
                if self._hang:
                    await asyncio.Event().wait()
                raise engine_error(ErrorCode.UNAVAILABLE, f"replica {replica_name} is gone")
            yield CallDelta(result.token_ids[i : i + size], text[i : i + size])
            await asyncio.sleep(0)
        yield result


async def run_events(fake: FakeDispatcher, **fields: object) -> list[TaskEvent]:
    ex = executor(fake)
    return [e async for e in ex.run(ex.prepare(spec(**fields)))]


def streamed(events: list[TaskEvent]) -> tuple[str, tuple[int, ...]]:
    deltas = [e for e in events if isinstance(e, AnswerDelta)]
    return "".join(d.text for d in deltas), tuple(i for d in deltas for i in d.token_ids)


def answer_replicas(events: list[TaskEvent]) -> list[str]:
    return [e.replica for e in events if isinstance(e, StepStarted) and e.step == "synthesizer"]


@pytest.mark.parametrize("chunks", [(4, 4), (4, 3), (3, 5), (1, 64)])
async def test_a_retried_answer_resumes_after_what_the_client_has(
    chunks: tuple[int, int],
) -> None:
    first, retry = chunks
    fake = DyingAnswer(chunk=lambda replica: first if replica == "replica-0" else retry)
    events = await run_events(fake)
    assert answer_replicas(events) == ["replica-0"]  # round robin sent it there first
    result = completed(events)
    text, ids = streamed(events)
    assert text == result.answer
    assert ids == encode(result.answer)
    [answer] = [c for c in result.calls if c.step == "synthesizer"]
    assert answer.replica == "replica-1"
    assert result.usage.retried_calls == 1
    attempts = [r for r, c in fake.attempts if step_of(c) == "synthesizer"]
    assert attempts == ["replica-0", "replica-1"]


async def test_a_retried_answer_that_differs_fails_the_task_without_contradicting() -> None:
    def answer(replica: str, call: CallRequest) -> str:
        text = labelled_output(call)
        return text if replica == "replica-0" else text.upper()

    fake = DyingAnswer(answer=answer)
    ex = executor(fake)
    events: list[TaskEvent] = []
    with pytest.raises(TaskFailed) as failed:
        async for event in ex.run(ex.prepare(spec())):
            events.append(event)
    assert failed.value.code is ErrorCode.UNAVAILABLE
    assert "different answer" in failed.value.message
    text, _ = streamed(events)
    # Only what the first replica wrote before dying reached the client.
    assert text == "[synthes"
    assert not any(isinstance(e, TaskCompleted) for e in events)
    assert fake.in_flight == 0


async def test_a_retry_that_stops_short_of_what_was_streamed_fails_the_task() -> None:
    def answer(replica: str, call: CallRequest) -> str:
        text = labelled_output(call)
        return text if replica == "replica-0" else text[:3]

    fake = DyingAnswer(answer=answer)
    with pytest.raises(TaskFailed) as failed:
        await run_events(fake)
    assert failed.value.code is ErrorCode.UNAVAILABLE
    assert "different answer" in failed.value.message


async def test_deadline_usage_counts_the_answer_tokens_already_streamed() -> None:
    fake = DyingAnswer(hang=True, die_after=8)  # replica-0's answer stalls after 8 tokens
    ex = executor(fake)
    events: list[TaskEvent] = []
    with pytest.raises(TaskFailed) as failed:
        async for event in ex.run(ex.prepare(spec(deadline_s=0.2))):
            events.append(event)
    assert failed.value.code is ErrorCode.DEADLINE_EXCEEDED
    usage = failed.value.usage
    assert usage is not None
    _, ids = streamed(events)
    assert len(ids) == 8
    assert usage.llm_calls == 5  # the answer call counts, aborted
    assert usage.final_output_tokens == 8
    completed_output = 64 + 3 * 48
    assert usage.output_tokens_total == completed_output + 8
