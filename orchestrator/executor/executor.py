"""The executor: runs agent programs (and plain generations) on the replica pool.

One driver loop per task owns its progress: it asks the pure planner (plan.py) what to
run, dispatches those calls, and feeds their results back; call coroutines only report
into the driver's queue. Every way out of the loop (completion, failure, deadline, the
client going away) cancels the task's outstanding calls, which aborts them in the engines.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from agents.dsl import Program
from agents.tools import get_tool
from orchestrator.config import AdmissionConfig
from orchestrator.domain import (
    AgentInfo,
    AnswerDelta,
    CallDelta,
    CallRecord,
    CallRequest,
    CallResult,
    ErrorCode,
    GenerateOutput,
    GenerateSpec,
    StepFinished,
    StepKind,
    StepStarted,
    TaskAccepted,
    TaskCompleted,
    TaskEvent,
    TaskResult,
    TaskSpec,
    TaskUsage,
    ToolRecord,
)
from orchestrator.executor.accounting import aborted_call, task_usage
from orchestrator.executor.admission import Admission, AdmissionRefused, Ticket
from orchestrator.executor.estimate import SAMPLE_INPUT, describe, dry_run, expect
from orchestrator.executor.interpreter import (
    Action,
    ActionKind,
    Encoder,
    Interpreter,
    Outcome,
    TaskProgress,
)
from orchestrator.replicas.engine import EngineError
from orchestrator.routing import (
    NoReplicaAvailable,
    PrioritySettings,
    ReplicaView,
    Router,
    TaskService,
)


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

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        usage: TaskUsage | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(code, message, usage, retry_after_s)
        self.code = code
        self.message = message
        self.usage = usage
        self.retry_after_s = retry_after_s  # RESOURCE_EXHAUSTED: when to try again

    def __str__(self) -> str:
        return self.message


@dataclass(slots=True, frozen=True)
class _Delta:
    action: Action
    delta: CallDelta


@dataclass(slots=True, frozen=True)
class _Done:
    action: Action
    replica: str
    result: CallResult
    dispatched_at: float  # monotonic, in this process
    finished_at: float
    retries: int  # re-dispatches after replicas failed


@dataclass(slots=True, frozen=True)
class _ToolDone:
    action: Action
    token_ids: tuple[int, ...]
    text: str
    ok: bool
    elapsed: float


@dataclass(slots=True, frozen=True)
class _Failed:
    action: Action
    error: EngineError


_Message = _Delta | _Done | _ToolDone | _Failed

# Tokens an admitted task reserves beyond its input until its first call is routed.
_FIRST_CALL_RESERVE = 256

# Samples behind the expected figures ListAgents reports.
_EXPECTATION_SAMPLES = 200
_EXPECTATION_INPUT = SAMPLE_INPUT


@dataclass(slots=True, frozen=True)
class _Running:
    """An LLM call dispatched and not yet ended, as the driver knows it."""

    action: Action
    replica: str  # the first replica chosen (a retry may move it)
    dispatched_at: float  # monotonic


@dataclass(slots=True)
class _Accounts:
    """The driver's record of a running task."""

    calls: list[CallRecord]
    tools: list[ToolRecord]
    retried_calls: int = 0
    # By call id; on failure these are aborted and still count in the partial usage.
    running: dict[str, _Running] = field(default_factory=dict)
    # Answer tokens already sent to the client, by call id.
    streamed: dict[str, int] = field(default_factory=dict)

    def abort_running(self, now: float) -> None:
        """Record every call still running as aborted (the task is failing)."""
        for call_id, running in self.running.items():
            action = running.action
            self.calls.append(
                aborted_call(
                    call_id,
                    step=action.step,
                    branch=action.branch,
                    replica=running.replica,
                    prompt_tokens=len(action.prompt_token_ids),
                    output_tokens=self.streamed.get(call_id, 0),
                    after=action.after,
                    elapsed=now - running.dispatched_at,
                )
            )
        self.running.clear()


class _Diverged(Exception):
    """A retried streaming call generated output other than what the client already has."""


