"""Agentic metrics: exact merge across workers, percentiles, goodput, SLO parsing."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from loadtests.metrics import (
    AgenticStats,
    CallSample,
    LiveFigures,
    TaskRecorder,
    TaskSample,
    live_figures,
)
from orchestrator.api.v1 import inflection_pb2 as pb
from orchestrator.workload.slo import SloConfig, parse_slo


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
    slo = SloConfig(task_ttft=1.0, task_latency=3.0, call_tpot_p99=0.04)
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
    slo = parse_slo("task_ttft=2s,task_latency=5s,call_tpot_p99=100ms")
    summary = stats.snapshot(slo)["summary"]
    assert summary["goodput_per_s"] == pytest.approx(1 / 10)
    assert summary["tasks_per_s"] == pytest.approx(5 / 10)
    assert summary["goodput_fraction"] == pytest.approx(1 / 5)
    assert summary["failures"] == {"DEADLINE_EXCEEDED": 1}
    # With no SLO every ok task counts.
    assert stats.snapshot()["summary"]["goodput_per_s"] == pytest.approx(5 / 10)


def test_empty_stats_are_json_able() -> None:
    snap = AgenticStats().snapshot(parse_slo("task_latency=1"))
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
    slo = parse_slo("task_ttft=5s, task_latency=30, call_tpot_p99=100ms")
    assert slo == SloConfig(task_ttft=5.0, task_latency=30.0, call_tpot_p99=0.1)
    assert parse_slo("").is_empty()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ttft=5s", "unknown bound 'ttft'; known: task_ttft_p90, task_latency_p99, "),
        ("task_ttft", "is not NAME=VALUE"),
        ("task_ttft=fast", "is not a duration"),
        ("task_ttft=0s", "must be a positive duration"),
        ("task_ttft=1s,task_ttft=2s", "given twice"),
    ],
)
def test_slo_errors_are_clear(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_slo(text)


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


# ---- warm-up, per-task export, live figures ---------------------------------------------


def started(at: float, latency: float = 2.0, **kw: Any) -> TaskSample:
    return sample(completed_at=at + latency, latency=latency, **kw)


def test_tasks_that_started_in_the_warmup_are_left_out_of_every_figure() -> None:
    stats = AgenticStats()
    stats.start(1000.0, warmup_s=10.0)
    stats.add(started(1001.0, latency=30.0, amp=100.0))  # warm-up: ends late, still left out
    stats.add(started(1009.9))  # warm-up
    stats.add(started(1010.0, amp=7.0))  # measured: started exactly at the end
    stats.add(started(1020.0, ok=False, status="UNAVAILABLE"))
    snap = stats.snapshot()
    assert snap["summary"]["tasks"] == 2 and snap["summary"]["ok"] == 1
    assert snap["summary"]["token_amplification"]["mean"] == 7.0
    assert snap["warmup"] == {"seconds": 10.0, "excluded_tasks": 2}
    assert sum(a["tasks"] for a in snap["per_agent"]) == 2
    assert len(stats.samples) == 4  # the raw samples keep them (tasks.jsonl, histograms)
    # No warm-up: no key, every task counted (the snapshot's shape is unchanged).
    plain = AgenticStats()
    plain.start(1000.0)
    plain.add(started(1001.0))
    assert "warmup" not in plain.snapshot() and plain.snapshot()["summary"]["tasks"] == 1


def llm_call(step: str = "planner") -> CallSample:
    return CallSample(
        kind="llm",
        step=step,
        branch=0,
        target="replica-1",
        at_s=0.5,
        elapsed_s=0.4,
        prompt_tokens=120,
        cached_tokens=64,
        output_tokens=30,
        queue_s=0.01,
        ttft_s=0.05,
        tpot_s=0.012,
        finish="stop",
    )


def test_task_records_have_usage_timings_and_calls_only_when_kept() -> None:
    tool = CallSample("tool", "search", 1, "web", 0.9, 0.2, output_tokens=40, finish="error")
    with_calls = replace(started(1005.0), calls=(llm_call(), tool))
    stats = AgenticStats()
    stats.start(1000.0, warmup_s=3.0)
    stats.add(with_calls)  # keep_calls is off: the calls are dropped on the way in
    stats.add(started(1001.0))
    records = stats.task_records()
    assert [r["warmup"] for r in records] == [True, False]  # completion order
    assert "calls" not in records[1]
    r = records[1]
    assert (r["agent"], r["status"], r["ok"]) == ("plan_execute", "OK", True)
    assert (r["started_at"], r["completed_at"], r["latency_s"]) == (1005.0, 1007.0, 2.0)
    assert r["usage"]["prompt_tokens"] == 800 and r["usage"]["token_amplification"] == 13.0
    json.dumps(records, allow_nan=False)  # one JSON line each

    stats = AgenticStats()
    stats.keep_calls = True
    stats.add(with_calls)
    calls = stats.task_records()[0]["calls"]
    assert calls[0]["replica"] == "replica-1" and calls[0]["cached_tokens"] == 64
    assert calls[0]["tpot_s"] == 0.012 and calls[0]["finish_reason"] == "stop"
    assert calls[1] == {
        "kind": "tool",
        "step": "search",
        "branch": 1,
        "tool": "web",
        "at_s": 0.9,
        "elapsed_s": 0.2,
        "result_tokens": 40,
        "ok": False,
    }


def test_calls_survive_the_trip_from_a_worker() -> None:
    worker = AgenticStats()
    worker.keep_calls = True
    worker.add(replace(sample(), calls=(llm_call(), llm_call("answer"))))
    worker.add(sample())  # no calls: the 14-field wire row of older workers
    master = AgenticStats()
    master.merge(json.loads(json.dumps(worker.drain())))
    assert master.samples[0].calls == (llm_call(), llm_call("answer"))
    assert master.samples[1].calls == ()


def test_the_recorder_keeps_each_call_and_tool_step() -> None:
    recorder = TaskRecorder("react", sent_at=100.0)
    timings = pb.CallTimings(queue_time=0.01, ttft=0.05, e2e=0.4, tpot=0.012)
    call = pb.CallRecord(
        step="planner",
        replica="replica-1",
        usage=pb.CallUsage(prompt_tokens=120, cached_prompt_tokens=64, output_tokens=30),
        timings=timings,
        finish_reason="stop",
    )
    recorder.on_event(pb.TaskEvent(step_finished=pb.StepFinished(call=call)), 100.5)
    tool = pb.ToolRecord(step="search", branch=1, tool="web", elapsed=0.2, result_tokens=40)
    recorder.on_event(pb.TaskEvent(step_finished=pb.StepFinished(tool=tool)), 100.9)
    sample_ = recorder.sample(101.0, 5000.0, "OK", None)
    assert sample_.calls[0] == llm_call()
    assert replace(sample_.calls[1], at_s=round(sample_.calls[1].at_s, 6)) == CallSample(
        "tool", "search", 1, "web", 0.9, 0.2, output_tokens=40, finish="error"
    )


def test_live_figures_use_the_trailing_window_and_leave_the_warmup_out() -> None:
    samples = [
        started(1000.0, latency=1.0),  # completed 1001: before the window
        started(1015.0, latency=1.0, output=100),
        started(1016.0, latency=3.0, ttft=0.5, amp=20.0, output=300),
        started(1017.0, latency=1.0, ok=False, status="UNAVAILABLE", output=50),
    ]
    live = live_figures(samples, now=1020.0, started_at=1000.0, measure_from=1005.0)
    assert (live.tasks, live.failed, live.warmup_tasks) == (4, 1, 1)
    assert live.window_s == 10.0 and live.tasks_per_s == pytest.approx(0.2)
    assert live.output_tokens_per_s == pytest.approx(45.0)
    assert live.task_latency_p50_s == 2.0 and live.task_ttft_p99_s is not None
    assert live.token_amplification_mean == pytest.approx(16.5)
    # Two seconds into a run the rate is over those two seconds, not the whole window.
    early = live_figures([started(1000.0, latency=1.0)], now=1002.0, started_at=1000.0)
    assert early.window_s == 2.0 and early.tasks_per_s == 0.5
    assert LiveFigures.from_dict(live.to_dict()) == live
