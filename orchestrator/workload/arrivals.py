"""Task arrival processes: when tasks reach the cluster (METRICS.md "offered load")."""

from __future__ import annotations

import enum
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
