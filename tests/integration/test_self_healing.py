"""Self-healing replicas on real Ray: a killed replica actor is replaced under its name
while tasks keep completing, and with every replica dead the gRPC health says
NOT_SERVING until one is back."""

from __future__ import annotations

import logging

import pytest
from grpc_health.v1 import health_pb2

from orchestrator.client import Client
from tests.reliability.drills import health_of, kill, kill_under_load, wait_for

from .test_deadlines_sim import sim_deployment

pytestmark = pytest.mark.slow

REPLACED_WITHIN_S = 30.0


def test_killed_replicas_are_replaced_and_health_follows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="orchestrator")
    replicas = {
        "count": 3,
        "health_period_s": 0.5,
        "restart_backoff_initial_s": 1.0,
        "sim": {"time_scale": 1.0},
    }
    with sim_deployment(replicas) as running, Client(running.address, timeout=120) as client:
        namespace = running.config.ray.namespace
        drill = kill_under_load(client, namespace, "replica-1")
        print(f"\nreplica-1 killed under load: back to 3 of 3 in {drill.replaced_s:.1f} s")
        assert drill.lost == 0, drill.errors
        assert all(r.usage.llm_calls == 5 for r in drill.results)
        assert drill.replaced_s < REPLACED_WITHIN_S
        assert any("replica-1 died" in r.getMessage() for r in caplog.records)
        assert any("replica-1 replaced" in r.getMessage() for r in caplog.records)

        for name in ("replica-0", "replica-1", "replica-2"):
            kill(name, namespace)
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
        assert client.run("plan_execute", "Drill 99.", max_tokens=16).usage.llm_calls == 5
        assert any("health NOT_SERVING" in r.getMessage() for r in caplog.records)
