"""The Inflection SDK: a synchronous `Client` and an asyncio `AsyncClient`.

    from orchestrator.client import Client

    with Client("127.0.0.1:50051") as client:
        result = client.run("plan_execute", "Compare H100 and B200 for agents.")
        print(result.answer, result.usage.token_amplification)

Results are the typed dataclasses of `orchestrator.domain` (re-exported here). Failures
raise `InflectionError` (or a subclass per status) carrying the gRPC status code; the
partial usage of a task or generation that failed after starting (a deadline, say), when
the server sent it, is on `error.usage`, calls aborted in flight included. Importing this module
imports grpc and protobuf only: never Ray or vLLM.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from orchestrator.api.v1 import inflection_pb2 as pb
from orchestrator.api.v1 import inflection_pb2_grpc as pb_grpc
from orchestrator.convert import (
    agent_from_pb,
    cluster_from_pb,
    event_from_pb,
    generate_output_from_pb,
    task_result_from_pb,
    task_usage_from_pb,
)
from orchestrator.domain import (
    AgentInfo,
    AnswerDelta,
    CallRecord,
    CallTimings,
    CallUsage,
    ClusterStatus,
    GenerateOutput,
    Mode,
    ReplicaState,
    ReplicaStatus,
    StepFinished,
    StepStarted,
    TaskAccepted,
    TaskCompleted,
    TaskEvent,
    TaskResult,
    TaskUsage,
)
from orchestrator.protocol import RETRY_AFTER_TRAILER, USAGE_TRAILER, auth_metadata

__all__ = [
    "AgentInfo",
    "AnswerDelta",
    "AsyncClient",
    "CallRecord",
    "CallTimings",
    "CallUsage",
    "Client",
    "ClusterStatus",
    "DeadlineExceeded",
    "GenerateOutput",
    "InflectionError",
    "InvalidArgument",
    "Mode",
    "NotFound",
    "ReplicaState",
    "ReplicaStatus",
    "ResourceExhausted",
    "StepFinished",
    "StepStarted",
    "TaskAccepted",
    "TaskCompleted",
    "TaskEvent",
    "TaskResult",
    "TaskUsage",
    "Unauthenticated",
    "Unavailable",
]


class InflectionError(Exception):
    """A call the server refused or could not complete."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        usage: TaskUsage | None = None,
        retry_after_s: float | None = None,
    ):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        # For a task or generation that failed after starting: what it consumed before it
        # stopped (a plain generation's is one call's).
        self.usage = usage
        # RESOURCE_EXHAUSTED (admission queue full): when a retry is likely to get in.
        self.retry_after_s = retry_after_s


class InvalidArgument(InflectionError):
    pass


class NotFound(InflectionError):
    pass


class DeadlineExceeded(InflectionError):
    pass


class ResourceExhausted(InflectionError):
    pass


class Unauthenticated(InflectionError):
    pass


class Unavailable(InflectionError):
    pass


