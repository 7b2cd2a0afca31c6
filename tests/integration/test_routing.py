"""Routing and admission control through a real deployment: Ray actors hosting simulated
engines behind the gRPC server, reached with the SDK."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from orchestrator.client import AsyncClient, Client, ResourceExhausted, TaskResult

pytestmark = pytest.mark.slow

_NAMESPACES = itertools.count()
# Long enough that a step's context is many KV blocks.
LONG_INPUT = " ".join(f"fact{i} holds" for i in range(600))


@contextmanager
def deployment(live_server: Any, config: dict[str, Any]) -> Iterator[Any]:
    from orchestrator.config import DeploymentConfig
    from orchestrator.server.app import Deployment

    base: dict[str, Any] = {
        "ray": {"namespace": f"inflection-routing-{next(_NAMESPACES)}"},
        "server": {"port": 0},
    }
    running = asyncio.run_coroutine_threadsafe(
        Deployment.start(DeploymentConfig.model_validate(base | config)), live_server.loop
    ).result(timeout=300)
    try:
        yield running
    finally:
        asyncio.run_coroutine_threadsafe(running.stop(), live_server.loop).result(timeout=120)


def run_tasks(address: str, n: int) -> list[TaskResult]:
    with Client(address, timeout=120) as client:
        # Each task its own input, so only a task's own steps can share a prefix.
        return [
            client.run("react", f"Case {seed}. {LONG_INPUT}", max_tokens=48, seed=seed)
            for seed in range(n)
        ]


def replicas_per_task(results: list[TaskResult]) -> list[int]:
    return [len({c.replica for c in r.calls}) for r in results]


def hit_rate(results: list[TaskResult]) -> float:
    calls = [c for r in results for c in r.calls]
    return sum(c.usage.cached_prompt_tokens for c in calls) / sum(
        c.usage.prompt_tokens for c in calls
    )


@pytest.mark.parametrize("policy", ["prefix_affinity", "program_aware"])
def test_a_tasks_steps_stay_on_one_replica_and_spread_under_round_robin(
    live_server: Any, policy: str
) -> None:
    replicas = {"count": 4, "backend": "sim", "num_cpus": 0, "sim": {"time_scale": 0}}
    with deployment(live_server, {"replicas": replicas, "routing": {"policy": policy}}) as d:
        affine = run_tasks(d.address, 4)
        # The engines' own figures, as routing reads them, in the cluster status.
        with Client(d.address) as client:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                status = client.cluster_status()
                if sum(r.calls_served for r in status.replicas) == sum(
                    r.usage.llm_calls for r in affine
                ):
                    break
                time.sleep(0.2)
        served = [r for r in status.replicas if r.calls_served]
        assert served and all(r.prefix_hit_rate > 0.5 for r in served)
        assert all(r.waiting_requests == r.running_requests == 0 for r in status.replicas)
    with deployment(live_server, {"replicas": replicas, "routing": {"policy": "round_robin"}}) as d:
        spread = run_tasks(d.address, 4)
    assert all(r.usage.llm_calls >= 3 for r in affine + spread)
    assert replicas_per_task(affine) == [1, 1, 1, 1]
    assert all(n >= 3 for n in replicas_per_task(spread)), replicas_per_task(spread)
    # Staying with the context is what makes the engine's prefix cache hit.
    assert hit_rate(affine) > 0.6
    assert hit_rate(affine) > 2 * hit_rate(spread)


def test_admission_refuses_beyond_the_queue_and_admitted_tasks_complete(
    live_server: Any,
) -> None:
    config = {
        # Real time on one simulated replica, so tasks overlap.
        "replicas": {"count": 1, "backend": "sim", "num_cpus": 0, "sim": {"time_scale": 1.0}},
        # Any call in flight saturates the replica: one task runs, two may wait.
        "admission": {"max_outstanding_tokens_per_replica": 1, "max_queued_tasks": 2},
    }

    async def burst(address: str) -> list[TaskResult | BaseException]:
        async with AsyncClient(address, timeout=120) as client:
            return await asyncio.gather(
                *(
                    client.run("plan_execute", f"Plan migration {i}.", max_tokens=64, seed=i)
                    for i in range(8)
                ),
                return_exceptions=True,
            )

    with deployment(live_server, config) as d:
        outcomes = asyncio.run(burst(d.address))
        done = [o for o in outcomes if isinstance(o, TaskResult)]
        refused = [o for o in outcomes if isinstance(o, ResourceExhausted)]
        assert len(done) + len(refused) == 8, outcomes  # nothing else went wrong
        assert len(done) == 3
        assert all(r.usage.llm_calls == 5 and r.usage.output_tokens_total > 0 for r in done)
        for error in refused:
            assert "max_queued_tasks" in error.details
            assert error.retry_after_s is not None and 0.5 <= error.retry_after_s <= 60
        # The server keeps serving once the burst has drained.
        with Client(d.address, timeout=60) as client:
            assert client.run("chat", "Still there?", max_tokens=8).usage.llm_calls == 1


def _readme_admission_example() -> str:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split("## Routing, priority and admission", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


def test_the_readme_admission_example_runs_against_a_saturated_server(
    live_server: Any,
) -> None:
    config = {
        "replicas": {"count": 1, "backend": "sim", "num_cpus": 0, "sim": {"time_scale": 1.0}},
        # One task saturates the replica and nothing may wait.
        "admission": {"max_outstanding_tokens_per_replica": 1, "max_queued_tasks": 0},
    }
    with deployment(live_server, config) as d, Client(d.address, timeout=120) as client:
        busy = threading.Thread(
            target=client.run, args=("react", "Keep the replica busy."), kwargs={"seed": 1}
        )
        busy.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if any(r.in_flight_calls for r in client.cluster_status().replicas):
                    break
                time.sleep(0.05)
            out = io.StringIO()
            code = _readme_admission_example().replace("127.0.0.1:50051", d.address)
            with contextlib.redirect_stdout(out):
                exec(compile(code, "README.md admission example", "exec"), {})
            assert re.fullmatch(r"saturated; retry in \d+\.\d s\n", out.getvalue()), out.getvalue()
        finally:
            busy.join(timeout=120)
