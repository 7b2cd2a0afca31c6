"""The live orchestrator and the fast-forward simulator drive tasks with the same code
(`orchestrator.executor.driver`): random programs, run once through the live shell (the
asyncio `Executor`, on instant engines that answer every call at once) and once through
the simulator's discrete-event shell, make the same calls with the same prompts and
fold the same usage, seed by seed.

Both shells get engines that produce the same tokens for a call (the simulator's seeded
output pool), so any difference comes from the shells: what they dispatch, in which
context, under which budget, and how they count it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.dsl import Program
from orchestrator.config import RouterSettings, RoutingConfig, RoutingPolicy
from orchestrator.domain import (
    CallDelta,
    CallRequest,
    CallResult,
    CallTimings,
    CallUsage,
    FinishReason,
    Mode,
    TaskCompleted,
    TaskResult,
    TaskSpec,
    TaskUsage,
)
from orchestrator.executor.executor import Executor
from orchestrator.routing import ReplicaView, Router
from orchestrator.sim.cluster import ClusterSimulation
from orchestrator.sim.config import SimulationConfig
from orchestrator.workload.mix import WorkloadConfig

from ..strategies import programs

# What a call looks like to the engine: its step, branch, prompt and output budget.
CallKey = tuple[str, int, tuple[int, ...], int]


class RecordingRouter(Router):
    """The real router, noting every call it places (first attempts only)."""

    def __init__(self, settings: RouterSettings) -> None:
        super().__init__(settings)
        self.prompts: dict[str, CallRequest] = {}

    def choose(
        self,
        call: CallRequest,
        replicas: Sequence[ReplicaView],
        exclude: frozenset[str] = frozenset(),
    ) -> str:
        self.prompts.setdefault(call.call_id, call)
        return super().choose(call, replicas, exclude)


class InstantEngines:
    """Two replicas that answer each call at once with the simulator's tokens for it."""

    def __init__(self, sim: ClusterSimulation, max_model_len: int) -> None:
        self._sim = sim
        self._max_model_len = max_model_len

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    def views(self) -> list[ReplicaView]:
        return [ReplicaView("instant-0", True, 0), ReplicaView("instant-1", True, 0)]

    async def call(self, replica_name: str, call: CallRequest) -> CallResult:
        n = call.sampling.max_tokens
        ids = self._sim.call_output(call.sampling.seed, n)
        timings = CallTimings(queue_time=0.0, ttft=0.0, tpot=None, itl=(), e2e=0.0)
        usage = CallUsage(len(call.prompt_token_ids), 0, n)
        return CallResult(call.call_id, ids, "", FinishReason.LENGTH, usage, timings)

    async def stream(
        self, replica_name: str, call: CallRequest
    ) -> AsyncGenerator[CallDelta | CallResult, None]:
        yield await self.call(replica_name, call)


def calls(router: RecordingRouter, step_of: dict[str, tuple[str, int]]) -> list[CallKey]:
    keys = [
        (*step_of[call_id], request.prompt_token_ids, request.sampling.max_tokens)
        for call_id, request in router.prompts.items()
    ]
    return sorted(keys)


def counted(usage: TaskUsage) -> tuple[float, ...]:
    """The usage figures that do not depend on time or on the prefix cache."""
    return (
        usage.user_input_tokens,
        usage.final_output_tokens,
        usage.llm_calls,
        usage.tool_calls,
        usage.prompt_tokens_total,
        usage.output_tokens_total,
        usage.token_amplification,
        usage.output_amplification,
        usage.critical_path_calls,
    )


def steps(result: TaskResult) -> dict[str, tuple[str, int]]:
    return {c.call_id: (c.step, c.branch) for c in result.calls}


async def run_live(executor: Executor, spec: TaskSpec) -> TaskResult:
    task = executor.prepare(spec)
    async for event in executor.run(task, stream_answer=False):
        if isinstance(event, TaskCompleted):
            return event.result
    raise AssertionError("the live task ended without a result")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    program=programs(),
    seed=st.integers(0, 2**40),
    words=st.integers(1, 40),
    policy=st.sampled_from([RoutingPolicy.PROGRAM_AWARE, RoutingPolicy.ROUND_ROBIN]),
)
def test_live_and_fast_forward_shells_make_the_same_calls_and_usage(
    program: Program, seed: int, words: int, policy: RoutingPolicy
) -> None:
    spec = TaskSpec(agent=program.name, input=" bany" * words, mode=Mode.SYNTHETIC, seed=seed)
    routing = RoutingConfig(policy=policy)
    config = SimulationConfig(
        replicas=2,
        routing=routing,
        duration_s=1.0,
        workload=WorkloadConfig(mix={program.name: 1.0}),
    )
    ff_router = RecordingRouter(routing.router_settings())
    sim = ClusterSimulation(
        config, programs={program.name: program}, router=ff_router, tasks=[(0.0, spec)]
    )
    [fast_forward] = sim.run().results

    live_router = RecordingRouter(routing.router_settings())
    executor = Executor(
        InstantEngines(sim, config.engine.max_model_len),
        live_router,
        sim.tokenizer,
        {program.name: program},
        max_concurrent_calls_per_task=config.limits.max_concurrent_calls_per_task,
        max_retries=config.limits.max_retries,
    )
    live = asyncio.run(run_live(executor, spec))

    assert calls(live_router, steps(live)) == calls(ff_router, steps(fast_forward))
    assert counted(live.usage) == counted(fast_forward.usage)
    assert sorted((t.step, t.result_tokens) for t in live.tools) == sorted(
        (t.step, t.result_tokens) for t in fast_forward.tools
    )