_ERRORS: dict[grpc.StatusCode, type[InflectionError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


def trailer_usage(trailers: Any) -> pb.TaskUsage | None:
    """The partial usage a failed task's trailers carry (USAGE_TRAILER), if any."""
    for key, value in trailers or ():
        if key == USAGE_TRAILER:
            message = pb.TaskUsage()
            message.ParseFromString(value)
            return message
    return None


def rpc_error(exc: grpc.RpcError, trailers: Any = None) -> InflectionError:
    """The InflectionError (subclass per status) of a failed call, with the partial usage
    and retry-after its trailers carry."""
    code: grpc.StatusCode = exc.code()
    details: str = exc.details() or ""
    message = trailer_usage(trailers)
    usage = task_usage_from_pb(message) if message is not None else None
    retry_after_s = None
    for key, value in trailers or ():
        if key == RETRY_AFTER_TRAILER:
            retry_after_s = int(value) / 1000.0
    return _ERRORS.get(code, InflectionError)(code, details, usage, retry_after_s)


def sync_trailers(exc: grpc.RpcError) -> Any:
    """The trailing metadata of a synchronous call's error (None when it has none)."""
    trailing = getattr(exc, "trailing_metadata", None)
    return trailing() if callable(trailing) else None


def task_request(
    agent: str,
    input: str,  # noqa: A002 (the API's field name)
    *,
    mode: Mode = Mode.SYNTHETIC,
    max_tokens: int | None = None,
    step_max_tokens: Mapping[str, int] | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    ignore_eos: bool | None = None,
    seed: int | None = None,
    deadline_s: float | None = None,
) -> pb.TaskRequest:
    sampling = pb.SamplingOptions()
    if max_tokens is not None:
        sampling.max_tokens = max_tokens
    if temperature is not None:
        sampling.temperature = temperature
    if top_p is not None:
        sampling.top_p = top_p
    if ignore_eos is not None:
        sampling.ignore_eos = ignore_eos
    request = pb.TaskRequest(
        agent=agent,
        input=input,
        sampling=sampling,
        mode=pb.MODE_LIVE if mode is Mode.LIVE else pb.MODE_SYNTHETIC,
        step_max_tokens=dict(step_max_tokens or {}),
    )
    if seed is not None:
        request.seed = seed
    if deadline_s is not None:
        request.deadline_ms = max(1, round(deadline_s * 1000))
    return request


def generate_request(
    prompt: str | list[int],
    *,
    max_tokens: int = 16,
    temperature: float | None = None,
    top_p: float | None = None,
    ignore_eos: bool | None = None,
    seed: int | None = None,
    deadline_s: float | None = None,
) -> pb.GenerateRequest:
    sampling = pb.SamplingOptions(max_tokens=max_tokens)
    if temperature is not None:
        sampling.temperature = temperature
    if top_p is not None:
        sampling.top_p = top_p
    if ignore_eos is not None:
        sampling.ignore_eos = ignore_eos
    request = pb.GenerateRequest(sampling=sampling)
    if isinstance(prompt, str):
        request.prompt = prompt
    else:
        request.prompt_token_ids.extend(prompt)
    if seed is not None:
        request.seed = seed
    if deadline_s is not None:
        request.deadline_ms = max(1, round(deadline_s * 1000))
    return request


PathLike = str | os.PathLike[str]

# Appended to UNAVAILABLE from a plaintext channel: a TLS server closes a plaintext
# connection during the handshake, which gRPC reports only as a failed connection.
_PLAINTEXT_HINT = (
    " (connected without TLS: if the server serves TLS, pass tls=True or ca=PATH; "
    "CLI: --tls or --tls-ca PATH)"
)


def channel_credentials(
    tls: bool = False,
    ca: PathLike | None = None,
    cert: PathLike | None = None,
    key: PathLike | None = None,
) -> grpc.ChannelCredentials | None:
    """TLS credentials for a channel, or None for plaintext: TLS when `tls` or `ca` is
    given, trusting `ca`'s certificates (PEM) or else the system roots; `cert` and `key`
    (PEM) are a client certificate for a server that asks for one (mutual TLS)."""
    if not (tls or ca or cert):
        return None
    if (cert is None) != (key is None):
        raise ValueError("a client certificate needs both cert and key")
    roots = Path(ca).read_bytes() if ca else None
    chain = Path(cert).read_bytes() if cert else None
    private = Path(key).read_bytes() if key else None
    return grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=private, certificate_chain=chain
    )


TOKEN_ENV = "INFLECTION_TOKEN"  # where CLIs (and the Locust processes) find a token


def token_from(token: str | None = None, token_file: PathLike | None = None) -> str | None:
    """The bearer token of a command: `token`, else `token_file`'s first line, else the
    INFLECTION_TOKEN environment variable (so it need not appear on a command line)."""
    if token:
        return token
    if token_file:
        return Path(token_file).read_text().strip() or None
    return os.environ.get(TOKEN_ENV) or None


def open_channel(
    target: str, tls: bool = False, ca: PathLike | None = None, **client_cert: PathLike
) -> grpc.Channel:
    """A synchronous channel to `target`: plaintext, or TLS (see `channel_credentials`)."""
    credentials = channel_credentials(tls, ca, **client_cert)
    if credentials is None:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, credentials)


def _with_hint(error: InflectionError, plaintext: bool) -> InflectionError:
    # Only a connection that never carried a call, not a server's own UNAVAILABLE.
    lost = ("failed to connect", "socket closed", "connection reset", "handshake")
    details = error.details.lower()
    if (
        plaintext
        and error.code == grpc.StatusCode.UNAVAILABLE
        and any(sign in details for sign in lost)
    ):
        return type(error)(
            error.code, error.details + _PLAINTEXT_HINT, error.usage, error.retry_after_s
        )
    return error


