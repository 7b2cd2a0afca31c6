"""What `inflection serve` decides and enforces before any replica starts: which Ray
cluster it uses (never a stranger's), a port already in use, and the limits the gRPC
server itself applies per connection (real grpc.aio servers on 127.0.0.1, fake replicas)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agents import plan_execute
from orchestrator.api.v1 import inflection_pb2 as pb
from orchestrator.api.v1 import inflection_pb2_grpc as pb_grpc
from orchestrator.config import DeploymentConfig, LimitsConfig, RayConfig, ServerConfig
from orchestrator.domain import ClusterStatus
from orchestrator.executor.executor import Executor
from orchestrator.routing import RoundRobinRouter
from orchestrator.server.app import (
    RayTarget,
    StartupError,
    gcs_endpoint,
    grpc_server_options,
    max_request_bytes,
    ray_target,
    start_grpc_server,
)
from orchestrator.server.servicer import OrchestratorServicer

from ..factories import FakeDispatcher, FakeTokenizer

# --- which Ray cluster -------------------------------------------------------------


def test_no_address_starts_a_private_cluster_even_if_one_runs_on_the_host() -> None:
    assert ray_target(RayConfig(), {}) == RayTarget(None, "default")


def test_no_address_inside_a_ray_job_joins_the_jobs_cluster() -> None:
    # `ray job submit` gives its driver RAY_ADDRESS: the job's own cluster.
    target = ray_target(RayConfig(), {"RAY_ADDRESS": "10.0.0.5:6379"})
    assert target == RayTarget("10.0.0.5:6379", "RAY_ADDRESS")


@pytest.mark.parametrize(
    ("address", "env", "expected"),
    [
        ("local", {"RAY_ADDRESS": "10.0.0.5:6379"}, None),  # local is private, always
        ("auto", {}, "auto"),
        ("10.0.0.7:6379", {"RAY_ADDRESS": "10.0.0.5:6379"}, "10.0.0.7:6379"),
    ],
)
def test_an_explicit_address_wins(address: str, env: dict[str, str], expected: str | None) -> None:
    assert ray_target(RayConfig(address=address), env).address == expected


@pytest.mark.parametrize(
    ("address", "endpoint"),
    [
        ("127.0.0.1:6379", ("127.0.0.1", 6379)),
        ("ray://head:10001", ("head", 10001)),
        ("[::1]:6379", ("::1", 6379)),
    ],
)
def test_gcs_endpoint(address: str, endpoint: tuple[str, int]) -> None:
    assert gcs_endpoint(address) == endpoint


def test_an_address_without_a_port_is_one_line() -> None:
    with pytest.raises(StartupError, match="is not host:port"):
        gcs_endpoint("head-node")


# --- the gRPC server's own limits ----------------------------------------------------


def test_options_follow_the_config() -> None:
    config = DeploymentConfig.model_validate(
        {"server": {"max_concurrent_streams": 7, "min_client_ping_interval_s": 30}}
    )
    options = dict(grpc_server_options(config))
    assert options["grpc.so_reuseport"] == 0
    assert options["grpc.max_concurrent_streams"] == 7
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 30_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.max_receive_message_length"] == max_request_bytes(config)


def test_the_request_limit_follows_limits() -> None:
    small = DeploymentConfig.model_validate({"limits": {"max_input_chars": 100_000}})
    assert max_request_bytes(small) == 400_000 + 64 * 1024  # 4 bytes per character
    # A prompt of max_model_len token ids (5 bytes each) must fit too.
    tiny = DeploymentConfig.model_validate({"limits": {"max_input_chars": 10}})
    assert max_request_bytes(tiny) == 5 * 16384 + 64 * 1024
    fixed = DeploymentConfig.model_validate({"server": {"max_request_bytes": 4096}})
    assert max_request_bytes(fixed) == 4096


class _FakeCluster:
    async def status(self) -> ClusterStatus:
        return ClusterStatus(replicas=(), model="tiny", max_model_len=4096)


def _servicer() -> OrchestratorServicer:
    executor = Executor(
        FakeDispatcher(), RoundRobinRouter(), FakeTokenizer(), {"plan_execute": plan_execute()}
    )
    return OrchestratorServicer(executor, _FakeCluster(), LimitsConfig(), vocab_size=256)


@pytest.fixture
async def served() -> AsyncIterator[tuple[grpc.aio.Server, int]]:
    server, port = await start_grpc_server(_servicer(), ServerConfig(host="127.0.0.1", port=0))
    try:
        yield server, port
    finally:
        await server.stop(grace=None)


async def test_an_oversized_request_is_refused_by_grpc_and_the_server_keeps_serving(
    served: tuple[grpc.aio.Server, int],
) -> None:
    _, port = served
    limit = max_request_bytes(DeploymentConfig())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        stub = pb_grpc.OrchestratorStub(chan)
        request = pb.TaskRequest(agent="plan_execute", input="x" * (limit + 1))
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            async for _ in stub.RunTask(request, timeout=10):
                pass
        assert failed.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        health = health_pb2_grpc.HealthStub(chan)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        agents = await stub.ListAgents(pb.ListAgentsRequest(), timeout=5)
        assert [a.name for a in agents.agents] == ["plan_execute"]


async def test_a_connection_gets_at_most_max_concurrent_streams() -> None:
    in_flight = 0
    most = 0
    release = asyncio.Event()

    class Slow(pb_grpc.OrchestratorServicer):
        async def ListAgents(  # noqa: N802 - the proto's name
            self, request: pb.ListAgentsRequest, context: object
        ) -> pb.ListAgentsResponse:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            await release.wait()
            in_flight -= 1
            return pb.ListAgentsResponse()

    config = ServerConfig(host="127.0.0.1", port=0, max_concurrent_streams=2)
    server, port = await start_grpc_server(Slow(), config)  # type: ignore[arg-type]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            stub = pb_grpc.OrchestratorStub(chan)
            calls = [
                asyncio.ensure_future(stub.ListAgents(pb.ListAgentsRequest(), timeout=10))
                for _ in range(6)
            ]
            await asyncio.sleep(1.0)
            assert most == 2
            release.set()
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await server.stop(grace=None)
    # Streams beyond the limit wait in the client or, when they crossed the server's
    # SETTINGS, are refused (REFUSED_STREAM: UNAVAILABLE, safe to retry); never served.
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert all(o.code() is grpc.StatusCode.UNAVAILABLE for o in refused)
    assert len(outcomes) - len(refused) >= 2


async def test_a_second_server_on_a_port_in_use_is_refused(
    served: tuple[grpc.aio.Server, int],
) -> None:
    _, port = served
    with pytest.raises(StartupError, match=f"^port 127.0.0.1:{port} is in use$"):
        await start_grpc_server(_servicer(), ServerConfig(host="127.0.0.1", port=port))
