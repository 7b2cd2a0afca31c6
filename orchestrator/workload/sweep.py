"""Rate sweeps: step the offered task rate up until the SLO breaks (the pure half; the
load generator runs the steps).

`--sweep` takes one of two plans:

    START:STEP:MAX                         `Sweep`: one run per rate, START, START+STEP,
                                           ... up to MAX, stopping at the first step
                                           that breaks the SLO
    start=2,factor=1.5,step_s=20,...       `SweepPlan`: one run, the rate multiplied by
                                           `factor` every `step_s` while the SLO holds

Either way a step meets the SLO when at least `min_good` (MIN_GOOD_FRACTION) of the
tasks it attempted met every bound (orchestrator.workload.slo): failures and dropped
arrivals count as misses, so an overloaded server cannot meet the SLO by refusing work.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

MIN_GOOD_FRACTION = 0.95  # a step meets the SLO when this share of its tasks does


def parse_numbers(text: str, known: Sequence[str], option: str) -> dict[str, float]:
    """`k=v,k=v` -> non-negative floats; unknown keys and bad numbers are one-line
    errors naming `option`."""
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
class SweepStep:
    rate: float  # offered tasks per second in this step
    good_fraction: float  # tasks meeting the SLO / tasks attempted (failures count as misses)
    tasks: int  # tasks attempted in the step


def step_meets_slo(step: SweepStep, min_good: float = MIN_GOOD_FRACTION) -> bool:
    return step.tasks > 0 and step.good_fraction >= min_good


def next_sweep_rate(
    history: Sequence[SweepStep],
    *,
    start: float,
    factor: float = 1.5,
    max_rate: float = 1_000.0,
    min_good: float = MIN_GOOD_FRACTION,
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


def highest_rate_meeting_slo(
    history: Sequence[SweepStep], min_good: float = MIN_GOOD_FRACTION
) -> float | None:
    """The highest rate whose step met the SLO (None if none did)."""
    rates = [s.rate for s in history if step_meets_slo(s, min_good)]
    return max(rates) if rates else None


SWEEP_KEYS = ("start", "factor", "step_s", "max_rate", "min_good", "warmup_s")


@dataclass(slots=True, frozen=True)
class SweepPlan:
    """One run whose rate is multiplied per step (`start=2,factor=1.5,...`)."""

    start: float = 1.0  # first rate, tasks/s
    factor: float = 1.5  # next rate = last * factor while the SLO holds
    step_s: float = 20.0  # seconds per rate
    max_rate: float = 1_000.0
    min_good: float = MIN_GOOD_FRACTION  # fraction of a step's tasks that must meet the SLO
    warmup_s: float = 2.0  # completions this early in a step are not judged

    @classmethod
    def parse(cls, text: str) -> SweepPlan:
        plan = cls(**parse_numbers(text, SWEEP_KEYS, "--sweep"))
        if plan.start <= 0 or plan.factor <= 1 or plan.step_s <= plan.warmup_s:
            raise ValueError("--sweep: needs start > 0, factor > 1 and step_s > warmup_s")
        if not 0 < plan.min_good <= 1:
            raise ValueError("--sweep: min_good must be in (0, 1]")
        return plan


@dataclass(slots=True, frozen=True)
class Sweep:
    """One run per rate (`START:STEP:MAX`)."""

    start: float  # first offered rate, tasks/s
    step: float  # added to the rate after each step that met the SLO
    max_rate: float  # the last rate tried (inclusive)

    def rates(self) -> list[float]:
        """START, START+STEP, ... up to MAX (inclusive, tolerant of float steps)."""
        count = math.floor((self.max_rate - self.start) / self.step + 1e-9) + 1
        return [round(self.start + i * self.step, 9) for i in range(count)]


def parse_sweep(text: str) -> Sweep:
    """`START:STEP:MAX` (tasks/s) -> Sweep; ValueErrors are one line naming --sweep."""
    parts = text.split(":")
    if len(parts) != 3:
        raise ValueError(f"--sweep: {text!r} is not START:STEP:MAX (e.g. 1:1:10)")
    try:
        start, step, max_rate = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"--sweep: {text!r} is not START:STEP:MAX numbers") from None
    if not all(math.isfinite(v) and v > 0 for v in (start, step, max_rate)):
        raise ValueError(f"--sweep: START, STEP and MAX must be positive, got {text!r}")
    if max_rate < start:
        raise ValueError(f"--sweep: MAX ({max_rate:g}) is below START ({start:g})")
    return Sweep(start, step, max_rate)


def is_sweep_plan(text: str) -> bool:
    """`start=2,factor=1.5,...` is a SweepPlan (one run); START:STEP:MAX is a Sweep."""
    return "=" in text


class _Judged(Protocol):
    @property
    def met(self) -> bool: ...


P = TypeVar("P", bound=_Judged)


def run_sweep(
    rates: Sequence[float], run_step: Callable[[float], P], history: list[P] | None = None
) -> list[P]:
    """Run steps at increasing rates until one breaks the SLO (that step is included).
    Steps are appended to `history` as they finish, so a Ctrl-C keeps the finished ones."""
    history = [] if history is None else history
    for rate in rates:
        point = run_step(rate)
        history.append(point)
        if not point.met:
            break
    return history