class Client:
    """Synchronous client. Task keyword arguments are those of `task_request`."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        timeout: float | None = None,
        tls: bool = False,
        ca: PathLike | None = None,
        cert: PathLike | None = None,
        key: PathLike | None = None,
    ):
        """`tls=True`: TLS trusting the system roots; `ca=PATH`: TLS trusting that CA
        bundle (PEM); `cert`/`key`: a client certificate (mutual TLS). Without any,
        plaintext (a token then travels in clear)."""
        credentials = channel_credentials(tls, ca, cert, key)
        self._plaintext = credentials is None
        self._channel = (
            grpc.insecure_channel(target)
            if credentials is None
            else grpc.secure_channel(target, credentials)
        )
        self._stub: Any = pb_grpc.OrchestratorStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata = auth_metadata(token)
        self._timeout = timeout  # gRPC deadline for every call, seconds

    def _error(self, exc: grpc.RpcError, trailers: Any = None) -> InflectionError:
        return _with_hint(rpc_error(exc, trailers), self._plaintext)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def run_task(self, agent: str, input: str, **options: Any) -> Iterator[TaskEvent]:  # noqa: A002
        """Stream a task's events; the last is TaskCompleted. Closing the iterator early
        cancels the task on the server (every engine request of it is aborted)."""
        call = self._stub.RunTask(
            task_request(agent, input, **options), metadata=self._metadata, timeout=self._timeout
        )
        try:
            for message in call:
                yield event_from_pb(message)
        except grpc.RpcError as exc:
            raise self._error(exc, sync_trailers(exc)) from None
        finally:
            call.cancel()

    def run(self, agent: str, input: str, **options: Any) -> TaskResult:  # noqa: A002
        """Run a task and wait for its result."""
        try:
            reply = self._stub.Run(
                task_request(agent, input, **options),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        except grpc.RpcError as exc:
            raise self._error(exc, sync_trailers(exc)) from None
        return task_result_from_pb(reply)

    def generate(self, prompt: str | list[int], **options: Any) -> Iterator[GenerateOutput]:
        """Stream one plain generation; the last output carries the call's record."""
        call = self._stub.Generate(
            generate_request(prompt, **options), metadata=self._metadata, timeout=self._timeout
        )
        try:
            for message in call:
                yield generate_output_from_pb(message)
        except grpc.RpcError as exc:
            raise self._error(exc, sync_trailers(exc)) from None
        finally:
            call.cancel()

    def list_agents(self) -> list[AgentInfo]:
        try:
            reply = self._stub.ListAgents(
                pb.ListAgentsRequest(), metadata=self._metadata, timeout=self._timeout
            )
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        return [agent_from_pb(a) for a in reply.agents]

    def cluster_status(self) -> ClusterStatus:
        try:
            reply = self._stub.GetClusterStatus(
                pb.GetClusterStatusRequest(), metadata=self._metadata, timeout=self._timeout
            )
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        return cluster_from_pb(reply)


class AsyncClient:
    """asyncio client with the same methods as `Client`, as coroutines and async
    iterators. Use inside a running event loop."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        timeout: float | None = None,
        tls: bool = False,
        ca: PathLike | None = None,
        cert: PathLike | None = None,
        key: PathLike | None = None,
    ):
        """TLS options as for `Client`."""
        credentials = channel_credentials(tls, ca, cert, key)
        self._plaintext = credentials is None
        self._channel = (
            grpc.aio.insecure_channel(target)
            if credentials is None
            else grpc.aio.secure_channel(target, credentials)
        )
        self._stub: Any = pb_grpc.OrchestratorStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata = auth_metadata(token)
        self._timeout = timeout

    def _error(self, exc: grpc.RpcError, trailers: Any = None) -> InflectionError:
        return _with_hint(rpc_error(exc, trailers), self._plaintext)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def run_task(
        self,
        agent: str,
        input: str,  # noqa: A002
        **options: Any,
    ) -> AsyncIterator[TaskEvent]:
        call = self._stub.RunTask(
            task_request(agent, input, **options), metadata=self._metadata, timeout=self._timeout
        )
        try:
            async for message in call:
                yield event_from_pb(message)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, exc.trailing_metadata()) from None
        finally:
            call.cancel()

    async def run(self, agent: str, input: str, **options: Any) -> TaskResult:  # noqa: A002
        try:
            reply = await self._stub.Run(
                task_request(agent, input, **options),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, exc.trailing_metadata()) from None
        return task_result_from_pb(reply)

    async def generate(
        self, prompt: str | list[int], **options: Any
    ) -> AsyncIterator[GenerateOutput]:
        call = self._stub.Generate(
            generate_request(prompt, **options), metadata=self._metadata, timeout=self._timeout
        )
        try:
            async for message in call:
                yield generate_output_from_pb(message)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, exc.trailing_metadata()) from None
        finally:
            call.cancel()

    async def list_agents(self) -> list[AgentInfo]:
        try:
            reply = await self._stub.ListAgents(
                pb.ListAgentsRequest(), metadata=self._metadata, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        return [agent_from_pb(a) for a in reply.agents]

    async def cluster_status(self) -> ClusterStatus:
        try:
            reply = await self._stub.GetClusterStatus(
                pb.GetClusterStatusRequest(), metadata=self._metadata, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        return cluster_from_pb(reply)
