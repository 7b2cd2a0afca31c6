"""The executor: runs agent programs (and plain generations) on the replica pool.

It is the live shell around the pure task driver (driver.py), which makes every
decision about a task; the executor carries the driver's commands out with asyncio
tasks (calls on Ray replicas, tool runs) and feeds their outcomes back through one
queue per task. Every way out of a task (completion, failure, deadline, the client
going away) cancels its outstanding calls, which aborts them in the engines.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
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
    TaskAccepted,
    TaskCompleted,
    TaskEvent,
    TaskSpec,
    TaskUsage,
)
from orchestrator.executor.accounting import aborted_call, task_usage
from orchestrator.executor.admission import (
    Admission,
    AdmissionRefused,
    ClusterLoad,
    Ticket,
    cluster_load,
)
from orchestrator.executor.driver import (
    Cancel,
    Dispatch,
    DriverLimits,
    Emit,
    RunTool,
    TaskDriver,
    TaskFailed,
    filler_tokens,
    prepare_task,
    simulated_tool_outcome,
)
from orchestrator.executor.estimate import SAMPLE_INPUT, describe, expect
from orchestrator.executor.interpreter import (
    Action,
    Encoder,
    Interpreter,
    Outcome,
    TaskProgress,
)
from orchestrator.executor.observer import Observer, TaskOutcome
from orchestrator.replicas.engine import EngineError
from orchestrator.routing import (
    NoReplicaAvailable,
    PrioritySettings,
    ReplicaView,
    Router,
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


@dataclass(slots=True, frozen=True)
class _Delta:
    call_id: str
    delta: CallDelta


@dataclass(slots=True, frozen=True)
class _Done:
    action_id: str
    result: CallResult


@dataclass(slots=True, frozen=True)
class _ToolDone:
    action_id: str
    outcome: Outcome
    ok: bool


@dataclass(slots=True, frozen=True)
class _Failed:
    action_id: str
    error: EngineError
    retryable: bool = True  # False: the shell knows a retry cannot help
    tool: bool = False


@dataclass(slots=True, frozen=True)
class _Stopped:
    """A drain ran out of time: the task ends now with its partial usage."""

    message: str  # the failure the client gets


_Message = _Delta | _Done | _ToolDone | _Failed | _Stopped

# UNAVAILABLE from a draining server: the retry hint, seconds. Short, since a retry
# through a load balancer lands on another server at once.
DRAIN_RETRY_AFTER_S = 1.0
# After a drain's timeout, how long the tasks it stopped get to end (abort their calls
# and report their usage) before the drain returns anyway.
DRAIN_STOP_GRACE_S = 5.0

# Samples behind the expected figures ListAgents reports.
_EXPECTATION_SAMPLES = 200
_EXPECTATION_INPUT = SAMPLE_INPUT


def draining_refusal() -> TaskFailed:
    """What a task or generation that arrives during a drain fails with."""
    return TaskFailed(
        ErrorCode.UNAVAILABLE,
        "the server is draining (shutting down); retry on another server or after it restarts",
        retry_after_s=DRAIN_RETRY_AFTER_S,
    )


@dataclass(slots=True, eq=False)
class _Live:
    """A task or generation in flight, as a drain sees it (one per run, by identity)."""

    stopped: str | None = None  # why a drain stopped it; None while it may run on
    queue: asyncio.Queue[_Message] | None = None  # a task's: the stop arrives as a message
    timer: asyncio.Timeout | None = None  # a generation's current read of its engine

    def stop(self, message: str) -> None:
        """End it now with `message`, through the same path as a deadline: its calls are
        aborted and its partial usage reported."""
        self.stopped = message
        if self.queue is not None:
            self.queue.put_nowait(_Stopped(message))
        if self.timer is not None:
            with contextlib.suppress(RuntimeError):  # the read already ended
                self.timer.reschedule(asyncio.get_running_loop().time())


@dataclass(slots=True, frozen=True)
class Drained:
    """How a drain went."""

    in_flight: int  # tasks and generations running when it began
    cancelled: int  # of those, still running at the timeout, and stopped
    seconds: float  # from its start until the last of them ended


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
    """The live shell around the task driver (driver.py): admission, asyncio tasks for
    the calls and tools the driver dispatches, and the event stream a client watches."""

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
        observer: Observer | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        # Told of every task and call that ends (the server's Prometheus metrics).
        self._observer: Observer = observer or _Unobserved()
        self._router = router
        self._priority = priority or PrioritySettings()
        self.admission = Admission(admission or AdmissionConfig(), self._load)
        self._encoder = Encoder(tokenizer.encode, tokenizer.bos_token_id)
        self._interpreters = {
            name: Interpreter(program, self._encoder) for name, program in programs.items()
        }
        self._limits = DriverLimits(max_concurrent_calls_per_task, max_retries)
        self._filler = filler_tokens(self._encoder)
        self._infos: dict[str, AgentInfo] = {}
        # Tasks and generations in flight, for a drain; set while there are none.
        self._live: set[_Live] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False

    def _load(self) -> ClusterLoad:
        """The healthy replicas' load, for admission."""
        return cluster_load(self._dispatcher.views(), self._router.outstanding_tokens())

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
        task_id = f"task-{uuid.uuid4().hex[:12]}"
        return prepare_task(self._interpreters, spec, task_id, self._dispatcher.max_model_len)

    @property
    def draining(self) -> bool:
        """True once `drain` began: new tasks and generations are refused."""
        return self._draining

    @property
    def in_flight(self) -> int:
        """Tasks and generations running now."""
        return len(self._live)

    async def drain(self, timeout_s: float) -> Drained:
        """Refuse new tasks and generations from now on (UNAVAILABLE with a retry hint)
        and wait up to `timeout_s` for those in flight to finish; then stop the rest,
        each failing UNAVAILABLE with its partial usage (its calls aborted, as at a
        deadline). Returns once none runs (or DRAIN_STOP_GRACE_S after the stop)."""
        self._draining = True
        loop = asyncio.get_running_loop()
        started = loop.time()
        in_flight = len(self._live)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        stopped = list(self._live)
        message = (
            "the server is draining (shutting down) and stopped this request at its drain "
            f"timeout of {timeout_s:g} s; its outstanding calls were aborted (retry on "
            "another server or after it restarts)"
        )
        for live in stopped:
            live.stop(message)
        if stopped:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_STOP_GRACE_S):
                    await self._idle.wait()
        return Drained(in_flight, len(stopped), loop.time() - started)

    def _enter(self) -> _Live:
        if self._draining:
            raise draining_refusal()
        live = _Live()
        self._live.add(live)
        self._idle.clear()
        return live

    def _leave(self, live: _Live) -> None:
        self._live.discard(live)
        if not self._live:
            self._idle.set()

    async def run(
        self, task: TaskProgress, *, stream_answer: bool = True
    ) -> AsyncGenerator[TaskEvent, None]:
        """Run a prepared task, yielding its events; raises TaskFailed on failure (at
        once, UNAVAILABLE with a retry hint, while the executor drains).

        stream_answer=False (the unary `Run`): the answer call returns whole, like every
        other call, and no AnswerDelta is yielded; streaming tokens through Ray that no
        client watches costs more CPU than the engine spends producing them. task_ttft is
        then when the engine produced the first answer token (dispatch + engine TTFT).
        """
        live = self._enter()
        outcome, usage = TaskOutcome.CANCELLED, None  # unless it completes or fails
        try:
            async with contextlib.aclosing(self._run(task, live, stream_answer)) as events:
                async for event in events:
                    if isinstance(event, TaskCompleted):
                        outcome, usage = TaskOutcome.OK, event.result.usage
                    yield event
        except TaskFailed as exc:
            outcome, usage = TaskOutcome.of(exc.code), exc.usage
            raise
        finally:
            self._leave(live)
            self._observer.task_ended(task.program.name, outcome, usage)

    async def _run(
        self, task: TaskProgress, live: _Live, stream_answer: bool
    ) -> AsyncGenerator[TaskEvent, None]:
        driver = TaskDriver(
            self._interpreters[task.program.name],
            task,
            self._router,
            self._dispatcher.views,
            accepted_at=time.monotonic(),
            limits=self._limits,
            priority=self._priority,
            stream_answer=stream_answer,
        )
        # Its first call's weight, held against the bound until the router books it.
        ticket = await self._admit(driver.reservation, driver.deadline)
        admitted_at = time.monotonic()
        if live.stopped is not None:  # the drain ran out while the task was queued
            ticket.release()
            self.admission.departed()
            raise TaskFailed(ErrorCode.UNAVAILABLE, live.stopped)
        queue: asyncio.Queue[_Message] = asyncio.Queue()
        live.queue = queue
        yield TaskAccepted(task_id=task.task_id, agent=task.program.name)
        in_flight: dict[str, asyncio.Task[None]] = {}
        streams: dict[str, _StreamedOutput] = {}  # what each streaming call has sent
        try:
            commands = driver.start(time.monotonic())
            ticket.release()
            while True:
                for command in commands:
                    if isinstance(command, Dispatch):
                        self._observer.call_routed(command.replica)
                        output = streams.setdefault(command.action.action_id, _StreamedOutput())
                        work = self._call(command, queue, output)
                        in_flight[command.action.action_id] = asyncio.create_task(work)
                    elif isinstance(command, RunTool):
                        work = self._run_tool(command.action, queue)
                        in_flight[command.action.action_id] = asyncio.create_task(work)
                    elif isinstance(command, Emit):
                        yield command.event
                    elif isinstance(command, Cancel):
                        await _cancel_all(in_flight)
                    elif command.failure is not None:
                        raise command.failure
                    else:
                        assert command.result is not None
                        # Its run time sets how long a queued task may wait (admission).
                        self.admission.finished(time.monotonic() - admitted_at)
                        yield TaskCompleted(command.result)
                        return
                timeout = None if driver.deadline is None else driver.deadline - time.monotonic()
                try:
                    if timeout is not None and timeout <= 0:
                        raise TimeoutError
                    async with asyncio.timeout(timeout):
                        message = await queue.get()
                except TimeoutError:
                    commands = driver.expire(time.monotonic())
                    continue
                now = time.monotonic()
                if isinstance(message, _Stopped):
                    commands = driver.interrupt(message.message, now)
                    continue
                if isinstance(message, _Delta):
                    driver.answer_streamed(message.call_id, len(message.delta.token_ids), now)
                    commands = []
                    yield AnswerDelta(message.delta.text, message.delta.token_ids)
                    continue
                in_flight.pop(message.action_id, None)
                if isinstance(message, _Done):
                    self.admission.call_done(message.result)
                    commands = driver.call_done(message.action_id, message.result, now)
                elif isinstance(message, _ToolDone):
                    commands = driver.tool_done(message.action_id, message.outcome, message.ok, now)
                elif message.tool:
                    commands = driver.tool_failed(message.action_id, message.error.message, now)
                else:
                    commands = driver.call_failed(
                        message.action_id, message.error, now, retryable=message.retryable
                    )
                # A call that ended left the router's book: queued tasks may fit now.
                self.admission.wake()
        finally:
            # Completion leaves nothing in flight; failure and cancellation abort the rest.
            driver.abandon()
            await _cancel_all(in_flight)
            ticket.release()
            self.admission.departed()
            self.admission.wake()

    async def _call(
        self, dispatch: Dispatch, queue: asyncio.Queue[_Message], output: _StreamedOutput
    ) -> None:
        """One attempt of one call; how it ended goes to the driver's queue."""
        call_id = dispatch.action.action_id
        observer, replica = self._observer, dispatch.replica
        try:
            result = await self._attempt(dispatch, queue, output)
        except asyncio.CancelledError:
            observer.call_ended(replica, None, TaskOutcome.CANCELLED)
            raise
        except _Diverged:
            observer.call_ended(replica, None, TaskOutcome.UNAVAILABLE)
            # The client holds a prefix this retry contradicts: stop, never resend.
            error = EngineError(
                ErrorCode.UNAVAILABLE,
                f"its replica failed after {len(output.sent_ids)} answer tokens were "
                f"streamed, and the retry on {dispatch.replica} generated a different "
                "answer; the task stopped so that the streamed text is not contradicted "
                "(run it again; a seeded task's retries regenerate the same tokens)",
            )
            queue.put_nowait(_Failed(call_id, error, retryable=False))
        except Exception as exc:  # noqa: BLE001 (every failure must reach the driver)
            if not isinstance(exc, EngineError):
                exc = EngineError(ErrorCode.INTERNAL, f"call failed: {exc!r}")
            observer.call_ended(replica, None, TaskOutcome.of(exc.code))
            queue.put_nowait(_Failed(call_id, exc))
        else:
            observer.call_ended(replica, result, TaskOutcome.OK)
            queue.put_nowait(_Done(call_id, result))

    async def _attempt(
        self, dispatch: Dispatch, queue: asyncio.Queue[_Message], output: _StreamedOutput
    ) -> CallResult:
        if not dispatch.stream:
            return await self._dispatcher.call(dispatch.replica, dispatch.request)
        call_id = dispatch.action.action_id
        result: CallResult | None = None
        output.restart()
        stream = self._dispatcher.stream(dispatch.replica, dispatch.request)
        async with contextlib.aclosing(stream) as deltas:
            async for item in deltas:
                if isinstance(item, CallResult):
                    result = item
                else:
                    new = output.feed(item)
                    if new is not None:
                        queue.put_nowait(_Delta(call_id, new))
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
            queue.put_nowait(_Failed(action.action_id, error, tool=True))

    async def _tool(self, action: Action, queue: asyncio.Queue[_Message]) -> None:
        if action.tool is None:
            await asyncio.sleep(action.latency_s)
            outcome = simulated_tool_outcome(action, self._filler)
            ok = True
        else:
            tool = get_tool(action.tool)
            result = await asyncio.to_thread(
                tool.run, action.argument, time_limit_s=action.time_limit_s
            )
            outcome = Outcome(self._encoder(result.text), result.text)
            ok = result.ok
        queue.put_nowait(_ToolDone(action.action_id, outcome, ok))

    async def generate(self, spec: GenerateSpec) -> AsyncGenerator[GenerateOutput, None]:
        """One plain call on one replica; the last output carries the call record.
        Raises TaskFailed (at once, UNAVAILABLE with a retry hint, while draining)."""
        live = self._enter()
        try:
            async with contextlib.aclosing(self._generate(spec, live)) as outputs:
                async for output in outputs:
                    yield output
        finally:
            self._leave(live)

    async def _generate(
        self, spec: GenerateSpec, live: _Live
    ) -> AsyncGenerator[GenerateOutput, None]:
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
            self.admission.departed()
            raise TaskFailed(ErrorCode.UNAVAILABLE, str(exc)) from exc
        finally:
            ticket.release()
        self._observer.call_routed(replica)
        ended = TaskOutcome.CANCELLED  # unless it completes or fails
        output: list[int] | None = []
        try:
            async with contextlib.aclosing(self._dispatcher.stream(replica, request)) as stream:
                while True:
                    # The deadline bounds each read of the engine, never a `yield`: a
                    # timeout firing while the consumer is suspended (the servicer
                    # writing to a slow client) cancels the consumer itself, and the
                    # client then never gets a status.
                    if live.stopped is not None:
                        raise TimeoutError
                    async with asyncio.timeout(_time_left(deadline)) as live.timer:
                        item = await anext(stream, None)
                    live.timer = None
                    if item is None:
                        break
                    if isinstance(item, CallResult):
                        ended = TaskOutcome.OK
                        self._observer.call_ended(replica, item, ended)
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
            code = ErrorCode.DEADLINE_EXCEEDED if live.stopped is None else ErrorCode.UNAVAILABLE
            ended = TaskOutcome.of(code)
            raise TaskFailed(
                code,
                f"generation exceeded its deadline of {spec.deadline_s:.3f} s and was aborted"
                if live.stopped is None
                else live.stopped,
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
            ended = TaskOutcome.of(exc.code)
            raise TaskFailed(exc.code, exc.message) from exc
        finally:
            if ended is not TaskOutcome.OK:  # a completed call was told with its result
                self._observer.call_ended(replica, None, ended)
            self._router.finished(call_id, output)
            self.admission.departed()
            self.admission.wake()


class _Unobserved:
    """The observer of an executor nobody observes."""

    def task_ended(self, agent: str, outcome: TaskOutcome, usage: TaskUsage | None) -> None:
        pass

    def call_routed(self, replica: str) -> None:
        pass

    def call_ended(self, replica: str, result: CallResult | None, outcome: TaskOutcome) -> None:
        pass


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
