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

Rate sweeps are orchestrator.workload.sweep (the plan) and loadtests.sweep_curve (the
measured steps).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from orchestrator.workload.sweep import parse_numbers


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
    return kind(**parse_numbers(args, known, "--shape-args"))


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
