"""Load shapes over time (ramp, steps, spike, diurnal) and the pure half of a rate sweep.

Each shape is a pure curve `users_at(t) -> int | None` (None: the test is over), which
the locustfile wraps in a Locust `LoadTestShape`; `--shape NAME --shape-args k=v,...`
(or the environment variable INFLECTION_SHAPE_ARGS) picks one. In open loop each user
is one dispatcher running at `--arrival-rate / -u`, so a shape scales the arrival rate
the way it scales users.

    ramp:    start=1, peak=20, ramp_s=60, hold_s=30
    steps:   start=1, step=5, step_s=30, steps=4
    spike:   base=2, peak=20, at_s=30, spike_s=10, total_s=90
    diurnal: base=2, peak=20, period_s=120, total_s=240

The sweep (`sweep_step`, `next_sweep_rate`, `highest_rate_meeting_slo`) decides from
per-step results; the locustfile's `--sweep` runs the steps (open loop).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from loadtests.metrics import TaskSample, meets_slo
from orchestrator.workload.slo import SloConfig


def parse_shape_args(
    text: str, known: Sequence[str], option: str = "--shape-args"
) -> dict[str, float]:
    """`k=v,k=v` -> floats; unknown keys and bad numbers are one-line errors."""
    out: dict[str, float] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"{option}: {item!r} is not name=value")
        if key not in known:
            raise ValueError(f"{option}: unknown {key!r}; known: {', '.join(known)}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{option}: {key}={value!r} is not a number") from None
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"{option}: {key} must be a non-negative number")
        out[key] = number
    return out


@dataclass(slots=True, frozen=True)
class Ramp:
    start: float = 1
    peak: float = 20
    ramp_s: float = 60
    hold_s: float = 30

    def users_at(self, t: float) -> int | None:
        if t >= self.ramp_s + self.hold_s:
            return None
        if t >= self.ramp_s or self.ramp_s == 0:
            return round(self.peak)
        return round(self.start + (self.peak - self.start) * t / self.ramp_s)


@dataclass(slots=True, frozen=True)
class Steps:
    start: float = 1
    step: float = 5
    step_s: float = 30
    steps: float = 4

    def users_at(self, t: float) -> int | None:
        index = int(t // self.step_s) if self.step_s > 0 else 0
        if index >= self.steps:
            return None
        return round(self.start + self.step * index)


@dataclass(slots=True, frozen=True)
class Spike:
    base: float = 2
    peak: float = 20
    at_s: float = 30
    spike_s: float = 10
    total_s: float = 90

    def users_at(self, t: float) -> int | None:
        if t >= self.total_s:
            return None
        return round(self.peak if self.at_s <= t < self.at_s + self.spike_s else self.base)


@dataclass(slots=True, frozen=True)
class Diurnal:
    base: float = 2
    peak: float = 20
    period_s: float = 120
    total_s: float = 240

    def users_at(self, t: float) -> int | None:
        if t >= self.total_s:
            return None
        phase = (1 - math.cos(2 * math.pi * t / self.period_s)) / 2 if self.period_s else 0
        return round(self.base + (self.peak - self.base) * phase)


Curve = Ramp | Steps | Spike | Diurnal
CURVES: dict[str, type[Curve]] = {"ramp": Ramp, "steps": Steps, "spike": Spike, "diurnal": Diurnal}


def make_curve(name: str, args: str) -> Curve:
    kind = CURVES.get(name)
    if kind is None:
        raise ValueError(f"--shape: {name!r} is not one of {', '.join(CURVES)}")
    known = list(kind.__dataclass_fields__)
    return kind(**parse_shape_args(args, known))


def curve_from_options(name: str, args: str) -> Curve | None:
    """The curve `--shape` asks for (None without one); parameters from --shape-args,
    else INFLECTION_SHAPE_ARGS."""
    if not name:
        return None
    return make_curve(name, args or os.environ.get("INFLECTION_SHAPE_ARGS", ""))


def ticks(curve: Curve, every_s: float = 1.0, limit_s: float = 86_400) -> list[int]:
    """The user counts a shape would ask for at t = 0, every_s, ... until it ends."""
    out, t = [], 0.0
    while t < limit_s:
        users = curve.users_at(t)
        if users is None:
            break
        out.append(users)
        t += every_s
    return out


# ---- sweep: step the rate until the SLO breaks -----------------------------------------


@dataclass(slots=True, frozen=True)
class SweepStep:
    rate: float  # offered tasks per second in this step
    good_fraction: float  # tasks meeting the SLO / tasks attempted (failures count as misses)
    tasks: int  # tasks attempted in the step


def step_meets_slo(step: SweepStep, min_good: float = 0.95) -> bool:
    return step.tasks > 0 and step.good_fraction >= min_good


def next_sweep_rate(
    history: Sequence[SweepStep],
    *,
    start: float,
    factor: float = 1.5,
    max_rate: float = 1_000.0,
    min_good: float = 0.95,
) -> float | None:
    """The next rate to try, or None when the sweep is done (the SLO broke, or max_rate
    was reached). Multiplies the last rate while each step meets the SLO."""
    if factor <= 1:
        raise ValueError("sweep factor must be > 1")
    if not history:
        return start
    last = history[-1]
    if not step_meets_slo(last, min_good) or last.rate >= max_rate:
        return None
    return min(last.rate * factor, max_rate)


def highest_rate_meeting_slo(history: Sequence[SweepStep], min_good: float = 0.95) -> float | None:
    """The highest rate whose step met the SLO (None if none did)."""
    rates = [s.rate for s in history if step_meets_slo(s, min_good)]
    return max(rates) if rates else None


SWEEP_KEYS = ("start", "factor", "step_s", "max_rate", "min_good", "warmup_s")


@dataclass(slots=True, frozen=True)
class SweepPlan:
    start: float = 1.0  # first rate, tasks/s
    factor: float = 1.5  # next rate = last * factor while the SLO holds
    step_s: float = 20.0  # seconds per rate
    max_rate: float = 1_000.0
    min_good: float = 0.95  # fraction of a step's tasks that must meet the SLO
    warmup_s: float = 2.0  # completions this early in a step are not judged

    @classmethod
    def parse(cls, text: str) -> SweepPlan:
        plan = cls(**parse_shape_args(text, SWEEP_KEYS, "--sweep"))
        if plan.start <= 0 or plan.factor <= 1 or plan.step_s <= plan.warmup_s:
            raise ValueError("--sweep: needs start > 0, factor > 1 and step_s > warmup_s")
        if not 0 < plan.min_good <= 1:
            raise ValueError("--sweep: min_good must be in (0, 1]")
        return plan


def sweep_step(
    samples: Sequence[TaskSample],
    rate: float,
    start: float,
    end: float,
    slo: SloConfig | None,
    dropped: int = 0,
) -> SweepStep:
    """Judge one step from the tasks that completed in (start, end] (unix s); dropped
    arrivals and failures count as tasks that missed the SLO."""
    judged = [s for s in samples if start < s.completed_at <= end]
    good = sum(1 for s in judged if (meets_slo(slo, s) if slo is not None else s.ok))
    attempted = len(judged) + dropped
    return SweepStep(rate, good / attempted if attempted else 0.0, attempted)
