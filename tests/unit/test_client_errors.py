"""The SDK's error mapping (`orchestrator.client`): each gRPC status raises its
`InflectionError` subclass with the server's message, the `inflection-usage-bin` trailer
becomes `error.usage` and `retry-after-ms` becomes `retry_after_s`, for the synchronous
and the asyncio client alike. Against a real gRPC server on 127.0.0.1 whose handlers
abort as each test tells them to (no orchestrator behind it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from orchestrator.api.v1 import inflection_pb2 as pb
from orchestrator.api.v1 import inflection_pb2_grpc as pb_grpc
from orchestrator.client import (
    AsyncClient,
    Client,
    DeadlineExceeded,
    InflectionError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    TaskAccepted,
    Unauthenticated,
    Unavailable,
)
from orchestrator.convert import task_usage_from_pb

USAGE = pb.TaskUsage(llm_calls=3, output_tokens_total=42, prompt_tokens_total=900, task_latency=1.5)

MAPPED: list[tuple[grpc.StatusCode, type[InflectionError]]] = [
    (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
    (grpc.StatusCode.NOT_FOUND, NotFound),
    (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
    (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
    (grpc.StatusCode.UNAVAILABLE, Unavailable),
    # Any other status: the base class, still carrying its code.
    (grpc.StatusCode.INTERNAL, InflectionError),
    (grpc.StatusCode.PERMISSION_DENIED, InflectionError),
]


@dataclass
class Failure:
    """How the next call fails: its status, message and trailers, and for a stream how
    many events it sends first."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    details: str = "boom"
    trailers: tuple[tuple[str, str | bytes], ...] = ()
    events_first: int = 0


class Failing(pb_grpc.OrchestratorServicer):
    def __init__(self) -> None:
        self.failure = Failure()

    def _abort(self, context: grpc.ServicerContext) -> None:
        if self.failure.trailers:
            context.set_trailing_metadata(self.failure.trailers)
        context.abort(self.failure.code, self.failure.details)

    def RunTask(  # noqa: N802 (gRPC method name)
        self, request: pb.TaskRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.TaskEvent]:
        for n in range(self.failure.events_first):
            yield pb.TaskEvent(accepted=pb.TaskAccepted(task_id=f"t{n}", agent=request.agent))
        self._abort(context)

    def Run(  # noqa: N802 (gRPC method name)
        self, request: pb.TaskRequest, context: grpc.ServicerContext
    ) -> pb.TaskResult:
        self._abort(context)
        raise AssertionError("abort returns only by raising")

    def Generate(  # noqa: N802 (gRPC method name)
        self, request: pb.GenerateRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.GenerateChunk]:
        self._abort(context)
        yield pb.GenerateChunk()

    def ListAgents(  # noqa: N802 (gRPC method name)
        self, request: pb.ListAgentsRequest, context: grpc.ServicerContext
    ) -> pb.ListAgentsResponse:
        self._abort(context)
        raise AssertionError("abort returns only by raising")

    def GetClusterStatus(  # noqa: N802 (gRPC method name)
        self, request: pb.GetClusterStatusRequest, context: grpc.ServicerContext
    ) -> pb.ClusterStatus:
        self._abort(context)
        raise AssertionError("abort returns only by raising")


@dataclass
class Served:
    servicer: Failing
    address: str


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = Failing()
    pb_grpc.add_OrchestratorServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield Served(servicer, f"127.0.0.1:{port}")
    finally:
        server.stop(grace=None).wait()


def fail_with(served: Served, **failure: Any) -> Failure:
    served.servicer.failure = Failure(**failure)
    return served.servicer.failure


# ---- the synchronous client ----------------------------------------------------------


def sync_calls(client: Client) -> dict[str, Any]:
    return {
        "run": lambda: client.run("agent", "input"),
        "run_task": lambda: list(client.run_task("agent", "input")),
        "generate": lambda: list(client.generate("prompt")),
        "list_agents": client.list_agents,
        "cluster_status": client.cluster_status,
    }


@pytest.mark.parametrize("method", ["run", "run_task", "generate", "list_agents", "cluster_status"])
@pytest.mark.parametrize(
    ("code", "kind"), MAPPED, ids=lambda v: getattr(v, "name", None) or v.__name__
)
def test_sync_status_maps_to_its_error(
    served: Served, method: str, code: grpc.StatusCode, kind: type[InflectionError]
) -> None:
    fail_with(served, code=code, details=f"{code.name.lower()} happened")
    with Client(served.address, timeout=10) as client, pytest.raises(InflectionError) as raised:
        sync_calls(client)[method]()
    error = raised.value
    assert type(error) is kind
    assert error.code is code
    assert error.details == f"{code.name.lower()} happened"
    assert str(error) == f"{code.name}: {code.name.lower()} happened"
    assert error.usage is None and error.retry_after_s is None


