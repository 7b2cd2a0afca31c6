"""The gRPC health service follows the replicas: NOT_SERVING while none is healthy,
SERVING again once one is, each change logged once."""

from __future__ import annotations

import asyncio
import logging

import pytest
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from orchestrator.replicas.healing import ServiceHealth
from orchestrator.routing import ReplicaView
from orchestrator.server import app
from orchestrator.server.app import SERVICE_NAME, follow_replicas


class Replicas:
    def __init__(self) -> None:
        self.healthy = [True, True]

    def views(self) -> list[ReplicaView]:
        return [ReplicaView(f"replica-{i}", h, 0) for i, h in enumerate(self.healthy)]


async def status(health: health_aio.HealthServicer, service: str) -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    reply = await health.Check(request, None)  # type: ignore[arg-type]
    return int(reply.status)


async def test_health_follows_the_replicas(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(app, "SERVING_CHECK_S", 0.01)
    health = health_aio.HealthServicer()
    for service in ("", SERVICE_NAME):
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    replicas = Replicas()
    task = asyncio.create_task(follow_replicas(health, replicas, ServiceHealth.SERVING))  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING)
    try:
        replicas.healthy = [False, True]
        await asyncio.sleep(0.05)
        assert await status(health, "") == health_pb2.HealthCheckResponse.SERVING
        replicas.healthy = [False, False]
        await asyncio.sleep(0.1)  # ten checks
        for service in ("", SERVICE_NAME):
            assert await status(health, service) == health_pb2.HealthCheckResponse.NOT_SERVING
        await asyncio.sleep(0.05)
        replicas.healthy = [True, False]
        await asyncio.sleep(0.1)
        for service in ("", SERVICE_NAME):
            assert await status(health, service) == health_pb2.HealthCheckResponse.SERVING
    finally:
        task.cancel()
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert lines == [
        "health NOT_SERVING: 0 of 2 replicas healthy",
        "health SERVING: 1 of 2 replicas healthy",
    ]