class _StreamedOutput:
    """What one streaming call has sent to the client, across its attempts.

    A retry after a replica died mid-stream starts again from token 0. Its output is
    checked against what was sent (tokens and text), and only what lies beyond goes out,
    so the client never receives a token twice; output that differs raises _Diverged.
    """

    def __init__(self) -> None:
        self.sent_ids: list[int] = []
        self.sent_text = ""
        self._ids: list[int] = []  # this attempt's output so far
        self._text = ""

    def restart(self) -> None:
        self._ids = []
        self._text = ""

    def feed(self, delta: CallDelta) -> CallDelta | None:
        """This attempt's next delta -> what is new to the client (None: nothing)."""
        self._ids.extend(delta.token_ids)
        self._text += delta.text
        # Where the two overlap, they must agree (chunk boundaries may differ).
        n = min(len(self._ids), len(self.sent_ids))
        chars = min(len(self._text), len(self.sent_text))
        if self._ids[:n] != self.sent_ids[:n] or self._text[:chars] != self.sent_text[:chars]:
            raise _Diverged
        new_ids = self._ids[len(self.sent_ids) :]
        new_text = self._text[len(self.sent_text) :]
        if not new_ids and not new_text:
            return None
        self.sent_ids.extend(new_ids)
        self.sent_text += new_text
        return CallDelta(tuple(new_ids), new_text)

    def check(self, result: CallResult) -> None:
        """The attempt's final output must extend what was sent."""
        sent = len(self.sent_ids)
        if list(result.token_ids[:sent]) != self.sent_ids:
            raise _Diverged


