"""The task driver: every decision about one running task, as a pure state machine.

A `TaskDriver` owns what a task is, not how it waits: the interpreter's progress, the
per-task call budget, routing each call (with its priority), whether a failed call is
retried, the call and tool records, usage folding and the answer. It never awaits and
never reads a clock: each method takes `now` (seconds on the shell's clock) and returns
the `Command`s its shell must carry out, in order:

    Dispatch  send this call to this replica (a retry is a Dispatch with attempt > 0)
    RunTool   run this tool step
    Cancel    abort these calls and tools (the task failed or was abandoned)
    Emit      a StepStarted / StepFinished event for whoever watches the task
    Finish    the task ended: its result, or the TaskFailed it ended with

Outcomes come back as method calls: `call_done`, `call_failed`, `tool_done`,
`tool_failed`, `answer_streamed`, `expire` (the deadline passed), `abandon` (the client
went away). Reports about calls the driver no longer tracks (late, after a failure)
return nothing.

Shells: the asyncio executor (`executor.py`, live, on the replica pool) and the
fast-forward simulator (`orchestrator/sim/cluster.py`, on a virtual clock). The same
limits and settings give the same calls, prompts, priorities and usage in both.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from orchestrator.domain import (
    CallRecord,
    CallRequest,
    CallResult,
    ErrorCode,
    StepFinished,
    StepKind,
    StepStarted,
    TaskResult,
    TaskSpec,
    TaskUsage,
    ToolRecord,
)
from orchestrator.executor.accounting import aborted_call, task_usage
from orchestrator.executor.estimate import dry_run
from orchestrator.executor.interpreter import (
    Action,
    ActionKind,
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

# Tokens an admitted task reserves beyond its input until its first call is routed.
FIRST_CALL_RESERVE = 256


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
        # RESOURCE_EXHAUSTED, or UNAVAILABLE from a draining server: when to try again
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return self.message


@dataclass(slots=True, frozen=True)
class DriverLimits:
    """Per-task limits; the deployment's `limits` section sets them live, the
    simulation config's in the simulator."""

    max_concurrent_calls: int = 32  # calls of one task in flight at once
    max_retries: int = 2  # re-dispatches of a call whose replica failed


# ---- commands ------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Dispatch:
    action: Action
    request: CallRequest  # priority, task id and remaining deadline filled in
    replica: str
    stream: bool  # the answer, streamed to a watching client
    attempt: int = 0  # 0: the first dispatch; n: the n-th retry


@dataclass(slots=True, frozen=True)
class RunTool:
    action: Action


@dataclass(slots=True, frozen=True)
class Cancel:
    action_ids: tuple[str, ...]  # calls and tools still running


@dataclass(slots=True, frozen=True)
class Emit:
    event: StepStarted | StepFinished


@dataclass(slots=True, frozen=True)
class Finish:
    result: TaskResult | None = None  # set when the task completed
    failure: TaskFailed | None = None  # set when it failed


Command = Dispatch | RunTool | Cancel | Emit | Finish


# ---- simulated tools ------------------------------------------------------------------


def filler_tokens(encode: Callable[[str], tuple[int, ...]]) -> tuple[int, ...]:
    """Token ids standing in for a simulated tool's result."""
    return encode(" result row: value, source, note;" * 8)


