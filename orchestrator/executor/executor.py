"""The executor: runs agent programs (and plain generations) on the replica pool.

One driver loop per task owns its progress: it asks the pure planner (plan.py) what to
run, dispatches those calls, and feeds their results back; call coroutines only report
into the driver's queue. Every way out of the loop (completion, failure, deadline, the
client going away) cancels the task's outstanding calls, which aborts them in the engines.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from agents.program import Program
from orchestrator.domain import (
    AnswerDelta,
    CallDelta,
    CallRecord,
    CallRequest,
    CallResult,
    ErrorCode,
    GenerateOutput,
    GenerateSpec,
    Mode,
    StepFinished,
    StepStarted,
    TaskAccepted,
    TaskCompleted,
    TaskEvent,
    TaskResult,
    TaskSpec,
    TaskUsage,
)
from orchestrator.executor.accounting import task_usage
from orchestrator.executor.plan import (
    EncodedProgram,
    PlannedCall,
    TaskState,
    max_context_tokens,
    next_calls,
    widths,
)
from orchestrator.replicas.engine import EngineError
from orchestrator.routing import NoReplicaAvailable, ReplicaView, Router


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens."""
        ...

    @property
    def bos_token_id(self) -> int | None: ...


class Dispatcher(Protocol):
    """What the executor needs of the replica pool."""

    @property
    def max_model_len(self) -> int: ...

    def views(self) -> list[ReplicaView]: ...

    async def call(self, replica_name: str, call: CallRequest) -> CallResult: ...

    def stream(
        self, replica_name: str, call: CallRequest
    ) -> AsyncGenerator[CallDelta | CallResult, None]: ...


class TaskFailed(Exception):
    """A task (or generation) that could not complete. `usage` is what it consumed
    before failing (None when it failed before any call)."""

    def __init__(self, code: ErrorCode, message: str, usage: TaskUsage | None = None) -> None:
        super().__init__(code, message, usage)
        self.code = code
        self.message = message
        self.usage = usage

    def __str__(self) -> str:
        return self.message


@dataclass(slots=True, frozen=True)
class _Delta:
    call: PlannedCall
    delta: CallDelta


@dataclass(slots=True, frozen=True)
class _Done:
    call: PlannedCall
    replica: str
    result: CallResult
    dispatched_at: float  # monotonic, in this process
    finished_at: float


@dataclass(slots=True, frozen=True)
class _Failed:
    call: PlannedCall
    error: EngineError


_Message = _Delta | _Done | _Failed


