"""A draining server as its clients see it (issue 13 item 2): the gRPC methods that
start work fail UNAVAILABLE with the retry-after-ms trailer the SDK reads, the HTTP front
door answers 503 with Retry-After in OpenAI's error shape, and the listings keep
answering. Real servers (grpc.aio, aiohttp) in front of a real executor and a fake pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer

from agents import plan_execute
from orchestrator.client import AsyncClient, Unavailable
from orchestrator.config import LimitsConfig, ServerConfig
from orchestrator.domain import ClusterStatus
from orchestrator.executor.executor import DRAIN_RETRY_AFTER_S, Executor
from orchestrator.routing import RoundRobinRouter
from orchestrator.server.app import start_grpc_server
from orchestrator.server.http import FrontDoor
from orchestrator.server.servicer import OrchestratorServicer

from ..factories import FakeDispatcher, FakeTokenizer


class FakeCluster:
    async def status(self) -> ClusterStatus:
        return ClusterStatus(replicas=(), model="tiny", max_model_len=4096)


@pytest.fixture
async def drained() -> Executor:
    executor = Executor(
        FakeDispatcher(), RoundRobinRouter(), FakeTokenizer(), {"plan_execute": plan_execute()}
    )
    await executor.drain(1.0)
    return executor


@pytest.fixture
async def grpc_client(drained: Executor) -> AsyncIterator[AsyncClient]:
    servicer = OrchestratorServicer(drained, FakeCluster(), LimitsConfig(), vocab_size=256)
    server, port = await start_grpc_server(servicer, ServerConfig(host="127.0.0.1", port=0))
    try:
        async with AsyncClient(f"127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        await server.stop(grace=None)


async def test_grpc_refuses_new_work_with_unavailable_and_a_retry_hint(
    grpc_client: AsyncClient,
) -> None:
    with pytest.raises(Unavailable) as refused:
        await grpc_client.run("plan_execute", "hi")
    assert refused.value.code is grpc.StatusCode.UNAVAILABLE
    assert "the server is draining (shutting down)" in refused.value.details
    assert refused.value.retry_after_s == DRAIN_RETRY_AFTER_S
    with pytest.raises(Unavailable) as refused:
        async for _ in grpc_client.run_task("plan_execute", "hi"):
            pass
    assert refused.value.retry_after_s == DRAIN_RETRY_AFTER_S
    with pytest.raises(Unavailable) as refused:
        async for _ in grpc_client.generate("hi", max_tokens=4):
            pass
    assert refused.value.retry_after_s == DRAIN_RETRY_AFTER_S
    # The listings keep answering while the server drains.
    assert [a.name for a in await grpc_client.list_agents()] == ["plan_execute"]
    assert (await grpc_client.cluster_status()).model == "tiny"


@pytest.fixture
async def http_client(drained: Executor) -> AsyncIterator[TestClient[Any, Any]]:
    door = FrontDoor(drained, "tiny", LimitsConfig(), 256)
    client: TestClient[Any, Any] = TestClient(TestServer(door.app()))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


CHAT = {"model": "plan_execute", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": "tiny", "prompt": "hi", "max_tokens": 4}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("path", "body"), [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)]
)
async def test_http_refuses_new_work_with_503_and_retry_after(
    http_client: TestClient[Any, Any], path: str, body: dict[str, Any], stream: bool
) -> None:
    response = await http_client.post(path, json={**body, "stream": stream})
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert response.headers["retry-after-ms"] == str(round(DRAIN_RETRY_AFTER_S * 1000))
    error = (await response.json())["error"]
    assert error["type"] == "server_error"
    assert error["code"] == "unavailable"
    assert "the server is draining (shutting down)" in error["message"]
    models = await http_client.get("/v1/models")  # still answers
    assert models.status == 200
