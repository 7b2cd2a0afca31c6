"""Failed authentications on a real grpc.aio server (loopback, ephemeral port) in front
of the real servicer with a fake replica pool: each is logged (rate-limited, never the
token), and a peer that fails ten times is refused with RESOURCE_EXHAUSTED and a retry
hint, before its token or its body is looked at, while other peers and health checks go
on as before."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from agents import plan_execute
from orchestrator.api.v1 import inflection_pb2 as pb
from orchestrator.api.v1 import inflection_pb2_grpc as pb_grpc
from orchestrator.config import LimitsConfig
from orchestrator.domain import ClusterStatus
from orchestrator.executor.executor import Executor
from orchestrator.protocol import RETRY_AFTER_TRAILER
from orchestrator.routing import RoundRobinRouter
from orchestrator.server import auth, edge
from orchestrator.server.app import serve_grpc
from orchestrator.server.auth import AuthFailures, BearerTokenInterceptor
from orchestrator.server.servicer import OrchestratorServicer

from ..factories import FakeDispatcher, FakeTokenizer

TOKEN = "s3cret-token"
GOOD = (("authorization", f"Bearer {TOKEN}"),)
GUESS = "guess-0123456789"
BAD = (("authorization", f"Bearer {GUESS}"),)
REQUEST = pb.TaskRequest(agent="plan_execute", input="hi")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeCluster:
    async def status(self) -> ClusterStatus:
        return ClusterStatus(replicas=(), model="tiny", max_model_len=4096)


@dataclass
class Served:
    guesser: grpc.aio.Channel  # from 127.0.0.1
    other: grpc.aio.Channel | None  # from ::1, another peer (None: no IPv6 loopback)
    clock: FakeClock


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


async def serve(failures: AuthFailures, ipv6: bool = False) -> tuple[grpc.aio.Server, int]:
    executor = Executor(
        FakeDispatcher(), RoundRobinRouter(), FakeTokenizer(), {"plan_execute": plan_execute()}
    )
    servicer = OrchestratorServicer(executor, FakeCluster(), LimitsConfig(), vocab_size=256)
    server = grpc.aio.server(interceptors=[BearerTokenInterceptor(TOKEN, failures)])
    port = server.add_insecure_port("127.0.0.1:0")
    if ipv6:
        server.add_insecure_port(f"[::1]:{port}")
    await serve_grpc(server, servicer)
    return server, port


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    clock = FakeClock()
    # A client from ::1 is another peer (one from 127.0.0.2 would still come from
    # 127.0.0.1): the same server on the IPv6 loopback too, where there is one.
    ipv6 = ipv6_loopback()
    server, port = await serve(AuthFailures(clock=clock), ipv6)
    other: grpc.aio.Channel | None = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as guesser:
            if ipv6:
                other = grpc.aio.insecure_channel(f"ipv6:[::1]:{port}")
            yield Served(guesser, other, clock)
    finally:
        if other is not None:
            await other.close()
        await server.stop(grace=None)


async def list_agents(chan: grpc.aio.Channel, metadata: Any) -> pb.ListAgentsResponse:
    return await pb_grpc.OrchestratorStub(chan).ListAgents(
        pb.ListAgentsRequest(), metadata=metadata, timeout=5
    )


async def run_task(chan: grpc.aio.Channel, metadata: Any) -> list[pb.TaskEvent]:
    stub = pb_grpc.OrchestratorStub(chan)
    return [e async for e in stub.RunTask(REQUEST, metadata=metadata, timeout=5)]


async def reflect(chan: grpc.aio.Channel, metadata: Any) -> list[str]:
    """The services reflection lists (a stream-stream method)."""
    call = chan.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = [r async for r in call(iter([request]), metadata=metadata, timeout=5)]
    return [s.name for r in responses for s in r.list_services_response.service]


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    return failed.value


async def guess_ten_times(chan: grpc.aio.Channel) -> None:
    for _ in range(10):
        error = await refused(list_agents(chan, BAD))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_ten_bad_tokens_lock_the_peer_out_with_a_retry_hint(
    served: Served, parsed: list[bytes]
) -> None:
    await guess_ten_times(served.guesser)
    for metadata in (BAD, None, GOOD):  # even the right token: it would tell a guess
        error = await refused(list_agents(served.guesser, metadata))
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.details() == (
            "too many failed authentications from 127.0.0.1; retry after 60 s"
        )
        assert (RETRY_AFTER_TRAILER, "60000") in tuple(error.trailing_metadata() or ())
    error = await refused(run_task(served.guesser, GOOD))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert parsed == []  # no body of a locked-out peer was parsed, with the token or not
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await reflect(served.guesser, GOOD)
    assert failed.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED

    # Health checks stay open to everyone.
    health = health_pb2_grpc.HealthStub(served.guesser)
    checked = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert checked.status == health_pb2.HealthCheckResponse.SERVING

    # Once the lock-out is over the right token works again, unary and streaming...
    served.clock.now += 60
    assert [a.name for a in (await list_agents(served.guesser, GOOD)).agents] == ["plan_execute"]
    events = await run_task(served.guesser, GOOD)
    assert events[-1].WhichOneof("event") == "completed"
    # ... and a wrong one is a failure again, not a lock-out.
    error = await refused(list_agents(served.guesser, BAD))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_another_peer_is_not_locked_out(served: Served) -> None:
    if served.other is None:
        pytest.skip("no IPv6 loopback for a second peer address")
    await guess_ten_times(served.guesser)
    # While someone is locked out every authenticated call checks its peer first: the
    # other peer's calls of each kind go through that check and run as before.
    assert [a.name for a in (await list_agents(served.other, GOOD)).agents] == ["plan_execute"]
    events = await run_task(served.other, GOOD)
    assert events[0].WhichOneof("event") == "accepted"
    assert events[-1].WhichOneof("event") == "completed"
    assert "inflection.v1.Orchestrator" in await reflect(served.other, GOOD)
    error = await refused(list_agents(served.other, BAD))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_failures_are_logged_rate_limited_with_the_peer_and_never_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    # A threshold above the number of guesses: all fifty are failures, none refused.
    server, port = await serve(AuthFailures(max_failures=1000))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            for _ in range(50):
                error = await refused(list_agents(chan, BAD))
                assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop(grace=None)
    lines = [r for r in caplog.records if r.name == auth.__name__]
    assert [r.levelno for r in lines] == [logging.WARNING]  # fifty in well under 10 s
    assert lines[0].getMessage() == (
        "failed authentication from 127.0.0.1 on "
        "/inflection.v1.Orchestrator/ListAgents: invalid bearer token"
    )
    assert not [r for r in caplog.records if GUESS in r.getMessage()]


async def test_a_lock_out_is_logged_once_when_it_starts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    server, port = await serve(AuthFailures())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            for _ in range(50):
                await refused(list_agents(chan, BAD))
    finally:
        await server.stop(grace=None)
    lines = [r.getMessage() for r in caplog.records if r.name == auth.__name__]
    assert lines == [
        "failed authentication from 127.0.0.1 on "
        "/inflection.v1.Orchestrator/ListAgents: invalid bearer token",
        "127.0.0.1 locked out for 60 s after 10 failed authentications within 60 s",
    ]
