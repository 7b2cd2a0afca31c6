"""Failure drills shared by the reliability suite and the integration tests: kill a
replica actor while tasks run, and wait for the pool (or the gRPC health) to come back.
The caller owns the deployment; a drill only acts on it and measures."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestrator.client import Client, ReplicaState, TaskResult


def health_of(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status)


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Poll every 50 ms until `predicate` holds; the seconds it took (AssertionError
    after `timeout`)."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"not within {timeout} s: {what}"
        time.sleep(0.05)
    return time.monotonic() - started


def states(client: Client) -> dict[str, ReplicaState]:
    return {r.name: r.state for r in client.cluster_status().replicas}


def kill(replica: str, namespace: str) -> None:
    """Kill one replica's actor the way a crash would (no clean-up runs in it)."""
    import ray

    ray.kill(ray.get_actor(f"inflection-{replica}", namespace=namespace))


@dataclass(slots=True, frozen=True)
class KillUnderLoad:
    tasks: int  # tasks started
    results: tuple[TaskResult, ...]  # those that completed
    errors: tuple[str, ...]  # those that failed, as their error
    replaced_s: float  # kill -> every replica READY again (seen down in between)

    @property
    def lost(self) -> int:
        return len(self.errors)


def kill_under_load(
    client: Client,
    namespace: str,
    victim: str = "replica-1",
    tasks: int = 16,
    concurrency: int = 8,
    full_size_within_s: float = 60.0,
) -> KillUnderLoad:
    """Run `tasks` plan_execute tasks, `concurrency` at a time, kill `victim` half a
    second in, and wait for them all and for the pool to be back to full size."""

    def one_task(i: int) -> TaskResult:
        return client.run("plan_execute", f"Drill {i}.", max_tokens=16)

    with ThreadPoolExecutor(concurrency) as threads, ThreadPoolExecutor(1) as watcher:
        futures = [threads.submit(one_task, i) for i in range(tasks)]
        time.sleep(0.5)
        killed = time.monotonic()
        kill(victim, namespace)
        # Watched from the kill on: a quick replacement may be READY before the tasks end.
        seen_down = watcher.submit(
            wait_for,
            lambda: states(client)[victim] is not ReplicaState.READY,
            10,
            f"{victim} seen down",
        )
        errors = tuple(str(e) for f in futures if (e := f.exception(timeout=120)) is not None)
        results = tuple(f.result() for f in futures if f.exception() is None)
        seen_down.result(timeout=30)
    wait_for(
        lambda: all(s is ReplicaState.READY for s in states(client).values()),
        full_size_within_s,
        "every replica READY",
    )
    return KillUnderLoad(tasks, results, errors, time.monotonic() - killed)
