"""Self-healing replicas on real Ray: a killed replica actor is replaced under its name
while tasks keep completing, and with every replica dead the gRPC health says
NOT_SERVING until one is back."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestrator.client import Client, ReplicaState

from .test_deadlines_sim import sim_deployment

pytestmark = pytest.mark.slow

REPLACED_WITHIN_S = 30.0


def health_of(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status)


def wait_for(predicate, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"not within {timeout} s: {what}"
        time.sleep(0.05)
    return time.monotonic() - started


def test_killed_replicas_are_replaced_and_health_follows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import ray

    caplog.set_level(logging.WARNING, logger="orchestrator")
    replicas = {
        "count": 3,
        "health_period_s": 0.5,
        "restart_backoff_initial_s": 1.0,
        "sim": {"time_scale": 1.0},
    }
    with sim_deployment(replicas) as running, Client(running.address, timeout=120) as client:
        namespace = running.config.ray.namespace

        def states() -> list[ReplicaState]:
            return [r.state for r in client.cluster_status().replicas]

        def one_task(i: int) -> int:
            return client.run("plan_execute", f"Drill {i}.", max_tokens=16).usage.llm_calls

        with ThreadPoolExecutor(8) as threads:
            tasks = [threads.submit(one_task, i) for i in range(16)]
            time.sleep(0.5)
            killed = time.monotonic()
            ray.kill(ray.get_actor("inflection-replica-1", namespace=namespace))
            assert all(t.result(timeout=120) == 5 for t in tasks)  # no task lost
        wait_for(lambda: states()[1] is not ReplicaState.READY, 10, "replica-1 seen down")
        wait_for(lambda: all(s is ReplicaState.READY for s in states()), 60, "3 ready")
        replaced_s = time.monotonic() - killed
        print(f"\nreplica-1 killed under load: back to 3 of 3 in {replaced_s:.1f} s")
        assert replaced_s < REPLACED_WITHIN_S
        assert any("replica-1 died" in r.getMessage() for r in caplog.records)
        assert any("replica-1 replaced" in r.getMessage() for r in caplog.records)

        for name in ("replica-0", "replica-1", "replica-2"):
            ray.kill(ray.get_actor(f"inflection-{name}", namespace=namespace))
        down_s = wait_for(
            lambda: health_of(running.address) == health_pb2.HealthCheckResponse.NOT_SERVING,
            10,
            "NOT_SERVING",
        )
        up_s = wait_for(
            lambda: health_of(running.address) == health_pb2.HealthCheckResponse.SERVING,
            60,
            "SERVING again",
        )
        print(f"all killed: NOT_SERVING after {down_s:.1f} s, SERVING again {up_s:.1f} s later")
        assert one_task(99) == 5
        assert any("health NOT_SERVING" in r.getMessage() for r in caplog.records)
