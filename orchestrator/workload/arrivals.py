"""Task arrival processes: when tasks reach the cluster (the offered load)."""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArrivalProcess(enum.Enum):
    POISSON = "poisson"  # exponential gaps
    GAMMA = "gamma"  # gamma gaps with coefficient of variation `cv` (bursty when > 1)
    CONSTANT = "constant"  # evenly spaced
    TRACE = "trace"  # arrival times (and optionally agents and inputs) from a file


class ArrivalConfig(_Strict):
    process: ArrivalProcess = Field(
        default=ArrivalProcess.POISSON, description="How task arrivals are spaced."
    )
    rate: float = Field(default=10.0, gt=0, description="Tasks per second (not for traces).")
    cv: float = Field(default=2.0, gt=0, description="Gamma: coefficient of variation of the gaps.")
    trace: str | None = Field(
        default=None,
        description="JSONL file, one task per line: {timestamp (ms), agent?, "
        "input_length?}; for process: trace.",
    )
    speedup: float = Field(default=1.0, gt=0, description="Trace: divide timestamps by this.")

    @model_validator(mode="after")
    def _trace_needs_file(self) -> ArrivalConfig:
        if self.process is ArrivalProcess.TRACE and not self.trace:
            raise ValueError("process 'trace' needs a trace file (arrival.trace)")
        return self


@dataclass(slots=True, frozen=True)
class Arrival:
    at: float  # seconds from the start of the run
    agent: str | None = None  # None: drawn from the mix
    input_tokens: int | None = None  # None: drawn from the workload's distribution


def arrivals(config: ArrivalConfig, duration_s: float, seed: int) -> Iterator[Arrival]:
    """Task arrival times within [0, duration_s)."""
    if config.process is ArrivalProcess.TRACE:
        # Imported here: traces builds Arrivals, so it imports this module.
        from orchestrator.workload.traces import read_trace

        yield from read_trace(Path(config.trace or ""), config.speedup, duration_s)
        return
    mean_gap = 1.0 / config.rate
    if config.process is ArrivalProcess.CONSTANT:
        # k/rate, not a running sum of gaps: the count in [0, d) is ceil(d*rate) - 1
        # whatever the rounding.
        k = 1
        while (t := k / config.rate) < duration_s:
            yield Arrival(t)
            k += 1
        return
    rng = np.random.default_rng(seed)
    t = 0.0
    shape = 1.0 / (config.cv**2)
    while True:
        if config.process is ArrivalProcess.POISSON:
            gap = rng.exponential(mean_gap)
        else:
            gap = rng.gamma(shape, mean_gap / shape)
        t += float(gap)
        if t >= duration_s:
            return
        yield Arrival(t)


@dataclass(slots=True, frozen=True)
class Gaps:
    """Gaps between open-loop arrivals at `rate` per second, drawn live from a
    `random.Random` (the load generator's dispatcher; `arrivals` above is the
    simulator's, precomputed with numpy)."""

    rate: float  # arrivals per second (> 0)
    process: ArrivalProcess = ArrivalProcess.POISSON
    cv: float = 1.0  # coefficient of variation of the gaps (gamma only)

    def __post_init__(self) -> None:
        if self.process is ArrivalProcess.TRACE:
            raise ValueError("trace arrivals come from a trace file, not a rate")
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"arrival rate must be a positive number, got {self.rate}")
        if self.process is ArrivalProcess.GAMMA and not (math.isfinite(self.cv) and self.cv > 0):
            raise ValueError(f"gamma arrivals need a positive cv, got {self.cv}")

    def gap(self, rng: random.Random) -> float:
        """Seconds until the next arrival."""
        if self.process is ArrivalProcess.CONSTANT:
            return 1.0 / self.rate
        if self.process is ArrivalProcess.POISSON:
            return rng.expovariate(self.rate)
        shape = 1.0 / self.cv**2  # mean = shape * scale = 1 / rate
        return rng.gammavariate(shape, 1.0 / (self.rate * shape))

    def schedule(self, rng: random.Random, start: float, end: float) -> list[float]:
        """Arrival times in [start, end): what a dispatcher would fire (tests, plans)."""
        times, t = [], start + self.gap(rng)
        while t < end:
            times.append(t)
            t += self.gap(rng)
        return times
