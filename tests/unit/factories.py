"""Small builders for unit tests: programs, interpreters and task progress, call results
and records, and in-process fakes of the tokenizer and the replica pool (no Ray, no
vLLM)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Iterable

from agents.distributions import AnyDistribution, Constant
from agents.dsl import Llm, Node, Program
from orchestrator.domain import (
    CallDelta,
    CallRecord,
    CallRequest,
    CallResult,
    CallTimings,
    CallUsage,
    ErrorCode,
    FinishReason,
    TaskSpec,
    ToolRecord,
)
from orchestrator.executor.interpreter import Action, Encoder, Interpreter, Outcome, TaskProgress
from orchestrator.replicas.engine import EngineError
from orchestrator.routing import ReplicaView

BOS = 1


def encode(text: str) -> tuple[int, ...]:
    """A tokenizer-free stand-in: one token per character."""
    return tuple(ord(c) % 256 for c in text)


class FakeTokenizer:
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(encode(text))

    @property
    def bos_token_id(self) -> int | None:
        return BOS


def encoder() -> Encoder:
    return Encoder(FakeTokenizer().encode, BOS)


# ---- programs, interpreters and task progress -----------------------------------------


def llm(
    name: str,
    instruction: str | None = None,
    max_tokens: int | AnyDistribution = 8,
    **fields: object,
) -> Llm:
    """An Llm node whose instruction, by default, is "\\n<name>\\n"."""
    tokens = Constant(float(max_tokens)) if isinstance(max_tokens, int) else max_tokens
    text = f"\n<{name}>\n" if instruction is None else instruction
    return Llm(name=name, instruction=text, max_tokens=tokens, **fields)  # type: ignore[arg-type]


def program(*body: Node, name: str = "prog") -> Program:
    return Program(name=name, description="test program", system="SYS", body=body)


def interpreter(prog: Program) -> Interpreter:
    return Interpreter(prog, encoder())


def head(user_input: str, system: str = "SYS") -> tuple[int, ...]:
    """What every prompt of a task starts with: BOS, system, "User: ", the input."""
    return (BOS, *encode(system + "\nUser: "), *encode(user_input))


def spec(agent: str = "prog", user_input: str = "hello", **fields: object) -> TaskSpec:
    return TaskSpec(agent=agent, input=user_input, **fields)  # type: ignore[arg-type]


def start(
    it: Interpreter,
    user_input: str = "hello",
    *,
    seed: int = 0,
    task_id: str = "t1",
    **fields: object,
) -> TaskProgress:
    return it.start(task_id, spec(it.program.name, user_input, **fields), seed)


def finish(it: Interpreter, task: TaskProgress, action: Action, text: str) -> None:
    """Feed an action's output back, as the driver does (one token per character)."""
    it.complete(task, action.action_id, Outcome(encode(text), text))


def timings(e2e: float = 0.1, output_tokens: int = 2) -> CallTimings:
    tpot = (e2e - 0.01) / (output_tokens - 1) if output_tokens > 1 else None
    return CallTimings(queue_time=0.001, ttft=0.01, tpot=tpot, itl=(0.01,), e2e=e2e)


def call_record(
    call_id: str,
    after: Iterable[str] = (),
    *,
    step: str = "s",
    branch: int = 0,
    prompt: int = 10,
    cached: int = 0,
    output: int = 5,
    e2e: float = 0.1,
    tpot: float | None = 0.02,
) -> CallRecord:
    return CallRecord(
        call_id=call_id,
        step=step,
        branch=branch,
        replica="replica-0",
        usage=CallUsage(prompt, cached, output),
        timings=CallTimings(queue_time=0.001, ttft=0.01, tpot=tpot, itl=(0.01, 0.02), e2e=e2e),
        finish_reason=FinishReason.LENGTH,
        after=tuple(after),
        dispatch_to_result=e2e + 0.005,
    )


def tool_record(
    tool_id: str,
    after: Iterable[str] = (),
    *,
    step: str = "lookup",
    elapsed: float = 0.1,
    result_tokens: int = 12,
    tool: str = "simulated",
    ok: bool = True,
) -> ToolRecord:
    return ToolRecord(
        tool_id=tool_id,
        step=step,
        branch=0,
        tool=tool,
        ok=ok,
        elapsed=elapsed,
        result_tokens=result_tokens,
        after=tuple(after),
    )


