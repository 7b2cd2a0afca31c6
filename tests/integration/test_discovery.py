"""grpcurl-style tools work without the .proto file: health and server reflection."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from orchestrator.client import Client, ReplicaState

pytestmark = pytest.mark.slow


def test_health_reports_serving(live_server) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(live_server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inflection.v1.Orchestrator"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_describes_the_api(live_server) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(live_server.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert "inflection.v1.Orchestrator" in database.get_services()
        pool = DescriptorPool(database)
        service = pool.FindServiceByName("inflection.v1.Orchestrator")
        methods = {m.name for m in service.methods}
        assert {"RunTask", "Run", "Generate", "ListAgents", "GetClusterStatus"} <= methods
        run_task = service.methods_by_name["RunTask"]
        assert run_task.output_type.full_name == "inflection.v1.TaskEvent"


def test_list_agents_and_cluster_status(live_server) -> None:  # type: ignore[no-untyped-def]
    with Client(live_server.address, timeout=30) as client:
        agents = {a.name: a for a in client.list_agents()}
        plan_execute = agents["plan_execute"]
        assert plan_execute.expected_llm_calls == 5.0
        assert plan_execute.expected_token_amplification > 1.0
        assert [(s.name, s.kind) for s in plan_execute.steps] == [
            ("planner", "llm"),
            ("workers", "parallel"),
            ("worker", "llm"),
            ("synthesizer", "llm"),
        ]
        assert set(agents) >= {"chat", "react", "coding_agent", "tree_of_thoughts"}
        status = client.cluster_status()
    assert [r.name for r in status.replicas] == ["replica-0"]
    assert status.replicas[0].state is ReplicaState.READY
    assert status.replicas[0].engine == "vllm"
    assert status.max_model_len == live_server.max_model_len