def simulated_tool_outcome(action: Action, filler: tuple[int, ...]) -> Outcome:
    """What a simulated tool step returns: `result_tokens` filler tokens."""
    n = action.result_tokens
    ids = (filler * (n // len(filler) + 1))[:n]
    return Outcome(ids, f"[simulated {action.step} result: {n} tokens]")


# ---- preparing a task ------------------------------------------------------------------


def prepare_task(
    interpreters: dict[str, Interpreter],
    spec: TaskSpec,
    task_id: str,
    max_model_len: int,
    seed: int | None = None,
) -> TaskProgress:
    """Check a task against the programs and the model and start its progress; raises
    TaskFailed (NOT_FOUND for an unknown agent, INVALID_ARGUMENT when its context could
    outgrow the model)."""
    interpreter = interpreters.get(spec.agent)
    if interpreter is None:
        known = ", ".join(sorted(interpreters))
        raise TaskFailed(
            ErrorCode.NOT_FOUND, f"unknown agent {spec.agent!r}; known agents: {known}"
        )
    if seed is None:
        seed = spec.seed if spec.seed is not None else secrets.randbits(48)
    # The synthetic shape of this very seed: exact in synthetic mode, an estimate in
    # live mode (calls there stop at end-of-sequence and are usually shorter).
    shape = dry_run(interpreter, spec, seed)
    if shape.max_context > max_model_len:
        raise TaskFailed(
            ErrorCode.INVALID_ARGUMENT,
            f"input: {shape.user_input_tokens} tokens of input make agent {spec.agent!r} "
            f"need up to {shape.max_context} tokens of context (input + its steps' "
            f"prompts and max_tokens), over the model's max_model_len of {max_model_len}; "
            f"shorten the input or lower max_tokens",
        )
    return interpreter.start(task_id, spec, seed)


# ---- the driver ------------------------------------------------------------------------


@dataclass(slots=True)
class _Running:
    """An LLM call dispatched and not yet ended."""

    dispatch: Dispatch  # the latest attempt
    dispatched_at: float  # the first attempt's
    failed_on: frozenset[str] = frozenset()  # replicas an attempt failed on


@dataclass(slots=True)
class _Tool:
    action: Action
    started_at: float


@dataclass(slots=True)
class _Books:
    calls: list[CallRecord] = field(default_factory=list)
    tools: list[ToolRecord] = field(default_factory=list)
    retried_calls: int = 0
    running: dict[str, _Running] = field(default_factory=dict)
    tools_running: dict[str, _Tool] = field(default_factory=dict)
    streamed: dict[str, int] = field(default_factory=dict)  # answer tokens sent, by call
    first_answer_at: float | None = None


class TaskDriver:
    """One task, from admission to its result (module docstring)."""

    def __init__(
        self,
        interpreter: Interpreter,
        task: TaskProgress,
        router: Router,
        views: Callable[[], Sequence[ReplicaView]],
        *,
        accepted_at: float,
        limits: DriverLimits = DriverLimits(),
        priority: PrioritySettings | None = None,
        stream_answer: bool = False,
    ) -> None:
        self.task = task
        self._interpreter = interpreter
        self._router = router
        self._views = views
        self._limits = limits
        self._priority = priority or PrioritySettings()
        self._stream_answer = stream_answer
        self.accepted_at = accepted_at
        deadline_s = task.spec.deadline_s
        self.deadline = accepted_at + deadline_s if deadline_s else None
        self._service = TaskService(accepted_at, self.deadline)
        self._books = _Books()
        self.ended = False

    @property
    def reservation(self) -> int:
        """Tokens admission holds for the task until its first call is routed."""
        return self.task.user_input_tokens + FIRST_CALL_RESERVE

    @property
    def running(self) -> tuple[str, ...]:
        """Ids of the calls and tools in flight."""
        return (*self._books.running, *self._books.tools_running)

    # ---- inputs --------------------------------------------------------------------

    def start(self, now: float) -> list[Command]:
        """The task was admitted: its first actions."""
        return self._advance(now)

    def call_done(
        self, call_id: str, result: CallResult, now: float, first_token_at: float | None = None
    ) -> list[Command]:
        """A call returned. `first_token_at`: when its first token was produced, where the
        shell knows it exactly (else dispatch + the engine's TTFT)."""
        running = self._books.running.pop(call_id, None)
        if running is None or self.ended:
            return []
        self._router.finished(call_id, result.token_ids)
        dispatch = running.dispatch
        action = dispatch.action
        books = self._books
        if action.answer and books.first_answer_at is None:
            books.first_answer_at = (
                first_token_at
                if first_token_at is not None
                else running.dispatched_at + result.timings.ttft
            )
        record = CallRecord(
            call_id=call_id,
            step=action.step,
            branch=action.branch,
            replica=dispatch.replica,
            usage=result.usage,
            timings=result.timings,
            finish_reason=result.finish_reason,
            after=action.after,
            dispatch_to_result=now - running.dispatched_at,
        )
        books.calls.append(record)
        books.retried_calls += dispatch.attempt
        self._service.finished(call_id, action.after, result.timings.e2e)
        self._interpreter.complete(self.task, call_id, Outcome(result.token_ids, result.text))
        return [Emit(StepFinished(record)), *self._advance(now)]

    def call_failed(
        self, call_id: str, error: EngineError, now: float, *, retryable: bool = True
    ) -> list[Command]:
        """A call's attempt failed. A replica failure (UNAVAILABLE) is retried on another
        replica up to `max_retries` times; anything else fails the task."""
        running = self._books.running.get(call_id)
        if running is None or self.ended:
            return []
        self._router.finished(call_id)
        dispatch = running.dispatch
        failed_on = running.failed_on | {dispatch.replica}
        if (
            retryable
            and error.code is ErrorCode.UNAVAILABLE
            and len(failed_on) <= self._limits.max_retries
        ):
            request = self._request(dispatch.action, dispatch.request.priority, now)
            try:
                replica = self._router.choose(request, self._views(), failed_on)
            except NoReplicaAvailable:
                pass
            else:
                retry = Dispatch(
                    dispatch.action, request, replica, dispatch.stream, dispatch.attempt + 1
                )
                running.dispatch = retry
                running.failed_on = failed_on
                return [retry]
        # The failed call consumed nothing the engine reported: it is not counted.
        del self._books.running[call_id]
        return self._fail(
            error.code,
            f"step {dispatch.action.step!r} (call {call_id}) failed: {error.message}",
            now,
        )

    def tool_done(self, action_id: str, outcome: Outcome, ok: bool, now: float) -> list[Command]:
        tool_run = self._books.tools_running.pop(action_id, None)
        if tool_run is None or self.ended:
            return []
        action = tool_run.action
        record = ToolRecord(
            tool_id=action_id,
            step=action.step,
            branch=action.branch,
            tool=action.tool or "simulated",
            ok=ok,
            elapsed=now - tool_run.started_at,
            result_tokens=len(outcome.token_ids),
            after=action.after,
        )
        self._books.tools.append(record)
        self._service.finished(action_id, action.after, 0.0)
        self._interpreter.complete(self.task, action_id, outcome)
        return [Emit(StepFinished(call=None, tool=record)), *self._advance(now)]

    def tool_failed(self, action_id: str, message: str, now: float) -> list[Command]:
        tool_run = self._books.tools_running.get(action_id)
        if tool_run is None or self.ended:
            return []
        step = tool_run.action.step
        del self._books.tools_running[action_id]
        return self._fail(
            ErrorCode.INTERNAL, f"step {step!r} (call {action_id}) failed: {message}", now
        )

    def answer_streamed(self, call_id: str, tokens: int, now: float) -> None:
        """`tokens` more answer tokens reached the client."""
        books = self._books
        if books.first_answer_at is None:
            books.first_answer_at = now
        books.streamed[call_id] = books.streamed.get(call_id, 0) + tokens

    def expire(self, now: float) -> list[Command]:
        """The task's deadline passed."""
        if self.ended:
            return []
        return self._fail(
            ErrorCode.DEADLINE_EXCEEDED,
            f"task {self.task.task_id} exceeded its deadline of "
            f"{self.task.spec.deadline_s:.3f} s; its outstanding calls were aborted",
            now,
        )

    def interrupt(self, message: str, now: float) -> list[Command]:
        """The server stops the task (a drain ran out of time): it fails UNAVAILABLE
        with `message`, its outstanding calls aborted and counted, as at a deadline."""
        if self.ended:
            return []
        return self._fail(ErrorCode.UNAVAILABLE, message, now)

    def abandon(self) -> list[Command]:
        """Nobody waits for the task any more (the client went away): stop its work."""
        if self.ended:
            return []
        self.ended = True
        return self._stop_running()

    # ---- decisions -----------------------------------------------------------------

    def _request(self, action: Action, priority: int, now: float) -> CallRequest:
        assert action.sampling is not None
        remaining = None if self.deadline is None else max(0.001, self.deadline - now)
        return CallRequest(
            action.action_id,
            action.prompt_token_ids,
            action.sampling,
            priority=priority,
            deadline_s=remaining,
            task_id=self.task.task_id,
        )

    def _advance(self, now: float) -> list[Command]:
        """Start what can run next (within the call budget); finish a task that is done."""
        task = self.task
        commands: list[Command] = []
        books = self._books
        budget = self._limits.max_concurrent_calls - task.running
        priority = self._service.priority(self._priority, now)
        for action in self._interpreter.advance(task, budget):
            if action.kind is ActionKind.LLM:
                request = self._request(action, priority, now)
                try:
                    replica = self._router.choose(request, self._views())
                except NoReplicaAvailable as exc:
                    # The interpreter counts it as running: it is aborted with the rest.
                    return [*commands, *self._fail(ErrorCode.UNAVAILABLE, str(exc), now)]
                stream = action.answer and self._stream_answer
                dispatch = Dispatch(action, request, replica, stream)
                books.running[action.action_id] = _Running(dispatch, now)
                commands.append(dispatch)
                kind = StepKind.LLM
            else:
                replica = ""
                books.tools_running[action.action_id] = _Tool(action, now)
                commands.append(RunTool(action))
                kind = StepKind.TOOL
            commands.append(
                Emit(StepStarted(action.action_id, action.step, action.branch, replica, kind))
            )
        if task.done:
            self.ended = True
            commands.append(Finish(result=self._result(now)))
        return commands

    def _fail(self, code: ErrorCode, message: str, now: float) -> list[Command]:
        """End the task with TaskFailed: calls in flight are aborted and counted as such."""
        books = self._books
        for call_id, running in books.running.items():
            action = running.dispatch.action
            books.calls.append(
                aborted_call(
                    call_id,
                    step=action.step,
                    branch=action.branch,
                    replica=running.dispatch.replica,
                    prompt_tokens=len(action.prompt_token_ids),
                    output_tokens=books.streamed.get(call_id, 0),
                    after=action.after,
                    elapsed=now - running.dispatched_at,
                )
            )
        self.ended = True
        commands = self._stop_running()
        failure = TaskFailed(code, message, self._usage(now))
        return [*commands, Finish(failure=failure)]

    def _stop_running(self) -> list[Command]:
        books = self._books
        ids = self.running
        for call_id in books.running:
            self._router.finished(call_id)
        books.running.clear()
        books.tools_running.clear()
        return [Cancel(ids)] if ids else []

    def _usage(self, now: float) -> TaskUsage:
        books = self._books
        answer = next((c for c in books.calls if c.call_id == self.task.answer_id), None)
        first = books.first_answer_at
        return task_usage(
            books.calls,
            user_input_tokens=self.task.user_input_tokens,
            final_output_tokens=answer.usage.output_tokens if answer else 0,
            task_ttft=(first - self.accepted_at) if first is not None else 0.0,
            task_latency=now - self.accepted_at,
            retried_calls=books.retried_calls,
            tools=books.tools,
        )

    def _result(self, now: float) -> TaskResult:
        books = self._books
        return TaskResult(
            task_id=self.task.task_id,
            agent=self.task.program.name,
            answer=self.task.answer_text,
            usage=self._usage(now),
            calls=tuple(books.calls),
            tools=tuple(books.tools),
        )
