"""Graceful drain (issue 13 item 2) as a user sees it.

`inflection serve` on SIGTERM: the gRPC health turns NOT_SERVING at once, a new task is
refused UNAVAILABLE with a retry hint, the tasks in flight complete, and the command
exits 0; with a drain timeout shorter than a task, the task in flight fails UNAVAILABLE
with its partial usage. And one replica drained out of a running pool: its calls finish,
routing stops choosing it, and self-healing does not bring it back.

Simulated replicas run at time_scale 20 (a task of plan_execute with max_tokens 10 takes
about 4 s), so the tasks are still running when the signal comes. Each `serve` starts its
own private Ray cluster (ray.address: local) and is stopped by its PID."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestrator.client import Client, InflectionError, TaskResult, Unavailable

from .test_deadlines_sim import sim_deployment
from .test_serve_lifecycle import START_TIMEOUT_S, _free_port, inflection

pytestmark = pytest.mark.slow

TIME_SCALE = 20.0  # wall seconds per simulated second: calls of a few tokens take seconds


def health_of(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status)


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Poll every 50 ms until `predicate` holds; the seconds it took."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"not within {timeout} s: {what}"
        time.sleep(0.05)
    return time.monotonic() - started


def _serve_config(tmp_path: Path, port: int, drain_timeout_s: float) -> Path:
    path = tmp_path / "serve.yaml"
    path.write_text(
        "ray: {address: local, num_cpus: 2}\n"
        "replicas: {count: 1, backend: sim, num_cpus: 0.5, "
        f"sim: {{time_scale: {TIME_SCALE}}}}}\n"
        f"server: {{host: 127.0.0.1, port: {port}, drain_timeout_s: {drain_timeout_s}}}\n"
    )
    return path


def _run(address: str, max_tokens: int) -> Callable[[], TaskResult]:
    def one() -> TaskResult:
        with Client(address, timeout=120) as client:
            return client.run("plan_execute", "Drain drill.", max_tokens=max_tokens)

    return one


def _calls_in_flight(address: str) -> int:
    with Client(address, timeout=10) as client:
        return sum(r.in_flight_calls for r in client.cluster_status().replicas)


def test_sigterm_lets_tasks_in_flight_finish_refuses_new_ones_and_exits_0(
    tmp_path: Path,
) -> None:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    config = _serve_config(tmp_path, port, drain_timeout_s=30)
    with inflection("serve", "--config", str(config)) as serve, ThreadPoolExecutor(3) as pool:
        serve.wait_for(lambda: serve.line("inflection: serving on"), START_TIMEOUT_S, "serving")
        tasks = [pool.submit(_run(address, max_tokens=10)) for _ in range(3)]
        wait_for(lambda: _calls_in_flight(address) >= 3, 30, "3 calls in flight")
        signalled = time.monotonic()
        serve.proc.send_signal(signal.SIGTERM)
        not_serving_s = wait_for(
            lambda: health_of(address) == health_pb2.HealthCheckResponse.NOT_SERVING,
            5,
            "NOT_SERVING",
        )
        with Client(address, timeout=10) as client:
            with pytest.raises(Unavailable) as refused:
                client.run("plan_execute", "Too late.", max_tokens=4)
            assert [a.name for a in client.list_agents()]  # the listings keep answering
        assert "the server is draining (shutting down)" in refused.value.details
        assert refused.value.retry_after_s == 1.0
        results = [task.result(timeout=60) for task in tasks]
        finished_s = time.monotonic() - signalled
        code = serve.proc.wait(timeout=60)
        exited_s = time.monotonic() - signalled
    print(
        f"\nSIGTERM with 3 tasks in flight: NOT_SERVING after {not_serving_s:.2f} s, "
        f"tasks done {finished_s:.1f} s, exit {exited_s:.1f} s after the signal"
    )
    assert code == 0, serve.text()
    assert all(r.usage.llm_calls == 5 and r.answer for r in results)
    assert serve.line("inflection: draining 3 tasks in flight for up to 30 s", "err")
    assert serve.line("inflection: drained in", "err") and serve.line("3 ended, 0 cancelled", "err")
    assert not serve.line("Traceback", "err"), serve.text()
    assert not_serving_s < 2.0


def test_a_drain_timeout_cancels_the_task_in_flight_with_its_partial_usage(
    tmp_path: Path,
) -> None:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    config = _serve_config(tmp_path, port, drain_timeout_s=0.5)
    with inflection("serve", "--config", str(config)) as serve, ThreadPoolExecutor(1) as pool:
        serve.wait_for(lambda: serve.line("inflection: serving on"), START_TIMEOUT_S, "serving")
        task: Future[TaskResult] = pool.submit(_run(address, max_tokens=64))  # about 30 s
        wait_for(lambda: _calls_in_flight(address) >= 1, 30, "a call in flight")
        signalled = time.monotonic()
        serve.proc.send_signal(signal.SIGTERM)
        with pytest.raises(InflectionError) as stopped:
            task.result(timeout=60)
        stopped_s = time.monotonic() - signalled
        code = serve.proc.wait(timeout=60)
        exited_s = time.monotonic() - signalled
    print(
        f"\nSIGTERM, drain_timeout_s 0.5: the task failed {stopped_s:.2f} s and the server "
        f"exited {exited_s:.1f} s after the signal"
    )
    assert code == 0, serve.text()
    assert isinstance(stopped.value, Unavailable), stopped.value
    assert "drain timeout of 0.5 s" in stopped.value.details
    usage = stopped.value.usage
    assert usage is not None, "the partial usage trailer is missing"
    assert usage.llm_calls >= 1 and usage.prompt_tokens_total > 0  # the aborted call counts
    assert serve.line("inflection: draining 1 tasks in flight for up to 0.5 s", "err")
    assert serve.line("0 ended, 1 cancelled", "err"), serve.text()
    assert not serve.line("Traceback", "err"), serve.text()
    assert stopped_s < 10.0


def _loop_of(running: Any) -> asyncio.AbstractEventLoop:
    """The event loop the deployment runs on (sim_deployment's own thread)."""
    assert running.health_task is not None
    loop: asyncio.AbstractEventLoop = running.health_task.get_loop()
    return loop


def test_draining_one_replica_finishes_its_calls_and_removes_it_for_good(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="orchestrator")
    replicas = {"count": 2, "health_period_s": 0.5, "sim": {"time_scale": TIME_SCALE}}
    with sim_deployment(replicas) as running, Client(running.address, timeout=120) as client:
        loop = _loop_of(running)
        with ThreadPoolExecutor(4) as pool:
            tasks = [pool.submit(_run(running.address, max_tokens=10)) for _ in range(4)]

            def busy() -> bool:
                return {r.name: r.in_flight_calls for r in client.cluster_status().replicas}.get(
                    "replica-1", 0
                ) > 0

            wait_for(busy, 30, "calls in flight on replica-1")
            started = time.monotonic()
            drain = asyncio.run_coroutine_threadsafe(
                running.pool.drain_replica("replica-1", 60.0), loop
            )
            # Routing stops choosing it at once: a task started now runs on replica-0 only.
            time.sleep(0.2)
            late = client.run("plan_execute", "After the drain began.", max_tokens=4)
            left = drain.result(timeout=60)
            drained_s = time.monotonic() - started
            results = [task.result(timeout=60) for task in tasks]
        print(f"\nreplica-1 drained with calls in flight: removed after {drained_s:.1f} s")
        assert left == 0  # every call on it finished before its actor went
        assert all(r.usage.llm_calls == 5 and r.usage.retried_calls == 0 for r in results)
        assert {c.replica for r in results for c in r.calls} == {"replica-0", "replica-1"}
        assert {c.replica for c in late.calls} == {"replica-0"}
        assert [r.name for r in client.cluster_status().replicas] == ["replica-0"]
        time.sleep(3.0)  # six health periods: self-healing would have replaced it by now
        assert [r.name for r in client.cluster_status().replicas] == ["replica-0"]
        assert client.run("plan_execute", "Still serving.", max_tokens=4).usage.llm_calls == 5
        assert health_of(running.address) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(KeyError):  # gone: a second drain of it names no replica
            asyncio.run_coroutine_threadsafe(
                running.pool.drain_replica("replica-1", 1.0), loop
            ).result(timeout=10)
        messages = [r.getMessage() for r in caplog.records]
        assert any("replica-1 drained and removed (0 calls" in m for m in messages)
        assert not any("replica-1 died" in m or "replica-1 replaced" in m for m in messages)
