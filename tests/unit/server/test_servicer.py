"""The servicer end to end on a real grpc.aio server (127.0.0.1, ephemeral port) with a
fake replica pool: agent listings with expected costs, step names from nested programs,
and tool steps on the wire."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from agents import Tool, plan_execute
from agents.distributions import Constant
from orchestrator.api.v1 import inflection_pb2 as pb
from orchestrator.api.v1 import inflection_pb2_grpc as pb_grpc
from orchestrator.config import LimitsConfig, ServerConfig
from orchestrator.convert import event_from_pb
from orchestrator.domain import ClusterStatus, StepFinished, StepKind, StepStarted
from orchestrator.executor.executor import Executor
from orchestrator.routing import RoundRobinRouter
from orchestrator.server.app import start_grpc_server
from orchestrator.server.servicer import OrchestratorServicer

from ..factories import FakeDispatcher, FakeTokenizer, llm, program, step_of

TOOLING = program(
    llm("ask"),
    Tool("lookup", result_tokens=Constant(6.0)),
    llm("answer"),
    name="tooling",
)


class FakeCluster:
    async def status(self) -> ClusterStatus:
        return ClusterStatus(replicas=(), model="tiny", max_model_len=4096)


@dataclass
class Served:
    stub: pb_grpc.OrchestratorStub
    fake: FakeDispatcher


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    fake = FakeDispatcher()
    programs = {"plan_execute": plan_execute(), "tooling": TOOLING}
    executor = Executor(fake, RoundRobinRouter(), FakeTokenizer(), programs)
    servicer = OrchestratorServicer(executor, FakeCluster(), LimitsConfig(), vocab_size=256)
    server, port = await start_grpc_server(servicer, ServerConfig(host="127.0.0.1", port=0))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(pb_grpc.OrchestratorStub(channel), fake)
    finally:
        await channel.close()
        await server.stop(grace=None)


async def test_list_agents_reports_steps_and_expected_costs(served: Served) -> None:
    response = await served.stub.ListAgents(pb.ListAgentsRequest(), timeout=10)
    assert [a.name for a in response.agents] == ["plan_execute", "tooling"]
    agent = response.agents[0]
    assert agent.expected_llm_calls == 5.0
    assert agent.expected_token_amplification > 1.0
    assert agent.source
    assert [(s.name, s.kind, s.path, s.mean_count) for s in agent.steps] == [
        ("planner", "llm", "body[0]", 1.0),
        ("workers", "parallel", "body[1]", 3.0),
        ("worker", "llm", "body[1].body[0]", 1.0),
        ("synthesizer", "llm", "body[2]", 1.0),
    ]
    tooling = response.agents[1]
    assert tooling.expected_llm_calls == 2.0
    assert [(s.kind, s.mean_tokens) for s in tooling.steps][1] == ("tool", 6.0)


async def test_step_max_tokens_may_name_a_nested_step(served: Served) -> None:
    request = pb.TaskRequest(agent="plan_execute", input="hi", step_max_tokens={"worker": 5})
    events = [e async for e in served.stub.RunTask(request, timeout=10)]
    assert events[-1].WhichOneof("event") == "completed"
    workers = [r for r in served.fake.requests if step_of(r.call_id) == "worker"]
    assert [r.sampling.max_tokens for r in workers] == [5, 5, 5]


async def test_unknown_step_names_every_step_of_the_program(served: Served) -> None:
    request = pb.TaskRequest(agent="plan_execute", input="hi", step_max_tokens={"critic": 5})
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await served.stub.Run(request, timeout=10)
    assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert failed.value.details() == (
        "step_max_tokens: agent 'plan_execute' has no step 'critic' "
        "(its llm steps: planner, worker, synthesizer)"
    )


async def test_tool_steps_reach_the_client(served: Served) -> None:
    request = pb.TaskRequest(agent="tooling", input="hi")
    events = [event_from_pb(e) async for e in served.stub.RunTask(request, timeout=10)]
    [started] = [e for e in events if isinstance(e, StepStarted) and e.kind is StepKind.TOOL]
    assert (started.step, started.replica) == ("lookup", "")
    [finished] = [e for e in events if isinstance(e, StepFinished) and e.tool is not None]
    assert finished.call is None
    assert finished.tool is not None and finished.tool.result_tokens == 6
    result = await served.stub.Run(request, timeout=10)
    assert (result.usage.tool_calls, result.usage.llm_calls) == (1, 2)
    assert [t.step for t in result.tools] == ["lookup"]