class Executor:
    def __init__(
        self,
        dispatcher: Dispatcher,
        router: Router,
        tokenizer: Tokenizer,
        programs: Mapping[str, Program],
        *,
        max_concurrent_calls_per_task: int = 32,
    ) -> None:
        self._dispatcher = dispatcher
        self._router = router
        self._tokenizer = tokenizer
        self._programs = dict(programs)
        self._max_running = max_concurrent_calls_per_task
        self._encoded: dict[tuple[str, Mode], EncodedProgram] = {}
        self._ids = itertools.count()

    @property
    def programs(self) -> Mapping[str, Program]:
        return self._programs

    def _encode(self, program: Program, mode: Mode) -> EncodedProgram:
        key = (program.name, mode)
        if key not in self._encoded:
            bos = self._tokenizer.bos_token_id
            head = ([bos] if bos is not None else []) + self._tokenizer.encode(
                program.system + "\nUser: "
            )
            instructions: dict[tuple[str, int, int], tuple[int, ...]] = {}
            for step_name, step_widths in widths(program, mode).items():
                step = program.step(step_name)
                for width in step_widths:
                    for branch in range(width):
                        text = step.instruction.replace("{branch}", str(branch + 1)).replace(
                            "{branches}", str(width)
                        )
                        instructions[(step_name, branch, width)] = tuple(
                            self._tokenizer.encode(text)
                        )
            self._encoded[key] = EncodedProgram(program, tuple(head), instructions)
        return self._encoded[key]

    def prepare(self, spec: TaskSpec) -> TaskState:
        """Validate a task against the program and the model; raises TaskFailed."""
        program = self._programs.get(spec.agent)
        if program is None:
            known = ", ".join(sorted(self._programs))
            raise TaskFailed(
                ErrorCode.NOT_FOUND, f"unknown agent {spec.agent!r}; known agents: {known}"
            )
        encoded = self._encode(program, spec.mode)
        input_ids = tuple(self._tokenizer.encode(spec.input))
        task_id = f"task-{uuid.uuid4().hex[:12]}"
        state = TaskState(
            task_id=task_id,
            spec=spec,
            encoded=encoded,
            prefix=encoded.prefix_head + input_ids,
            user_input_tokens=len(input_ids),
        )
        needed = max_context_tokens(state)
        limit = self._dispatcher.max_model_len
        if needed > limit:
            raise TaskFailed(
                ErrorCode.INVALID_ARGUMENT,
                f"input: {len(input_ids)} tokens of input make agent {program.name!r} need "
                f"up to {needed} tokens of context (input + its steps' prompts and "
                f"max_tokens), over the model's max_model_len of {limit}; shorten the "
                f"input or lower max_tokens",
            )
        return state

    async def run(
        self, state: TaskState, *, stream_answer: bool = True
    ) -> AsyncGenerator[TaskEvent, None]:
        """Run a prepared task, yielding its events; raises TaskFailed on failure.

        stream_answer=False (the unary `Run`): the answer call returns whole, like every
        other call, and no AnswerDelta is yielded; streaming tokens through Ray that no
        client watches costs more CPU than the engine spends producing them. task_ttft is
        then when the engine produced the first answer token (dispatch + engine TTFT).
        """
        accepted_at = time.monotonic()
        first_answer_at: float | None = None
        yield TaskAccepted(task_id=state.task_id, agent=state.program.name)
        queue: asyncio.Queue[_Message] = asyncio.Queue()
        in_flight: dict[str, asyncio.Task[None]] = {}
        deadline = (
            accepted_at + state.spec.deadline_s if state.spec.deadline_s is not None else None
        )
        # Only a finished call changes what can run next; deltas do not.
        replan = True
        try:
            while not state.done():
                for planned in next_calls(state, self._max_running) if replan else ():
                    replica = self._choose(planned)
                    state.start(planned)
                    stream = planned.answer and stream_answer
                    in_flight[planned.call_id] = asyncio.create_task(
                        self._dispatch(planned, replica, queue, stream)
                    )
                    yield StepStarted(planned.call_id, planned.step, planned.branch, replica)
                replan = False
                if state.done():
                    break
                timeout = None if deadline is None else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    raise TimeoutError
                async with asyncio.timeout(timeout):
                    message = await queue.get()
                if isinstance(message, _Delta):
                    if first_answer_at is None:
                        first_answer_at = time.monotonic()
                    yield AnswerDelta(message.delta.text, message.delta.token_ids)
                elif isinstance(message, _Done):
                    in_flight.pop(message.call.call_id, None)
                    replan = True
                    if message.call.answer and first_answer_at is None:
                        first_answer_at = message.dispatched_at + message.result.timings.ttft
                    record = CallRecord(
                        call_id=message.call.call_id,
                        step=message.call.step,
                        branch=message.call.branch,
                        replica=message.replica,
                        usage=message.result.usage,
                        timings=message.result.timings,
                        finish_reason=message.result.finish_reason,
                        after=message.call.after,
                        dispatch_to_result=message.finished_at - message.dispatched_at,
                    )
                    state.finish(message.call, message.result, record)
                    yield StepFinished(record)
                else:
                    in_flight.pop(message.call.call_id, None)
                    raise TaskFailed(
                        message.error.code,
                        f"step {message.call.step!r} (call {message.call.call_id}) failed: "
                        f"{message.error.message}",
                        self._usage(state, accepted_at, first_answer_at),
                    )
        except TimeoutError:
            await _cancel_all(in_flight)
            raise TaskFailed(
                ErrorCode.DEADLINE_EXCEEDED,
                f"task {state.task_id} exceeded its deadline of "
                f"{state.spec.deadline_s:.3f} s; its outstanding calls were aborted",
                self._usage(state, accepted_at, first_answer_at),
            ) from None
        finally:
            # Completion leaves nothing in flight; failure and cancellation abort the rest.
            await _cancel_all(in_flight)

        usage = self._usage(state, accepted_at, first_answer_at)
        yield TaskCompleted(
            TaskResult(
                task_id=state.task_id,
                agent=state.program.name,
                answer=state.answer_text(),
                usage=usage,
                calls=tuple(state.records()),
            )
        )

    def _choose(self, planned: PlannedCall) -> str:
        request = CallRequest(planned.call_id, planned.prompt_token_ids, planned.sampling)
        try:
            return self._router.choose(request, self._dispatcher.views())
        except NoReplicaAvailable as exc:
            raise TaskFailed(ErrorCode.UNAVAILABLE, str(exc)) from exc

    def _usage(
        self, state: TaskState, accepted_at: float, first_answer_at: float | None
    ) -> TaskUsage:
        now = time.monotonic()
        answer = state.answer_record()
        return task_usage(
            state.records(),
            user_input_tokens=state.user_input_tokens,
            final_output_tokens=answer.usage.output_tokens if answer else 0,
            task_ttft=(first_answer_at - accepted_at) if first_answer_at is not None else 0.0,
            task_latency=now - accepted_at,
        )

    async def _dispatch(
        self, planned: PlannedCall, replica: str, queue: asyncio.Queue[_Message], stream: bool
    ) -> None:
        request = CallRequest(planned.call_id, planned.prompt_token_ids, planned.sampling)
        started = time.monotonic()
        try:
            if stream:
                result: CallResult | None = None
                async with contextlib.aclosing(self._dispatcher.stream(replica, request)) as deltas:
                    async for item in deltas:
                        if isinstance(item, CallResult):
                            result = item
                        else:
                            queue.put_nowait(_Delta(planned, item))
                if result is None:
                    raise EngineError(ErrorCode.INTERNAL, "stream ended without a result")
            else:
                result = await self._dispatcher.call(replica, request)
        except EngineError as exc:
            queue.put_nowait(_Failed(planned, exc))
            return
        queue.put_nowait(_Done(planned, replica, result, started, time.monotonic()))

    async def generate(self, spec: GenerateSpec) -> AsyncGenerator[GenerateOutput, None]:
        """One plain call on one replica; the last output carries the call record."""
        ids = spec.prompt_token_ids or tuple(self._tokenizer.encode(spec.prompt))
        if not ids:
            raise TaskFailed(ErrorCode.INVALID_ARGUMENT, "prompt: encodes to no tokens")
        limit = self._dispatcher.max_model_len
        if len(ids) + spec.sampling.max_tokens > limit:
            raise TaskFailed(
                ErrorCode.INVALID_ARGUMENT,
                f"prompt: {len(ids)} tokens plus max_tokens {spec.sampling.max_tokens} "
                f"exceed the model's max_model_len of {limit}",
            )
        call_id = f"gen-{uuid.uuid4().hex[:12]}"
        request = CallRequest(call_id, ids, spec.sampling)
        try:
            replica = self._router.choose(request, self._dispatcher.views())
        except NoReplicaAvailable as exc:
            raise TaskFailed(ErrorCode.UNAVAILABLE, str(exc)) from exc
        started = time.monotonic()
        try:
            async with (
                asyncio.timeout(spec.deadline_s),
                contextlib.aclosing(self._dispatcher.stream(replica, request)) as stream,
            ):
                async for item in stream:
                    if isinstance(item, CallResult):
                        yield GenerateOutput(
                            text="",
                            token_ids=(),
                            call=CallRecord(
                                call_id=call_id,
                                step="generate",
                                branch=0,
                                replica=replica,
                                usage=item.usage,
                                timings=item.timings,
                                finish_reason=item.finish_reason,
                                after=(),
                                dispatch_to_result=time.monotonic() - started,
                            ),
                        )
                    else:
                        yield GenerateOutput(text=item.text, token_ids=item.token_ids)
        except TimeoutError:
            raise TaskFailed(
                ErrorCode.DEADLINE_EXCEEDED,
                f"generation exceeded its deadline of {spec.deadline_s:.3f} s and was aborted",
            ) from None
        except EngineError as exc:
            raise TaskFailed(exc.code, exc.message) from exc


async def _cancel_all(in_flight: dict[str, asyncio.Task[None]]) -> None:
    tasks: Sequence[asyncio.Task[None]] = list(in_flight.values())
    in_flight.clear()
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
