"""Agentic metrics: exact merge across workers, percentiles, goodput, SLO parsing."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from loadtests.metrics import AgenticStats, Slo, TaskSample


def sample(
    *,
    agent: str = "plan_execute",
    ok: bool = True,
    status: str = "OK",
    completed_at: float = 1000.0,
    latency: float = 2.0,
    ttft: float | None = 1.0,
    amp: float = 13.0,
    calls: int = 5,
    prompt: int = 800,
    cached: int = 400,
    output: int = 200,
    tpots: tuple[float, ...] = (0.01, 0.02),
) -> TaskSample:
    return TaskSample(
        completed_at=completed_at,
        agent=agent,
        ok=ok,
        status=status,
        llm_calls=calls,
        prompt_tokens=prompt,
        cached_tokens=cached,
        output_tokens=output,
        user_input_tokens=64,
        final_output_tokens=12,
        token_amplification=amp,
        task_ttft=ttft,
        task_latency=latency,
        call_tpots=tpots,
    )


def random_samples(n: int, seed: int = 0) -> list[TaskSample]:
    rng = random.Random(seed)
    return [
        sample(
            agent=rng.choice(["plan_execute", "react"]),
            ok=rng.random() > 0.1,
            status="OK",
            completed_at=1000.0 + rng.random() * 10,
            latency=rng.uniform(0.5, 5),
            ttft=rng.choice([None, rng.uniform(0.1, 2)]),
            amp=rng.uniform(2, 20),
            calls=rng.randint(1, 10),
            prompt=rng.randint(100, 1000),
            cached=rng.randint(0, 100),
            output=rng.randint(10, 300),
            tpots=tuple(rng.uniform(0.005, 0.05) for _ in range(rng.randint(0, 4))),
        )
        for _ in range(n)
    ]


def test_merge_of_two_workers_equals_one_process_seeing_every_task() -> None:
    samples = random_samples(300)
    slo = Slo(task_ttft_s=1.0, task_latency_s=3.0, call_tpot_p99_s=0.04)
    worker_a, worker_b, local = AgenticStats(), AgenticStats(), AgenticStats()
    master = AgenticStats()
    for i, s in enumerate(samples):
        (worker_a if i % 2 else worker_b).add(s)
        local.add(s)
        if i % 50 == 0:  # several report intervals
            master.merge(json.loads(json.dumps(worker_a.drain())))
    master.merge(worker_a.drain())
    master.merge(worker_b.drain())
    assert worker_a.drain() == []
    assert master.snapshot(slo) == local.snapshot(slo)
    json.dumps(master.snapshot(slo), allow_nan=False)


def test_percentiles_and_rates() -> None:
    stats = AgenticStats()
    for i in range(100):
        # tasks start at 1000 and complete over 10 s
        stats.add(sample(completed_at=1000.0 + 0.1 * (i + 1), latency=0.1 * (i + 1), amp=i + 1))
    summary = stats.snapshot()["summary"]
    assert summary["duration_s"] == pytest.approx(10.0)
    assert summary["tasks_per_s"] == pytest.approx(10.0)
    assert summary["output_tokens_per_s"] == pytest.approx(100 * 200 / 10.0)
    assert summary["token_amplification"]["mean"] == pytest.approx(50.5)
    assert summary["token_amplification"]["p50"] == pytest.approx(np.percentile(range(1, 101), 50))
    assert summary["token_amplification"]["p99"] == pytest.approx(np.percentile(range(1, 101), 99))
    assert summary["prefix_hit_rate"] == pytest.approx(0.5)
    assert summary["call_tpot_s"]["count"] == 200
    series = stats.snapshot()["timeseries"]
    assert sum(row["tasks_per_s"] for row in series) == 100


def test_goodput_counts_only_ok_tasks_meeting_every_bound() -> None:
    stats = AgenticStats()
    stats.add(sample(completed_at=1010, latency=10))  # sets the run to 10 s; too slow
    stats.add(sample(completed_at=1005, latency=1, ttft=0.5))  # good
    stats.add(sample(completed_at=1005, latency=1, ttft=3.0))  # ttft too slow
    stats.add(sample(completed_at=1005, latency=1, ttft=None))  # no answer token
    stats.add(sample(completed_at=1005, latency=1, tpots=(0.01, 0.5)))  # tpot p99 too slow
    stats.add(sample(completed_at=1005, latency=1, ok=False, status="DEADLINE_EXCEEDED"))
    slo = Slo.parse("task_ttft=2s,task_latency=5s,call_tpot_p99=100ms")
    summary = stats.snapshot(slo)["summary"]
    assert summary["goodput_per_s"] == pytest.approx(1 / 10)
    assert summary["tasks_per_s"] == pytest.approx(5 / 10)
    assert summary["goodput_fraction"] == pytest.approx(1 / 5)
    assert summary["failures"] == {"DEADLINE_EXCEEDED": 1}
    # With no SLO every ok task counts.
    assert stats.snapshot()["summary"]["goodput_per_s"] == pytest.approx(5 / 10)


def test_empty_stats_are_json_able() -> None:
    snap = AgenticStats().snapshot(Slo.parse("task_latency=1"))
    assert snap["per_agent"] == [] and snap["timeseries"] == []
    assert snap["summary"]["tasks"] == 0 and snap["summary"]["task_latency_s"]["p99"] is None
    json.dumps(snap, allow_nan=False)


def test_per_agent_and_dropped_tasks() -> None:
    stats = AgenticStats()
    stats.add(sample(agent="react", amp=3.0))
    stats.add(sample(agent="plan_execute", amp=13.0))
    stats.add_dropped(2)
    master = AgenticStats()
    master.merge(stats.drain(), dropped=stats.drain_dropped())
    snap = master.snapshot()
    assert [a["agent"] for a in snap["per_agent"]] == ["plan_execute", "react"]
    assert snap["per_agent"][1]["token_amplification"]["mean"] == 3.0
    assert snap["summary"]["dropped_tasks"] == 2
    master.reset()
    assert master.snapshot()["summary"]["tasks"] == 0


def test_slo_parsing() -> None:
    slo = Slo.parse("task_ttft=5s, task_latency=30, call_tpot_p99_s=100ms")
    assert slo == Slo(task_ttft_s=5.0, task_latency_s=30.0, call_tpot_p99_s=0.1)
    assert Slo.parse("").is_empty()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ttft=5s", "unknown bound 'ttft'; known: call_tpot_p99, task_latency, task_ttft"),
        ("task_ttft", "is not name=value"),
        ("task_ttft=fast", "is not a duration"),
        ("task_ttft=0s", "must be a positive duration"),
        ("task_ttft=1s,task_ttft=2s", "given twice"),
    ],
)
def test_slo_errors_are_clear(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Slo.parse(text)


def test_wire_rejects_wrong_width() -> None:
    with pytest.raises(ValueError, match="14"):
        AgenticStats().merge([[1.0, "x"]])


def test_the_master_counts_each_workers_tasks_once() -> None:
    samples = random_samples(120)
    worker_a, worker_b, master = AgenticStats(), AgenticStats(), AgenticStats()
    for i, s in enumerate(samples):
        worker = worker_a if i % 3 else worker_b
        worker.add(s)
        if i % 40 == 39:  # a report interval: each worker ships what it has
            for name, w in (("a", worker_a), ("b", worker_b)):
                master.merge(w.drain(), source=name, recorded=w.recorded)
    for name, w in (("a", worker_a), ("b", worker_b)):
        master.merge(w.drain(), source=name, recorded=w.recorded)
    workers = master.workers()
    assert workers == {"a": {"merged": 80, "recorded": 80}, "b": {"merged": 40, "recorded": 40}}
    assert master.snapshot()["summary"]["tasks"] == 120
