"""Load shapes' user counts over time, their options, and the sweep's decisions."""

from __future__ import annotations

import pytest

from loadtests.metrics import TaskSample
from loadtests.shapes import Diurnal, Ramp, Spike, Steps, curve_from_options, make_curve, ticks
from loadtests.sweep_curve import sweep_step
from orchestrator.workload.slo import SloConfig
from orchestrator.workload.sweep import (
    SweepPlan,
    SweepStep,
    highest_rate_meeting_slo,
    next_sweep_rate,
)


def test_ramp_ticks() -> None:
    assert ticks(Ramp(start=0, peak=10, ramp_s=5, hold_s=2)) == [0, 2, 4, 6, 8, 10, 10]


def test_steps_ticks() -> None:
    assert ticks(Steps(start=1, step=2, step_s=2, steps=3)) == [1, 1, 3, 3, 5, 5]


def test_spike_ticks() -> None:
    assert ticks(Spike(base=2, peak=9, at_s=2, spike_s=2, total_s=6)) == [2, 2, 9, 9, 2, 2]


def test_diurnal_ticks_peak_mid_period() -> None:
    counts = ticks(Diurnal(base=2, peak=10, period_s=8, total_s=8))
    assert counts == [2, 3, 6, 9, 10, 9, 6, 3]


def test_make_curve_from_args() -> None:
    assert make_curve("spike", "peak=30, at_s=5") == Spike(peak=30, at_s=5)
    with pytest.raises(ValueError, match="--shape: 'saw' is not one of ramp, steps"):
        make_curve("saw", "")
    with pytest.raises(ValueError, match="unknown 'height'; known: base, peak"):
        make_curve("diurnal", "height=3")
    with pytest.raises(ValueError, match="peak='lots' is not a number"):
        make_curve("ramp", "peak=lots")


def test_curve_from_options_falls_back_to_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert curve_from_options("", "peak=3") is None
    monkeypatch.setenv("INFLECTION_SHAPE_ARGS", "steps=2")
    assert curve_from_options("steps", "") == Steps(steps=2)
    assert curve_from_options("steps", "steps=5") == Steps(steps=5)


def test_sweep_steps_up_until_the_slo_breaks() -> None:
    history: list[SweepStep] = []
    assert next_sweep_rate(history, start=2) == 2
    history.append(SweepStep(rate=2, good_fraction=1.0, tasks=100))
    assert next_sweep_rate(history, start=2, factor=2) == 4
    history.append(SweepStep(rate=4, good_fraction=0.97, tasks=100))
    assert next_sweep_rate(history, start=2, factor=2, max_rate=6) == 6
    history.append(SweepStep(rate=6, good_fraction=0.5, tasks=100))
    assert next_sweep_rate(history, start=2, factor=2) is None
    assert highest_rate_meeting_slo(history) == 4
    assert highest_rate_meeting_slo([SweepStep(1, 0.0, 10)]) is None
    assert highest_rate_meeting_slo([SweepStep(1, 1.0, 0)]) is None  # no tasks: no evidence


def test_sweep_plan_parsing() -> None:
    assert SweepPlan.parse("start=2, factor=2") == SweepPlan(start=2, factor=2)
    with pytest.raises(ValueError, match="--sweep: unknown 'rate'; known: start, factor"):
        SweepPlan.parse("rate=3")
    with pytest.raises(ValueError, match="factor > 1"):
        SweepPlan.parse("factor=1")
    with pytest.raises(ValueError, match="min_good must be in"):
        SweepPlan.parse("min_good=2")


def test_sweep_step_judges_completions_in_the_window() -> None:
    def done(at: float, latency: float, ok: bool = True) -> TaskSample:
        return TaskSample(
            completed_at=at,
            agent="react",
            ok=ok,
            status="OK" if ok else "UNAVAILABLE",
            llm_calls=1,
            prompt_tokens=1,
            cached_tokens=0,
            output_tokens=1,
            user_input_tokens=1,
            final_output_tokens=1,
            token_amplification=1.0,
            task_ttft=0.1,
            task_latency=latency,
            call_tpots=(),
        )

    samples = [done(5, 0.1), done(11, 0.1), done(12, 9.0), done(13, 0.1, ok=False), done(25, 0.1)]
    step = sweep_step(samples, 4.0, 10, 20, SloConfig(task_latency=1.0), dropped=1)
    assert step == SweepStep(rate=4.0, good_fraction=1 / 4, tasks=4)
    assert sweep_step(samples, 4.0, 10, 20, None).good_fraction == 2 / 3
    assert sweep_step([], 4.0, 10, 20, None) == SweepStep(4.0, 0.0, 0)