class Executor:
    def __init__(
        self,
        dispatcher: Dispatcher,
        router: Router,
        tokenizer: Tokenizer,
        programs: Mapping[str, Program],
        *,
        max_concurrent_calls_per_task: int = 32,
        max_retries: int = 2,
        priority: PrioritySettings | None = None,
        admission: AdmissionConfig | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._router = router
        self._priority = priority or PrioritySettings()
        self.admission = Admission(admission or AdmissionConfig(), self._load)
        self._encoder = Encoder(tokenizer.encode, tokenizer.bos_token_id)
        self._interpreters = {
            name: Interpreter(program, self._encoder) for name, program in programs.items()
        }
        self._max_running = max_concurrent_calls_per_task
        self._max_retries = max_retries
        # Token ids standing in for a simulated tool's result.
        self._filler = self._encoder(" result row: value, source, note;" * 8)
        self._infos: dict[str, AgentInfo] = {}

    def _load(self) -> tuple[int, int]:
        """(tokens outstanding on healthy replicas, healthy replicas), for admission."""
        healthy = [v.name for v in self._dispatcher.views() if v.healthy]
        booked = self._router.outstanding_tokens()
        return sum(booked.get(name, 0) for name in healthy), len(healthy)

    async def _admit(self, tokens: int, deadline: float | None) -> Ticket:
        try:
            return await self.admission.admit(tokens, deadline)
        except AdmissionRefused as exc:
            raise TaskFailed(exc.code, exc.message, retry_after_s=exc.retry_after_s) from None

    @property
    def programs(self) -> Mapping[str, Program]:
        return {name: it.program for name, it in self._interpreters.items()}

    @property
    def max_model_len(self) -> int:
        """The model's context length, for the server's checks before any per-token work."""
        return self._dispatcher.max_model_len

    def info(self, name: str) -> AgentInfo:
        """A program's description with its expected cost per task (cached)."""
        if name not in self._infos:
            interpreter = self._interpreters[name]
            expected = expect(
                interpreter,
                TaskSpec(agent=name, input=_EXPECTATION_INPUT),
                samples=_EXPECTATION_SAMPLES,
            )
            self._infos[name] = describe(interpreter.program, expected)
        return self._infos[name]

    def prepare(self, spec: TaskSpec) -> TaskProgress:
        """Validate a task against the program and the model; raises TaskFailed."""
        interpreter = self._interpreters.get(spec.agent)
        if interpreter is None:
            known = ", ".join(sorted(self._interpreters))
            raise TaskFailed(
                ErrorCode.NOT_FOUND, f"unknown agent {spec.agent!r}; known agents: {known}"
            )
        seed = spec.seed if spec.seed is not None else secrets.randbits(48)
        task_id = f"task-{uuid.uuid4().hex[:12]}"
        # The synthetic shape of this very seed: exact in synthetic mode, an estimate in
        # live mode (calls there stop at end-of-sequence and are usually shorter).
        shape = dry_run(interpreter, spec, seed)
        limit = self._dispatcher.max_model_len
        if shape.max_context > limit:
            raise TaskFailed(
                ErrorCode.INVALID_ARGUMENT,
                f"input: {shape.user_input_tokens} tokens of input make agent {spec.agent!r} "
                f"need up to {shape.max_context} tokens of context (input + its steps' "
                f"prompts and max_tokens), over the model's max_model_len of {limit}; "
                f"shorten the input or lower max_tokens",
            )
        return interpreter.start(task_id, spec, seed)

    async def run(
        self, task: TaskProgress, *, stream_answer: bool = True
    ) -> AsyncGenerator[TaskEvent, None]:
        """Run a prepared task, yielding its events; raises TaskFailed on failure.

        stream_answer=False (the unary `Run`): the answer call returns whole, like every
        other call, and no AnswerDelta is yielded; streaming tokens through Ray that no
        client watches costs more CPU than the engine spends producing them. task_ttft is
        then when the engine produced the first answer token (dispatch + engine TTFT).
        """
        interpreter = self._interpreters[task.program.name]
        accepted_at = time.monotonic()
        first_answer_at: float | None = None
        accounts = _Accounts([], [])
        deadline = accepted_at + task.spec.deadline_s if task.spec.deadline_s else None
        # Its first call's weight, held against the bound until the router books it.
        ticket = await self._admit(task.user_input_tokens + _FIRST_CALL_RESERVE, deadline)
        yield TaskAccepted(task_id=task.task_id, agent=task.program.name)
        queue: asyncio.Queue[_Message] = asyncio.Queue()
        in_flight: dict[str, asyncio.Task[None]] = {}
        service = TaskService(accepted_at, deadline)
        routed: list[str] = []  # LLM calls handed to the router

        def failed(code: ErrorCode, message: str) -> TaskFailed:
            # The calls still running are about to be aborted: they count as such.
            accounts.abort_running(time.monotonic())
            usage = self._usage(task, accounts, accepted_at, first_answer_at)
            return TaskFailed(code, message, usage)

        # Only a finished action changes what can run next; deltas do not.
        replan = True
        try:
            while True:
                if replan:
                    budget = self._max_running - task.running
                    priority = service.priority(self._priority, time.monotonic())
                    for action in interpreter.advance(task, budget):
                        replica = ""
                        if action.kind is ActionKind.LLM:
                            replica = self._choose(action, frozenset(), task.task_id, priority)
                            routed.append(action.action_id)
                            stream = action.answer and stream_answer
                            accounts.running[action.action_id] = _Running(
                                action, replica, time.monotonic()
                            )
                            work = self._dispatch(
                                action, replica, queue, stream, deadline, task.task_id, priority
                            )
                        else:
                            work = self._run_tool(action, queue)
                        in_flight[action.action_id] = asyncio.create_task(work)
                        kind = StepKind.LLM if action.kind is ActionKind.LLM else StepKind.TOOL
                        yield StepStarted(
                            action.action_id, action.step, action.branch, replica, kind
                        )
                    replan = False
                    ticket.release()
                if task.done:
                    break
                timeout = None if deadline is None else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    raise TimeoutError
                async with asyncio.timeout(timeout):
                    message = await queue.get()
                if isinstance(message, _Delta):
                    if first_answer_at is None:
                        first_answer_at = time.monotonic()
                    call_id = message.action.action_id
                    sent = accounts.streamed.get(call_id, 0)
                    accounts.streamed[call_id] = sent + len(message.delta.token_ids)
                    yield AnswerDelta(message.delta.text, message.delta.token_ids)
                    continue
                in_flight.pop(message.action.action_id, None)
                accounts.running.pop(message.action.action_id, None)
                replan = True
                if isinstance(message, _Failed):
                    raise failed(
                        message.error.code,
                        f"step {message.action.step!r} (call {message.action.action_id}) "
                        f"failed: {message.error.message}",
                    )
                if isinstance(message, _ToolDone):
                    tool = ToolRecord(
                        tool_id=message.action.action_id,
                        step=message.action.step,
                        branch=message.action.branch,
                        tool=message.action.tool or "simulated",
                        ok=message.ok,
                        elapsed=message.elapsed,
                        result_tokens=len(message.token_ids),
                        after=message.action.after,
                    )
                    accounts.tools.append(tool)
                    service.finished(message.action.action_id, message.action.after, 0.0)
                    interpreter.complete(
                        task, message.action.action_id, Outcome(message.token_ids, message.text)
                    )
                    yield StepFinished(call=None, tool=tool)
                    continue
                if message.action.answer and first_answer_at is None:
                    first_answer_at = message.dispatched_at + message.result.timings.ttft
                record = CallRecord(
                    call_id=message.action.action_id,
                    step=message.action.step,
                    branch=message.action.branch,
                    replica=message.replica,
                    usage=message.result.usage,
                    timings=message.result.timings,
                    finish_reason=message.result.finish_reason,
                    after=message.action.after,
                    dispatch_to_result=message.finished_at - message.dispatched_at,
                )
                accounts.calls.append(record)
                accounts.retried_calls += message.retries
                service.finished(
                    message.action.action_id, message.action.after, message.result.timings.e2e
                )
                interpreter.complete(
                    task,
                    message.action.action_id,
                    Outcome(message.result.token_ids, message.result.text),
                )
                yield StepFinished(record)
        except TimeoutError:
            await _cancel_all(in_flight)
            raise failed(
                ErrorCode.DEADLINE_EXCEEDED,
                f"task {task.task_id} exceeded its deadline of "
                f"{task.spec.deadline_s:.3f} s; its outstanding calls were aborted",
            ) from None
        finally:
            # Completion leaves nothing in flight; failure and cancellation abort the rest.
            await _cancel_all(in_flight)
            ticket.release()
            # A call cancelled before it started never reached _dispatch's own release.
            for call_id in routed:
                self._router.finished(call_id)
            self.admission.wake()

        yield TaskCompleted(
            TaskResult(
                task_id=task.task_id,
                agent=task.program.name,
                answer=task.answer_text,
                usage=self._usage(task, accounts, accepted_at, first_answer_at),
                calls=tuple(accounts.calls),
                tools=tuple(accounts.tools),
            )
        )

    def _choose(self, action: Action, exclude: frozenset[str], task_id: str, priority: int) -> str:
        assert action.sampling is not None
        request = CallRequest(
            action.action_id,
            action.prompt_token_ids,
            action.sampling,
            priority=priority,
            task_id=task_id,
        )
        try:
            return self._router.choose(request, self._dispatcher.views(), exclude)
        except NoReplicaAvailable as exc:
            raise TaskFailed(ErrorCode.UNAVAILABLE, str(exc)) from exc

    def _usage(
        self,
        task: TaskProgress,
        accounts: _Accounts,
        accepted_at: float,
        first_answer_at: float | None,
    ) -> TaskUsage:
        answer = next((c for c in accounts.calls if c.call_id == task.answer_id), None)
        return task_usage(
            accounts.calls,
            user_input_tokens=task.user_input_tokens,
            final_output_tokens=answer.usage.output_tokens if answer else 0,
            task_ttft=(first_answer_at - accepted_at) if first_answer_at is not None else 0.0,
            task_latency=time.monotonic() - accepted_at,
            retried_calls=accounts.retried_calls,
            tools=accounts.tools,
        )

    async def _dispatch(
        self,
        action: Action,
        replica: str,
        queue: asyncio.Queue[_Message],
        stream: bool,
        deadline: float | None,
        task_id: str,
        priority: int,
    ) -> None:
        """Run one call; on a replica failure (UNAVAILABLE) retry it on another replica,
        up to max_retries times. The router hears how it ended, whatever happens."""
        output: tuple[int, ...] | None = None
        try:
            output = await self._attempts(
                action, replica, queue, stream, deadline, task_id, priority
            )
        finally:
            self._router.finished(action.action_id, output)
            self.admission.wake()

    async def _attempts(
        self,
        action: Action,
        replica: str,
        queue: asyncio.Queue[_Message],
        stream: bool,
        deadline: float | None,
        task_id: str,
        priority: int,
    ) -> tuple[int, ...] | None:
        assert action.sampling is not None
        started = time.monotonic()
        failed_on: set[str] = set()
        output = _StreamedOutput()
        while True:
            remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
            request = CallRequest(
                action.action_id,
                action.prompt_token_ids,
                action.sampling,
                priority=priority,
                deadline_s=remaining,
                task_id=task_id,
            )
            try:
                result = await self._call(action, replica, request, queue, stream, output)
                break
            except asyncio.CancelledError:
                raise
            except _Diverged:
                # The client holds a prefix this retry contradicts: stop, never resend.
                error = EngineError(
                    ErrorCode.UNAVAILABLE,
                    f"its replica failed after {len(output.sent_ids)} answer tokens were "
                    f"streamed, and the retry on {replica} generated a different answer; the "
                    "task stopped so that the streamed text is not contradicted (run it "
                    "again; a seeded task's retries regenerate the same tokens)",
                )
                queue.put_nowait(_Failed(action, error))
                return None
            except Exception as exc:  # noqa: BLE001 (every failure must reach the driver)
                if not isinstance(exc, EngineError):
                    exc = EngineError(ErrorCode.INTERNAL, f"call failed: {exc!r}")
                retryable = exc.code is ErrorCode.UNAVAILABLE
                failed_on.add(replica)
                if not retryable or len(failed_on) > self._max_retries:
                    queue.put_nowait(_Failed(action, exc))
                    return None
                try:
                    replica = self._choose(action, frozenset(failed_on), task_id, priority)
                except TaskFailed:
                    queue.put_nowait(_Failed(action, exc))
                    return None
        retries = len(failed_on)
        queue.put_nowait(_Done(action, replica, result, started, time.monotonic(), retries))
        return result.token_ids

    async def _call(
        self,
        action: Action,
        replica: str,
        request: CallRequest,
        queue: asyncio.Queue[_Message],
        stream: bool,
        output: _StreamedOutput,
    ) -> CallResult:
        if not stream:
            return await self._dispatcher.call(replica, request)
        result: CallResult | None = None
        output.restart()
        async with contextlib.aclosing(self._dispatcher.stream(replica, request)) as deltas:
            async for item in deltas:
                if isinstance(item, CallResult):
                    result = item
                else:
                    new = output.feed(item)
                    if new is not None:
                        queue.put_nowait(_Delta(action, new))
        if result is None:
            raise EngineError(ErrorCode.INTERNAL, "stream ended without a result")
        output.check(result)
        return result

    async def _run_tool(self, action: Action, queue: asyncio.Queue[_Message]) -> None:
        try:
            await self._tool(action, queue)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 (every failure must reach the driver)
            error = EngineError(ErrorCode.INTERNAL, f"tool {action.tool!r} failed: {exc!r}")
            queue.put_nowait(_Failed(action, error))

    async def _tool(self, action: Action, queue: asyncio.Queue[_Message]) -> None:
        started = time.monotonic()
        if action.tool is None:
            await asyncio.sleep(action.latency_s)
            n = action.result_tokens
            ids = (self._filler * (n // len(self._filler) + 1))[:n]
            text = f"[simulated {action.step} result: {n} tokens]"
            ok = True
        else:
            tool = get_tool(action.tool)
            outcome = await asyncio.to_thread(
                tool.run, action.argument, time_limit_s=action.time_limit_s
            )
            text, ok = outcome.text, outcome.ok
            ids = self._encoder(text)
        queue.put_nowait(_ToolDone(action, ids, text, ok, time.monotonic() - started))

    async def generate(self, spec: GenerateSpec) -> AsyncGenerator[GenerateOutput, None]:
        """One plain call on one replica; the last output carries the call record."""
        ids = spec.prompt_token_ids or tuple(self._encoder(spec.prompt))
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
        started = time.monotonic()
        deadline = started + spec.deadline_s if spec.deadline_s is not None else None
        ticket = await self._admit(len(ids) + spec.sampling.max_tokens, deadline)
        try:
            replica = self._router.choose(request, self._dispatcher.views())
        except NoReplicaAvailable as exc:
            raise TaskFailed(ErrorCode.UNAVAILABLE, str(exc)) from exc
        finally:
            ticket.release()
        output: list[int] | None = []
        try:
            async with contextlib.aclosing(self._dispatcher.stream(replica, request)) as stream:
                while True:
                    # The deadline bounds each read of the engine, never a `yield`: a
                    # timeout firing while the consumer is suspended (the servicer
                    # writing to a slow client) cancels the consumer itself, and the
                    # client then never gets a status.
                    async with asyncio.timeout(_time_left(deadline)):
                        item = await anext(stream, None)
                    if item is None:
                        break
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
                        if output is not None:
                            output.extend(item.token_ids)
                        yield GenerateOutput(text=item.text, token_ids=item.token_ids)
        except TimeoutError:
            record = aborted_call(
                call_id,
                step="generate",
                branch=0,
                replica=replica,
                prompt_tokens=len(ids),
                output_tokens=len(output or ()),
                after=(),
                elapsed=time.monotonic() - started,
            )
            output = None
            raise TaskFailed(
                ErrorCode.DEADLINE_EXCEEDED,
                f"generation exceeded its deadline of {spec.deadline_s:.3f} s and was aborted",
                task_usage(
                    [record],
                    user_input_tokens=len(ids),
                    final_output_tokens=record.usage.output_tokens,
                    task_ttft=0.0,
                    task_latency=record.dispatch_to_result,
                ),
            ) from None
        except EngineError as exc:
            output = None
            raise TaskFailed(exc.code, exc.message) from exc
        finally:
            self._router.finished(call_id, output)
            self.admission.wake()


def _time_left(deadline: float | None) -> float | None:
    """Seconds until a monotonic deadline (None: no deadline); raises TimeoutError once it
    has passed, since a wait that completes without suspending never times out."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


async def _cancel_all(in_flight: dict[str, asyncio.Task[None]]) -> None:
    tasks: Sequence[asyncio.Task[None]] = list(in_flight.values())
    in_flight.clear()
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