@pytest.mark.parametrize("method", ["run", "run_task", "generate"])
def test_sync_usage_trailer_becomes_error_usage(served: Served, method: str) -> None:
    fail_with(
        served,
        code=grpc.StatusCode.DEADLINE_EXCEEDED,
        details="the task's deadline passed",
        trailers=(("inflection-usage-bin", USAGE.SerializeToString()),),
    )
    with Client(served.address, timeout=10) as client, pytest.raises(DeadlineExceeded) as raised:
        sync_calls(client)[method]()
    assert raised.value.usage == task_usage_from_pb(USAGE)
    assert raised.value.usage.llm_calls == 3 and raised.value.usage.output_tokens_total == 42
    assert raised.value.retry_after_s is None


@pytest.mark.parametrize("method", ["run", "run_task"])
def test_sync_retry_after_trailer_becomes_retry_after_s(served: Served, method: str) -> None:
    fail_with(
        served,
        code=grpc.StatusCode.RESOURCE_EXHAUSTED,
        details="the replicas are saturated",
        trailers=(("retry-after-ms", "2500"),),
    )
    with Client(served.address, timeout=10) as client, pytest.raises(ResourceExhausted) as raised:
        sync_calls(client)[method]()
    assert raised.value.retry_after_s == 2.5
    assert raised.value.usage is None


def test_sync_stream_yields_its_events_before_the_error(served: Served) -> None:
    fail_with(
        served,
        code=grpc.StatusCode.DEADLINE_EXCEEDED,
        trailers=(("inflection-usage-bin", USAGE.SerializeToString()), ("retry-after-ms", "100")),
        events_first=1,
    )
    received = []
    with Client(served.address, timeout=10) as client, pytest.raises(DeadlineExceeded) as raised:
        for event in client.run_task("react", "input"):
            received.append(event)
    assert received == [TaskAccepted(task_id="t0", agent="react")]
    assert raised.value.usage == task_usage_from_pb(USAGE)
    assert raised.value.retry_after_s == 0.1


# ---- the asyncio client --------------------------------------------------------------


async def collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]


def async_calls(client: AsyncClient) -> dict[str, Any]:
    return {
        "run": lambda: client.run("agent", "input"),
        "run_task": lambda: collect(client.run_task("agent", "input")),
        "generate": lambda: collect(client.generate("prompt")),
        "list_agents": client.list_agents,
        "cluster_status": client.cluster_status,
    }


@pytest.mark.parametrize("method", ["run", "run_task", "generate", "list_agents", "cluster_status"])
@pytest.mark.parametrize(
    ("code", "kind"), MAPPED, ids=lambda v: getattr(v, "name", None) or v.__name__
)
async def test_async_status_maps_to_its_error(
    served: Served, method: str, code: grpc.StatusCode, kind: type[InflectionError]
) -> None:
    fail_with(served, code=code, details=f"{code.name.lower()} happened")
    async with AsyncClient(served.address, timeout=10) as client:
        with pytest.raises(InflectionError) as raised:
            await async_calls(client)[method]()
    error = raised.value
    assert type(error) is kind
    assert error.code is code
    assert error.details == f"{code.name.lower()} happened"
    assert error.usage is None and error.retry_after_s is None


@pytest.mark.parametrize("method", ["run", "run_task", "generate"])
async def test_async_usage_trailer_becomes_error_usage(served: Served, method: str) -> None:
    fail_with(
        served,
        code=grpc.StatusCode.DEADLINE_EXCEEDED,
        details="the task's deadline passed",
        trailers=(("inflection-usage-bin", USAGE.SerializeToString()),),
    )
    async with AsyncClient(served.address, timeout=10) as client:
        with pytest.raises(DeadlineExceeded) as raised:
            await async_calls(client)[method]()
    assert raised.value.usage == task_usage_from_pb(USAGE)
    assert raised.value.details == "the task's deadline passed"


@pytest.mark.parametrize("method", ["run", "run_task"])
async def test_async_retry_after_trailer_becomes_retry_after_s(served: Served, method: str) -> None:
    fail_with(
        served,
        code=grpc.StatusCode.RESOURCE_EXHAUSTED,
        details="the replicas are saturated",
        trailers=(("retry-after-ms", "2500"),),
    )
    async with AsyncClient(served.address, timeout=10) as client:
        with pytest.raises(ResourceExhausted) as raised:
            await async_calls(client)[method]()
    assert raised.value.retry_after_s == 2.5


async def test_async_stream_yields_its_events_before_the_error(served: Served) -> None:
    fail_with(
        served,
        code=grpc.StatusCode.RESOURCE_EXHAUSTED,
        trailers=(("retry-after-ms", "750"),),
        events_first=2,
    )
    received = []
    async with AsyncClient(served.address, timeout=10) as client:
        with pytest.raises(ResourceExhausted) as raised:
            async for event in client.run_task("react", "input"):
                received.append(event)
    assert received == [TaskAccepted("t0", "react"), TaskAccepted("t1", "react")]
    assert raised.value.retry_after_s == 0.75
