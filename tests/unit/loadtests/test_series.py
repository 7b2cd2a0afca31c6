"""Rolling-window series: a steady few tasks/s reads as a steady line, not the 0/6 square
wave of per-second buckets that the charts used to draw."""

from __future__ import annotations

import itertools

import pytest

from loadtests.metrics import AgenticStats, TaskSample
from loadtests.series import WINDOW_S, from_buckets, rolling

T0 = 1_000_000.0  # unix seconds of the run's start


def sample(done: float, latency: float = 2.0, ok: bool = True, amp: float = 10.0) -> TaskSample:
    return TaskSample(
        completed_at=done,
        agent="plan_execute",
        ok=ok,
        status="OK" if ok else "UNAVAILABLE",
        llm_calls=5,
        prompt_tokens=900,
        cached_tokens=0,
        output_tokens=100,
        user_input_tokens=64,
        final_output_tokens=20,
        token_amplification=amp,
        task_ttft=latency / 2,
        task_latency=latency,
        call_tpots=(),
    )


def closed_loop(seconds: int) -> list[TaskSample]:
    """6 users, 2 s tasks: 6 completions every 2 s, a steady 3 tasks/s on average."""
    return [sample(T0 + 2.0 * k) for k in range(1, seconds // 2 + 1) for _ in range(6)]


def test_a_steady_3_tasks_per_s_is_a_smooth_line_not_a_square_wave() -> None:
    samples = closed_loop(60)
    # What the charts drew before: per-second buckets alternate 6 and 0.
    buckets = AgenticStats()
    for s in samples:
        buckets.add(s)
    assert {b["tasks_per_s"] for b in buckets.snapshot()["timeseries"]} == {0.0, 6.0}

    points = rolling(samples)
    assert points[0].t == pytest.approx(T0 + 1.0)  # one point a second from the first start
    assert points[-1].t == pytest.approx(T0 + 60.0)
    assert all(b.t - a.t == pytest.approx(1.0) for a, b in itertools.pairwise(points))
    settled = [p for p in points if p.window_s == WINDOW_S]
    assert len(settled) >= 45
    assert all(p.tasks_per_s == pytest.approx(3.0, abs=0.35) for p in settled)
    # Even while the window fills, no point is a 0 or 6 extreme past the first completion.
    assert all(1.5 <= p.tasks_per_s <= 4.5 for p in points if p.t >= T0 + 2.0)
    assert all(p.output_tokens_per_s == pytest.approx(300.0, abs=35) for p in settled)
    assert all(p.task_latency_p50_s == pytest.approx(2.0) for p in settled)


def test_a_live_view_falls_to_zero_when_tasks_stop() -> None:
    samples = closed_loop(20)
    points = rolling(samples, until=T0 + 40.0)
    assert points[-1].t == pytest.approx(T0 + 40.0)
    assert points[-1].tasks_per_s == 0.0 and points[-1].task_latency_p99_s is None


def test_failures_and_amplification_are_over_the_window() -> None:
    samples = [sample(T0 + 1.0 + k, amp=4.0 if k % 2 else 8.0) for k in range(20)]
    samples += [sample(T0 + 1.5 + k, ok=False) for k in range(0, 20, 4)]
    last = rolling(samples, until=T0 + 20.5)[-1]
    assert last.window_s == WINDOW_S
    assert last.tasks_per_s == pytest.approx(1.0)
    assert last.failures_per_s == pytest.approx(0.2)  # 2 failures in the last 10 s
    assert last.token_amplification_mean == pytest.approx(6.0)


def test_from_buckets_gives_the_same_rates_as_the_samples() -> None:
    samples = closed_loop(60)
    stats = AgenticStats()
    for s in samples:
        stats.add(s)
    points = from_buckets(stats.snapshot()["timeseries"])
    settled = [p for p in points if p.window_s == WINDOW_S]
    assert len(settled) >= 45
    assert all(p.tasks_per_s == pytest.approx(3.0, abs=0.35) for p in settled)
    assert all(p.task_latency_p50_s == pytest.approx(2.0) for p in settled)
    assert all(p.task_latency_p99_s == pytest.approx(2.0) for p in settled)


def test_no_samples_no_points() -> None:
    assert rolling([]) == [] and from_buckets([]) == []
