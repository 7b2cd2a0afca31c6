"""A replica dies mid-task: its calls are retried on another replica and the task
completes, with the retries counted; the dead replica is reported unhealthy. When it
dies while streaming the answer, the retry resumes after what the client already has."""

from __future__ import annotations

import asyncio
import time

import pytest

from orchestrator.client import (
    AnswerDelta,
    Client,
    ReplicaState,
    StepStarted,
    TaskCompleted,
)

from .test_deadlines_sim import sim_deployment

pytestmark = pytest.mark.slow

NAMESPACE = "inflection-failover"


def test_calls_of_a_dead_replica_are_retried_on_another(live_server) -> None:  # type: ignore[no-untyped-def]
    import ray

    from orchestrator.config import DeploymentConfig
    from orchestrator.server.app import Deployment

    config = DeploymentConfig.model_validate(
        {
            "ray": {"namespace": NAMESPACE},
            "server": {"port": 0},
            # The session's cluster has 2 CPUs and its own replica holds one.
            "replicas": {"count": 2, "backend": "vllm", "num_cpus": 0, "health_period_s": 0.5},
            "routing": {"policy": "round_robin"},
        }
    )
    deployment = asyncio.run_coroutine_threadsafe(
        Deployment.start(config), live_server.loop
    ).result(timeout=600)
    try:
        with Client(deployment.address, timeout=300) as client:
            events = client.run_task(
                "plan_execute",
                "Plan a failover drill.",
                step_max_tokens={"planner": 4, "worker": 200, "synthesizer": 8},
            )
            killed = False
            result = None
            for event in events:
                if isinstance(event, StepStarted) and event.step == "worker" and not killed:
                    # Round robin put the workers on both replicas; kill the first's.
                    ray.kill(ray.get_actor(f"inflection-{event.replica}", namespace=NAMESPACE))
                    victim = event.replica
                    killed = True
                if isinstance(event, TaskCompleted):
                    result = event.result
            assert result is not None
            usage = result.usage
            assert usage.retried_calls >= 1
            assert usage.llm_calls == 5  # every call finished, once
            workers = [c for c in result.calls if c.step == "worker"]
            assert all(c.usage.output_tokens == 200 for c in workers)
            assert all(c.replica != victim for c in result.calls if c.step != "planner")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                states = {r.name: r.state for r in client.cluster_status().replicas}
                if states[victim] is ReplicaState.UNHEALTHY:
                    break
                time.sleep(0.5)
            assert states[victim] is ReplicaState.UNHEALTHY
            # The survivor keeps serving.
            assert client.run("plan_execute", "Again.", max_tokens=4).usage.llm_calls == 5
    finally:
        asyncio.run_coroutine_threadsafe(deployment.stop(), live_server.loop).result(timeout=120)


def test_an_answer_whose_replica_dies_mid_stream_reaches_the_client_once() -> None:
    """Simulated replicas in real time, so the 400-token answer streams for seconds; its
    replica is killed after the first delta. The retry regenerates the same tokens (a
    simulated call's output is keyed by its id), and the client gets each token once."""
    import ray

    replicas = {"count": 2, "health_period_s": 0.5, "sim": {"time_scale": 1.0}}
    with sim_deployment(replicas) as running, Client(running.address, timeout=120) as client:
        namespace = running.config.ray.namespace
        events = client.run_task(
            "plan_execute",
            "Plan a failover drill.",
            step_max_tokens={"planner": 8, "worker": 8, "synthesizer": 400},
        )
        answer_replica = ""
        victim = ""
        deltas: list[AnswerDelta] = []
        result = None
        for event in events:
            if isinstance(event, StepStarted) and event.step == "synthesizer":
                answer_replica = event.replica
            if isinstance(event, AnswerDelta):
                deltas.append(event)
                if not victim:
                    victim = answer_replica
                    ray.kill(ray.get_actor(f"inflection-{victim}", namespace=namespace))
            if isinstance(event, TaskCompleted):
                result = event.result
        assert result is not None and victim
        [answer] = [c for c in result.calls if c.step == "synthesizer"]
        assert answer.replica != victim
        assert answer.usage.output_tokens == 400
        assert result.usage.retried_calls >= 1
        # Every token once, in order: the deltas add up to the final answer exactly.
        assert "".join(d.text for d in deltas) == result.answer
        assert sum(len(d.token_ids) for d in deltas) == 400
        assert len(deltas) > 2  # it really streamed before and after the kill
