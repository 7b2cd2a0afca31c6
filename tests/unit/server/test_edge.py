"""Hostile request bodies at the server edge, on a real grpc.aio server (127.0.0.1,
ephemeral port) in front of the real servicer with a fake replica pool: bytes that are not
a valid message get INVALID_ARGUMENT and one short, rate-limited log line (never a
traceback), the server keeps serving, and with auth on a caller without a token is
refused before its body is parsed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest

from agents import plan_execute
from orchestrator.api.v1 import inflection_pb2 as pb
from orchestrator.api.v1 import inflection_pb2_grpc as pb_grpc
from orchestrator.config import LimitsConfig, ServerConfig
from orchestrator.domain import ClusterStatus
from orchestrator.executor.executor import Executor
from orchestrator.routing import RoundRobinRouter
from orchestrator.server import edge
from orchestrator.server.app import start_grpc_server
from orchestrator.server.servicer import OrchestratorServicer

from ..factories import FakeDispatcher, FakeTokenizer

TOKEN = "s3cret-token"
GOOD = (("authorization", f"Bearer {TOKEN}"),)
# Field 1, length-delimited, with a length that never ends: no message type parses it.
GARBAGE = b"\x0a\xff"
SERVICE = "/inflection.v1.Orchestrator"


class FakeCluster:
    async def status(self) -> ClusterStatus:
        return ClusterStatus(replicas=(), model="tiny", max_model_len=4096)


async def serve(token: str | None) -> tuple[grpc.aio.Server, grpc.aio.Channel]:
    executor = Executor(
        FakeDispatcher(), RoundRobinRouter(), FakeTokenizer(), {"plan_execute": plan_execute()}
    )
    servicer = OrchestratorServicer(executor, FakeCluster(), LimitsConfig(), vocab_size=256)
    server, port = await start_grpc_server(
        servicer, ServerConfig(host="127.0.0.1", port=0, auth_token=token)
    )
    return server, grpc.aio.insecure_channel(f"127.0.0.1:{port}")


@pytest.fixture(autouse=True)
def fresh_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no bad body logged recently."""
    monkeypatch.setattr(edge, "BAD_BODIES", edge.RateLimitedLog())


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """Every request body the Orchestrator service's deserializers parse."""
    bodies: list[bytes] = []
    real = edge.parse

    def spy(message: Any, data: bytes) -> Any:
        bodies.append(data)
        return real(message, data)

    monkeypatch.setattr(edge, "parse", spy)
    yield bodies


async def started(token: str | None) -> AsyncIterator[grpc.aio.Channel]:
    server, chan = await serve(token)
    try:
        yield chan
    finally:
        await chan.close()
        await server.stop(grace=None)


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    async for chan in started(None):
        yield chan


@pytest.fixture
async def guarded() -> AsyncIterator[grpc.aio.Channel]:
    async for chan in started(TOKEN):
        yield chan


async def send_raw(
    chan: grpc.aio.Channel, method: str, body: bytes, metadata: Any = None
) -> grpc.aio.AioRpcError:
    """Send `body` as it is (no serializer) and return the error the server answers."""
    path = f"{SERVICE}/{method}"
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        if method in ("RunTask", "Generate"):
            async for _ in chan.unary_stream(path)(body, metadata=metadata, timeout=5):
                pass
        else:
            await chan.unary_unary(path)(body, metadata=metadata, timeout=5)
    return failed.value


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("Run", "inflection.v1.TaskRequest"),
        ("RunTask", "inflection.v1.TaskRequest"),
        ("Generate", "inflection.v1.GenerateRequest"),
        ("ListAgents", "inflection.v1.ListAgentsRequest"),
        ("GetClusterStatus", "inflection.v1.GetClusterStatusRequest"),
    ],
)
async def test_unparseable_body_is_invalid_argument_without_a_traceback(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture, method: str, message: str
) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(20):
        error = await send_raw(channel, method, GARBAGE)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == f"request body is not a valid {message}"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text
    lines = [r.getMessage() for r in caplog.records if r.name == edge.__name__]
    assert len(lines) == 1, lines  # rate-limited: one line for twenty bad bodies
    assert method in lines[0] and message in lines[0]
    assert len(lines[0]) < 200
    # The server keeps serving.
    response = await pb_grpc.OrchestratorStub(channel).ListAgents(pb.ListAgentsRequest(), timeout=5)
    assert [a.name for a in response.agents] == ["plan_execute"]


async def test_valid_bodies_still_run(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.OrchestratorStub(channel)
    request = pb.TaskRequest(agent="plan_execute", input="hi")
    result = await stub.Run(request, timeout=5)
    assert result.usage.llm_calls == 5
    events = [e async for e in stub.RunTask(request, timeout=5)]
    assert events[-1].WhichOneof("event") == "completed"


@pytest.mark.parametrize("method", ["Run", "RunTask", "Generate", "ListAgents"])
async def test_without_a_token_the_body_is_never_parsed(
    guarded: grpc.aio.Channel,
    parsed: list[bytes],
    caplog: pytest.LogCaptureFixture,
    method: str,
) -> None:
    caplog.set_level(logging.INFO)
    for body in (GARBAGE, pb.TaskRequest(agent="plan_execute", input="hi").SerializeToString()):
        error = await send_raw(guarded, method, body)
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert parsed == []
    assert not [r for r in caplog.records if r.name == edge.__name__]
    # With the token the same garbage reaches the parser and is refused as such.
    error = await send_raw(guarded, method, GARBAGE, metadata=GOOD)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert parsed == [GARBAGE]


def test_every_method_of_the_service_is_registered() -> None:
    servicer: Any = OrchestratorServicer.__new__(OrchestratorServicer)
    methods = pb.DESCRIPTOR.services_by_name["Orchestrator"].methods
    assert set(edge.orchestrator_handlers(servicer)) == {m.name for m in methods}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_limited_log_writes_one_line_per_period_per_key_and_counts_the_rest() -> None:
    clock = FakeClock()
    limited = edge.RateLimitedLog(every_s=10.0, clock=clock)
    assert limited.admit("/a") == 0
    assert limited.admit("/a") is None
    assert limited.admit("/b") == 0  # another method has its own budget
    clock.now += 9.9
    assert limited.admit("/a") is None
    clock.now += 0.2
    assert limited.admit("/a") == 2  # the two suppressed since the last line
    assert limited.admit("/a") is None
    clock.now += 60
    assert limited.admit("/a") == 1
    assert limited.admit("/b") == 0


def test_rate_limited_line_says_how_many_were_suppressed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    limited = edge.RateLimitedLog(every_s=10.0, clock=clock)
    for _ in range(4):
        limited.warning("/a", "bad body")
    clock.now += 10
    limited.warning("/a", "bad body")
    assert [r.getMessage() for r in caplog.records] == [
        "bad body",
        "bad body (3 more like it in the last 10 s not logged)",
    ]