# ---- a fake replica pool --------------------------------------------------------------


def step_of(call_id: str) -> str:
    """The step name of an interpreter action id "<task id>-<step>-<n>"."""
    return call_id.rsplit("-", 2)[1]


class FakeDispatcher:
    """An in-process replica pool. Each call outputs `max_tokens` characters labelled with
    its step ("[planner][planner]..."), after `delay(call_id)` seconds (None: never
    finishes). `fail(replica, call_id)` may make an attempt fail on a given replica.

    Records every attempt (`requests`, `attempts`), which calls finished, failed and were
    cancelled, and a logical clock reading when each call started and finished, so tests
    can check the order of the executed graph."""

    def __init__(
        self,
        *,
        replicas: int = 2,
        max_model_len: int = 4096,
        delay: Callable[[str], float | None] = lambda call_id: 0.0,
        fail: Callable[[str, str], EngineError | None] = lambda replica, call_id: None,
        output: Callable[[CallRequest], str] | None = None,
    ) -> None:
        self._replicas = [f"replica-{i}" for i in range(replicas)]
        self._max_model_len = max_model_len
        self._delay = delay
        self._fail = fail
        self._output = output or labelled_output
        self.requests: list[CallRequest] = []  # every attempt, retries included
        self.attempts: list[tuple[str, str]] = []  # (replica, call_id) per attempt
        self.streamed: list[str] = []
        self.finished: set[str] = set()
        self.failed: set[str] = set()
        self.cancelled: set[str] = set()
        self.in_flight = 0
        self.peak_in_flight = 0
        self._clock = itertools.count()
        self.started_at: dict[str, int] = {}  # call_id -> logical time of its last attempt
        self.finished_at: dict[str, int] = {}
        self._arrived = asyncio.Event()

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    def views(self) -> list[ReplicaView]:
        return [ReplicaView(name, True, 0) for name in self._replicas]

    @property
    def started(self) -> set[str]:
        return {r.call_id for r in self.requests}

    async def wait_started(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.requests) < count:
                self._arrived.clear()
                await self._arrived.wait()

    async def _run(self, replica: str, call: CallRequest) -> CallResult:
        self.requests.append(call)
        self.attempts.append((replica, call.call_id))
        self.started_at[call.call_id] = next(self._clock)
        self._arrived.set()
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            delay = self._delay(call.call_id)
            if delay is None:
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(delay)
            error = self._fail(replica, call.call_id)
            if error is not None:
                self.failed.add(call.call_id)
                raise error
            text = self._output(call)
            ids = encode(text)
            prompt = len(call.prompt_token_ids)
            self.finished.add(call.call_id)
            self.finished_at[call.call_id] = next(self._clock)
            return CallResult(
                call_id=call.call_id,
                token_ids=ids,
                text=text,
                finish_reason=FinishReason.LENGTH,
                usage=CallUsage(prompt, prompt // 2, len(ids)),
                timings=timings(e2e=max(delay or 0.0, 0.001), output_tokens=len(ids)),
            )
        except asyncio.CancelledError:
            self.cancelled.add(call.call_id)
            raise
        finally:
            self.in_flight -= 1

    async def call(self, replica_name: str, call: CallRequest) -> CallResult:
        return await self._run(replica_name, call)

    async def stream(
        self, replica_name: str, call: CallRequest
    ) -> AsyncIterator[CallDelta | CallResult]:
        self.streamed.append(call.call_id)
        result = await self._run(replica_name, call)
        try:
            for i in range(0, len(result.token_ids), 4):
                ids = result.token_ids[i : i + 4]
                yield CallDelta(ids, result.text[i : i + 4])
                await asyncio.sleep(0)
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled.add(call.call_id)
            raise
        yield result


def labelled_output(call: CallRequest) -> str:
    """`max_tokens` characters repeating "[<step>]"."""
    step = step_of(call.call_id) if call.call_id.count("-") >= 2 else "gen"
    label = f"[{step}]"
    n = call.sampling.max_tokens
    return (label * (n // len(label) + 1))[:n]


def engine_error(code: ErrorCode = ErrorCode.INTERNAL, message: str = "boom") -> EngineError:
    return EngineError(code, message)
