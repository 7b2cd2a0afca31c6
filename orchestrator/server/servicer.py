"""The gRPC servicer: validate each request, convert it to domain types, hand it to the
executor, convert what comes back. Every failure leaves as a gRPC status with a message a
person can act on; unexpected errors are logged here and reported as INTERNAL, never as a
traceback, and the server keeps serving."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, Protocol

import grpc

from agents.dsl import Llm, walk
from orchestrator.api.v1 import inflection_pb2 as pb
from orchestrator.api.v1 import inflection_pb2_grpc as pb_grpc
from orchestrator.config import LimitsConfig
from orchestrator.convert import (
    agent_to_pb,
    cluster_to_pb,
    event_to_pb,
    generate_output_to_pb,
    shorten,
    task_result_to_pb,
    task_usage_to_pb,
)
from orchestrator.domain import (
    ClusterStatus,
    ErrorCode,
    GenerateSpec,
    Mode,
    Sampling,
    TaskCompleted,
    TaskResult,
    TaskSpec,
)
from orchestrator.executor.driver import TaskFailed
from orchestrator.executor.executor import Executor
from orchestrator.protocol import RETRY_AFTER_TRAILER, USAGE_TRAILER

log = logging.getLogger(__name__)

# A task ends this long (or 10% of the time left, if less) before its RPC's gRPC
# deadline, so that the status and the usage trailer still reach the client.
RPC_DEADLINE_MARGIN_S = 0.05
# Longest status message sent: client values in it are already cut to 80 characters;
# this bounds the rest, as a client refuses trailers over 8 KiB (and reports
# RESOURCE_EXHAUSTED in place of the real status).
MESSAGE_CHARS = 1000

STATUS_OF: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}


class ClusterView(Protocol):
    async def status(self) -> ClusterStatus: ...


class _Invalid(Exception):
    """A request field that fails validation; the message names the field."""


def _check_sampling(s: pb.SamplingOptions, limits: LimitsConfig) -> None:
    if s.HasField("max_tokens") and not 1 <= s.max_tokens <= limits.max_tokens_per_call:
        raise _Invalid(
            f"sampling.max_tokens: must be between 1 and {limits.max_tokens_per_call}, "
            f"got {s.max_tokens}"
        )
    if s.HasField("temperature") and not 0.0 <= s.temperature <= 10.0:
        raise _Invalid(f"sampling.temperature: must be between 0 and 10, got {s.temperature}")
    if s.HasField("top_p") and not 0.0 < s.top_p <= 1.0:
        raise _Invalid(f"sampling.top_p: must be in (0, 1], got {s.top_p}")


def _deadline(request_ms: int | None, context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    """The tighter of the request's deadline_ms and the RPC's own gRPC deadline, less a
    margin: a task ending at the RPC deadline itself finds the client gone, and its
    status and partial-usage trailer never arrive."""
    budgets = []
    if request_ms is not None:
        budgets.append(request_ms / 1000.0)
    remaining = context.time_remaining()
    if remaining is not None:
        budgets.append(remaining - min(RPC_DEADLINE_MARGIN_S, 0.1 * max(remaining, 0.0)))
    # Positive: a deadline of 0 would read as none.
    return max(min(budgets), 0.001) if budgets else None


def task_spec(
    request: pb.TaskRequest,
    limits: LimitsConfig,
    context: grpc.aio.ServicerContext[Any, Any],
    step_names: Callable[[str], tuple[str, ...] | None],
) -> TaskSpec:
    """Validate a TaskRequest (raises _Invalid, or TaskFailed for an unknown agent)."""
    if not request.agent:
        raise _Invalid("agent: required (see ListAgents for the names)")
    steps = step_names(request.agent)
    if steps is None:
        raise TaskFailed(
            ErrorCode.NOT_FOUND,
            f"agent {shorten(request.agent)!r} does not exist (ListAgents names the agents)",
        )
    if not request.input.strip():
        raise _Invalid("input: must not be empty")
    if len(request.input) > limits.max_input_chars:
        raise _Invalid(
            f"input: {len(request.input)} characters, over the limit of {limits.max_input_chars}"
        )
    _check_sampling(request.sampling, limits)
    for name, tokens in request.step_max_tokens.items():
        if name not in steps:
            raise _Invalid(
                f"step_max_tokens: agent {request.agent!r} has no step {shorten(name)!r} "
                f"(its llm steps: {', '.join(steps)})"
            )
        if not 1 <= tokens <= limits.max_tokens_per_call:
            raise _Invalid(
                f"step_max_tokens[{shorten(name)!r}]: must be between 1 and "
                f"{limits.max_tokens_per_call}, got {tokens}"
            )
    if request.HasField("deadline_ms") and request.deadline_ms == 0:
        raise _Invalid("deadline_ms: must be positive when set")
    if request.mode not in (pb.MODE_UNSPECIFIED, pb.MODE_SYNTHETIC, pb.MODE_LIVE):
        raise _Invalid(f"mode: unknown value {request.mode}")
    s = request.sampling
    return TaskSpec(
        agent=request.agent,
        input=request.input,
        mode=Mode.LIVE if request.mode == pb.MODE_LIVE else Mode.SYNTHETIC,
        temperature=s.temperature if s.HasField("temperature") else 1.0,
        top_p=s.top_p if s.HasField("top_p") else 1.0,
        max_tokens=s.max_tokens if s.HasField("max_tokens") else None,
        ignore_eos=s.ignore_eos if s.HasField("ignore_eos") else None,
        seed=request.seed if request.HasField("seed") else None,
        deadline_s=_deadline(
            request.deadline_ms if request.HasField("deadline_ms") else None, context
        ),
        step_max_tokens=tuple(sorted(request.step_max_tokens.items())),
    )


def generate_spec(
    request: pb.GenerateRequest,
    limits: LimitsConfig,
    vocab_size: int,
    context: grpc.aio.ServicerContext[Any, Any],
    *,
    max_model_len: int,
) -> GenerateSpec:
    """Validate a GenerateRequest (raises _Invalid). Runs on the event loop, so sizes are
    checked first and the per-token work is bounded by max_model_len and done in C."""
    ids = request.prompt_token_ids
    has_text = bool(request.prompt)
    if has_text == (len(ids) > 0):
        raise _Invalid("prompt / prompt_token_ids: give exactly one of them")
    if len(request.prompt) > limits.max_input_chars:
        raise _Invalid(
            f"prompt: {len(request.prompt)} characters, over the limit of {limits.max_input_chars}"
        )
    _check_sampling(request.sampling, limits)
    s = request.sampling
    max_tokens = s.max_tokens if s.HasField("max_tokens") else 16
    if ids and len(ids) + max_tokens > max_model_len:
        raise _Invalid(
            f"prompt_token_ids: {len(ids)} tokens plus max_tokens {max_tokens} exceed the "
            f"model's max_model_len of {max_model_len}"
        )
    # max() runs in C (a Python loop over 1M ids held the event loop for 70 ms); the
    # loop only runs to name the first bad position.
    if ids and max(ids) >= vocab_size:
        position, token = next((i, t) for i, t in enumerate(ids) if t >= vocab_size)
        raise _Invalid(
            f"prompt_token_ids[{position}]: {token} is outside the vocabulary (size {vocab_size})"
        )
    if request.HasField("deadline_ms") and request.deadline_ms == 0:
        raise _Invalid("deadline_ms: must be positive when set")
    return GenerateSpec(
        prompt=request.prompt,
        prompt_token_ids=tuple(ids),
        sampling=Sampling(
            max_tokens=max_tokens,
            temperature=s.temperature if s.HasField("temperature") else 1.0,
            top_p=s.top_p if s.HasField("top_p") else 1.0,
            ignore_eos=s.ignore_eos if s.HasField("ignore_eos") else False,
            seed=request.seed if request.HasField("seed") else None,
        ),
        deadline_s=_deadline(
            request.deadline_ms if request.HasField("deadline_ms") else None, context
        ),
    )


class OrchestratorServicer(pb_grpc.OrchestratorServicer):
    def __init__(
        self, executor: Executor, cluster: ClusterView, limits: LimitsConfig, vocab_size: int
    ) -> None:
        self._executor = executor
        self._cluster = cluster
        self._limits = limits
        self._vocab_size = vocab_size

    def _steps_of(self, agent: str) -> tuple[str, ...] | None:
        program = self._executor.programs.get(agent)
        if program is None:
            return None
        # step_max_tokens sets output lengths, so only llm steps can be named.
        return tuple(n.name for _, n in walk(program.body) if isinstance(n, Llm))

    async def _fail(self, context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> NoReturn:
        if isinstance(exc, _Invalid):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, shorten(str(exc), MESSAGE_CHARS))
        if isinstance(exc, TaskFailed):
            trailers: list[tuple[str, str | bytes]] = []
            if exc.usage is not None:
                trailers.append((USAGE_TRAILER, task_usage_to_pb(exc.usage).SerializeToString()))
            if exc.retry_after_s is not None:
                trailers.append((RETRY_AFTER_TRAILER, str(round(exc.retry_after_s * 1000))))
            if trailers:
                context.set_trailing_metadata(tuple(trailers))
            await context.abort(STATUS_OF[exc.code], shorten(exc.message, MESSAGE_CHARS))
        log.exception("internal error while serving a request")
        await context.abort(
            grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log"
        )

    async def RunTask(  # noqa: N802 (gRPC method name)
        self, request: pb.TaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.TaskEvent]:
        try:
            spec = task_spec(request, self._limits, context, self._steps_of)
            state = self._executor.prepare(spec)
            events = self._executor.run(state)
            try:
                async for event in events:
                    yield event_to_pb(event)
            finally:
                await events.aclose()
        except (_Invalid, TaskFailed) as exc:
            await self._fail(context, exc)
        except Exception as exc:  # noqa: BLE001 (the last line of defence: never a traceback)
            await self._fail(context, exc)

    async def Run(  # noqa: N802
        self, request: pb.TaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.TaskResult:
        try:
            spec = task_spec(request, self._limits, context, self._steps_of)
            state = self._executor.prepare(spec)
            result: TaskResult | None = None
            events = self._executor.run(state, stream_answer=False)
            try:
                async for event in events:
                    if isinstance(event, TaskCompleted):
                        result = event.result
            finally:
                await events.aclose()
            if result is None:
                raise TaskFailed(ErrorCode.INTERNAL, "task ended without a result")
            return task_result_to_pb(result)
        except (_Invalid, TaskFailed) as exc:
            await self._fail(context, exc)
        except Exception as exc:  # noqa: BLE001
            await self._fail(context, exc)

    async def Generate(  # noqa: N802
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.GenerateChunk]:
        try:
            spec = generate_spec(
                request,
                self._limits,
                self._vocab_size,
                context,
                max_model_len=self._executor.max_model_len,
            )
            outputs = self._executor.generate(spec)
            try:
                async for output in outputs:
                    yield generate_output_to_pb(output)
            finally:
                await outputs.aclose()
        except (_Invalid, TaskFailed) as exc:
            await self._fail(context, exc)
        except Exception as exc:  # noqa: BLE001
            await self._fail(context, exc)

    async def ListAgents(  # noqa: N802
        self, request: pb.ListAgentsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListAgentsResponse:
        names = sorted(self._executor.programs)
        infos = await asyncio.to_thread(lambda: [self._executor.info(n) for n in names])
        return pb.ListAgentsResponse(agents=[agent_to_pb(info) for info in infos])

    async def GetClusterStatus(  # noqa: N802
        self, request: pb.GetClusterStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ClusterStatus:
        try:
            return cluster_to_pb(await self._cluster.status())
        except Exception as exc:  # noqa: BLE001
            await self._fail(context, exc)
