"""Small builders for unit tests: programs, task states, call results and records, and
in-process fakes of the tokenizer and the replica pool (no Ray, no vLLM)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable

from agents.program import LlmStep, Program
from orchestrator.domain import (
    CallDelta,
    CallRecord,
    CallRequest,
    CallResult,
    CallTimings,
    CallUsage,
    ErrorCode,
    FinishReason,
    Mode,
    TaskSpec,
)
from orchestrator.executor.plan import EncodedProgram, PlannedCall, TaskState, widths
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


# ---- programs and task states --------------------------------------------------------


def llm_step(name: str, *after: str, **fields: object) -> LlmStep:
    options: dict[str, object] = {"instruction": f"\n<{name}>\n", "max_tokens": 8}
    options.update(fields)
    return LlmStep(name=name, after=after, **options)  # type: ignore[arg-type]


def program(*steps: LlmStep, name: str = "prog") -> Program:
    return Program(name=name, description="test program", system="SYS", steps=steps)


def instruction_text(step: LlmStep, branch: int, width: int) -> str:
    return step.instruction.replace("{branch}", str(branch + 1)).replace("{branches}", str(width))


def encoded_program(prog: Program, mode: Mode) -> EncodedProgram:
    """Like Executor._encode: instruction ids keyed (step, branch, width)."""
    instructions = {}
    for name, step_widths in widths(prog, mode).items():
        step = prog.step(name)
        for width in step_widths:
            for branch in range(width):
                instructions[(name, branch, width)] = encode(instruction_text(step, branch, width))
    return EncodedProgram(prog, (BOS, *encode(prog.system + "\nUser: ")), instructions)


def task_state(
    prog: Program, user_input: str = "hello", task_id: str = "t1", **spec_fields: object
) -> TaskState:
    spec = TaskSpec(agent=prog.name, input=user_input, **spec_fields)  # type: ignore[arg-type]
    enc = encoded_program(prog, spec.mode)
    input_ids = encode(user_input)
    return TaskState(
        task_id=task_id,
        spec=spec,
        encoded=enc,
        prefix=enc.prefix_head + input_ids,
        user_input_tokens=len(input_ids),
    )


def timings(e2e: float = 0.1, output_tokens: int = 2) -> CallTimings:
    tpot = (e2e - 0.01) / (output_tokens - 1) if output_tokens > 1 else None
    return CallTimings(queue_time=0.001, ttft=0.01, tpot=tpot, itl=(0.01,), e2e=e2e)


def call_result(call_id: str, text: str, prompt_tokens: int = 10, cached: int = 0) -> CallResult:
    ids = encode(text)
    return CallResult(
        call_id=call_id,
        token_ids=ids,
        text=text,
        finish_reason=FinishReason.LENGTH,
        usage=CallUsage(prompt_tokens, cached, len(ids)),
        timings=timings(output_tokens=len(ids)),
    )


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


def finish(state: TaskState, call: PlannedCall, text: str) -> None:
    """Feed a finished call back into the state, as the driver does."""
    result = call_result(call.call_id, text, prompt_tokens=len(call.prompt_token_ids))
    record = call_record(
        call.call_id, call.after, step=call.step, branch=call.branch, output=len(result.token_ids)
    )
    state.finish(call, result, record)


# ---- a fake replica pool --------------------------------------------------------------


def step_of(call_id: str) -> tuple[str, int]:
    """(step, branch) of a planner call id "<task>-<step>-<branch>"."""
    _, step, branch = call_id.rsplit("-", 2)
    return step, int(branch)


class FakeDispatcher:
    """An in-process replica pool. Each call outputs `max_tokens` characters labelled with
    its step and branch, after `delay(call_id)` seconds (None: never finishes). Records
    which calls started, finished and were cancelled."""

    def __init__(
        self,
        *,
        replicas: int = 2,
        max_model_len: int = 4096,
        delay: Callable[[str], float | None] = lambda call_id: 0.0,
        fail: Callable[[str], EngineError | None] = lambda call_id: None,
        output: Callable[[CallRequest], str] | None = None,
    ) -> None:
        self._replicas = [f"replica-{i}" for i in range(replicas)]
        self._max_model_len = max_model_len
        self._delay = delay
        self._fail = fail
        self._output = output or _labelled_output
        self.requests: list[CallRequest] = []
        self.streamed: list[str] = []
        self.finished: set[str] = set()
        self.cancelled: set[str] = set()
        self.in_flight = 0
        self.peak_in_flight = 0
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

    async def _run(self, call: CallRequest) -> CallResult:
        self.requests.append(call)
        self._arrived.set()
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            delay = self._delay(call.call_id)
            if delay is None:
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(delay)
            error = self._fail(call.call_id)
            if error is not None:
                raise error
            text = self._output(call)
            ids = encode(text)
            prompt = len(call.prompt_token_ids)
            self.finished.add(call.call_id)
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
        return await self._run(call)

    async def stream(
        self, replica_name: str, call: CallRequest
    ) -> AsyncIterator[CallDelta | CallResult]:
        self.streamed.append(call.call_id)
        result = await self._run(call)
        try:
            for i in range(0, len(result.token_ids), 4):
                ids = result.token_ids[i : i + 4]
                yield CallDelta(ids, result.text[i : i + 4])
                await asyncio.sleep(0)
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled.add(call.call_id)
            raise
        yield result


def _labelled_output(call: CallRequest) -> str:
    step, branch = step_of(call.call_id) if call.call_id.count("-") >= 2 else ("gen", 0)
    label = f"[{step}{branch}]"
    n = call.sampling.max_tokens
    return (label * (n // len(label) + 1))[:n]


def engine_error(code: ErrorCode = ErrorCode.INTERNAL, message: str = "boom") -> EngineError:
    return EngineError(code, message)
