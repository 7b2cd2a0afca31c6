"""Deadlines on the wire (issue 10, items 14 and 16): a real grpc.aio server on 127.0.0.1
with a fake replica pool whose calls never finish, reached with the SDK. Whichever
deadline ends a task or generation (the request's deadline_ms or the RPC's own gRPC
deadline), the client gets the server's DEADLINE_EXCEEDED with the partial usage on
`error.usage`, aborted calls included."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from agents import plan_execute
from orchestrator.client import AsyncClient, Client, DeadlineExceeded, TaskUsage
from orchestrator.config import LimitsConfig, ServerConfig
from orchestrator.domain import ClusterStatus
from orchestrator.executor.executor import Executor
from orchestrator.routing import RoundRobinRouter
from orchestrator.server.app import start_grpc_server
from orchestrator.server.servicer import OrchestratorServicer

from ..factories import FakeDispatcher, FakeTokenizer, step_of


class FakeCluster:
    async def status(self) -> ClusterStatus:
        return ClusterStatus(replicas=(), model="tiny", max_model_len=4096)


@pytest.fixture
async def address() -> AsyncIterator[str]:
    """The planner's call never finishes; a plain generation streams one delta, then
    stalls."""

    def delay(call_id: str) -> float | None:
        return None if call_id.count("-") >= 2 and step_of(call_id) == "planner" else 0.0

    fake = FakeDispatcher(delay=delay)
    stream = fake.stream

    async def stalling_stream(replica: str, call):  # type: ignore[no-untyped-def]
        async for item in stream(replica, call):
            yield item
            await asyncio.Event().wait()

    fake.stream = stalling_stream  # type: ignore[method-assign]
    executor = Executor(fake, RoundRobinRouter(), FakeTokenizer(), {"plan_execute": plan_execute()})
    servicer = OrchestratorServicer(executor, FakeCluster(), LimitsConfig(), vocab_size=256)
    server, port = await start_grpc_server(servicer, ServerConfig(host="127.0.0.1", port=0))
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


def planner_usage(usage: TaskUsage | None) -> None:
    """The planner was in flight and aborted: it counts, with its prompt."""
    assert usage is not None
    assert usage.llm_calls == 1
    assert usage.prompt_tokens_total > usage.user_input_tokens > 0


def generation_usage(usage: TaskUsage | None) -> None:
    assert usage is not None
    assert usage.llm_calls == 1
    assert usage.prompt_tokens_total == len("a prompt")
    assert usage.output_tokens_total == 4  # the one delta that was streamed


@pytest.mark.parametrize("method", ["run", "run_task"])
@pytest.mark.parametrize("deadline", ["deadline_s", "grpc"])
async def test_a_task_deadline_sends_partial_usage(
    address: str, method: str, deadline: str
) -> None:
    options = {"deadline_s": 0.2} if deadline == "deadline_s" else {}
    timeout = 1.0 if deadline == "grpc" else 30.0  # 1 s: a 50 ms margin
    async with AsyncClient(address, timeout=timeout) as client:
        with pytest.raises(DeadlineExceeded) as failed:
            if method == "run":
                await client.run("plan_execute", "hi", **options)
            else:
                async for _ in client.run_task("plan_execute", "hi", **options):
                    pass
    # The server's own status (the client's local deadline would carry no trailer).
    assert "exceeded its deadline" in failed.value.details
    planner_usage(failed.value.usage)


@pytest.mark.parametrize("deadline", ["deadline_s", "grpc"])
async def test_a_generation_deadline_sends_the_calls_usage(address: str, deadline: str) -> None:
    options = {"deadline_s": 0.2} if deadline == "deadline_s" else {}
    timeout = 1.0 if deadline == "grpc" else 30.0  # 1 s: a 50 ms margin
    async with AsyncClient(address, timeout=timeout) as client:
        with pytest.raises(DeadlineExceeded) as failed:
            async for _ in client.generate("a prompt", max_tokens=64, **options):
                pass
    assert "exceeded its deadline" in failed.value.details
    generation_usage(failed.value.usage)


@pytest.mark.parametrize("call", ["run", "generate"])
async def test_the_sync_client_exposes_partial_usage_too(address: str, call: str) -> None:
    def sync_call() -> DeadlineExceeded:
        with Client(address, timeout=30) as client:
            attempt: Callable[[], object] = (
                (lambda: client.run("plan_execute", "hi", deadline_s=0.2))
                if call == "run"
                else (lambda: list(client.generate("a prompt", max_tokens=64, deadline_s=0.2)))
            )
            with pytest.raises(DeadlineExceeded) as failed:
                attempt()
            return failed.value

    error = await asyncio.to_thread(sync_call)
    if call == "run":
        planner_usage(error.usage)
    else:
        generation_usage(error.usage)
