"""Bearer-token auth on a real grpc.aio server (127.0.0.1, ephemeral port) in front of the
real servicer, with a fake replica pool behind the executor."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agents import plan_execute
from orchestrator.api.v1 import inflection_pb2 as pb
from orchestrator.api.v1 import inflection_pb2_grpc as pb_grpc
from orchestrator.config import LimitsConfig, ServerConfig
from orchestrator.domain import ClusterStatus
from orchestrator.executor.executor import Executor
from orchestrator.routing import RoundRobinRouter
from orchestrator.server.app import SERVICE_NAME, start_grpc_server
from orchestrator.server.servicer import OrchestratorServicer

from ..factories import FakeDispatcher, FakeTokenizer

TOKEN = "s3cret-token"
GOOD = (("authorization", f"Bearer {TOKEN}"),)


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


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server, chan = await serve(TOKEN)
    try:
        yield chan
    finally:
        await chan.close()
        await server.stop(grace=None)


async def list_agents(chan: grpc.aio.Channel, metadata: object = None) -> pb.ListAgentsResponse:
    stub = pb_grpc.OrchestratorStub(chan)
    return await stub.ListAgents(pb.ListAgentsRequest(), metadata=metadata, timeout=5)


async def unauthenticated(call: object) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call  # type: ignore[misc]
    assert failed.value.code() is grpc.StatusCode.UNAUTHENTICATED
    return failed.value.details() or ""


async def test_missing_token_is_unauthenticated_and_says_how_to_send_one(
    channel: grpc.aio.Channel,
) -> None:
    details = await unauthenticated(list_agents(channel))
    assert "missing authorization metadata" in details
    assert "'authorization: Bearer <token>'" in details


@pytest.mark.parametrize(
    "value", ["Bearer wrong", f"Bearer {TOKEN}x", TOKEN, f"Basic {TOKEN}", "Bearer "]
)
async def test_wrong_token_is_unauthenticated(channel: grpc.aio.Channel, value: str) -> None:
    details = await unauthenticated(list_agents(channel, (("authorization", value),)))
    assert details == "invalid bearer token"


async def test_right_token_passes(channel: grpc.aio.Channel) -> None:
    response = await list_agents(channel, GOOD)
    assert [a.name for a in response.agents] == ["plan_execute"]
    assert response.agents[0].expected_llm_calls == 5
    status = await pb_grpc.OrchestratorStub(channel).GetClusterStatus(
        pb.GetClusterStatusRequest(), metadata=GOOD, timeout=5
    )
    assert status.max_model_len == 4096


async def test_streaming_calls_are_guarded_too(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.OrchestratorStub(channel)
    request = pb.TaskRequest(agent="plan_execute", input="hi")

    async def first_event(metadata: object = None) -> pb.TaskEvent:
        events = [e async for e in stub.RunTask(request, metadata=metadata, timeout=5)]
        return events[0] if events else pb.TaskEvent()

    details = await unauthenticated(first_event())
    assert "Bearer" in details
    events = [e async for e in stub.RunTask(request, metadata=GOOD, timeout=5)]
    assert events[0].WhichOneof("event") == "accepted"
    assert events[-1].WhichOneof("event") == "completed"
    assert events[-1].completed.usage.llm_calls == 5


async def test_health_check_needs_no_token(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_without_a_configured_token_no_metadata_is_needed() -> None:
    server, chan = await serve(None)
    try:
        response = await list_agents(chan)
        assert [a.name for a in response.agents] == ["plan_execute"]
    finally:
        await chan.close()
        await server.stop(grace=None)
