"""A replica dies mid-task: its calls are retried on another replica and the task
completes, with the retries counted; the dead replica is reported unhealthy."""

from __future__ import annotations

import asyncio
import time

import pytest

from orchestrator.client import Client, ReplicaState, StepStarted, TaskCompleted

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
