"""Task-level service-level objectives (docs/metrics.md, goodput): one grammar and one meaning
for `inflection simulate` (the config's `slo:`), `inflection plan --slo` and
`inflection load --slo`.

Grammar (`parse_slo`): comma-separated `NAME=DURATION`, e.g.
`task_ttft_p90=5s,task_latency_p99=60s` or `task_ttft=5s,call_tpot_p99=100ms`. NAME is
`task_ttft` or `task_latency`, either alone or with a percentile `_p90`/`_p99`, or
`call_tpot_p99`; a trailing `_s` is allowed (`task_ttft_s=5`). DURATION is a positive
number of seconds, optionally with the unit `s` or `ms` (any case).

Meaning:
- a task meets the SLO (it counts towards goodput) when it succeeded, its task TTFT and
  task latency are within every bound given for them (with or without a percentile: the
  tightest one counts), and the p99 of its own calls' TPOT is within `call_tpot_p99`;
- a run meets the SLO when each bound holds for the run's figure: the named percentile
  over the measured tasks (`task_ttft_p90`), every task for a bound without one
  (`task_ttft`: the maximum), and the p99 of all calls' TPOT for `call_tpot_p99`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.report import Distribution, RunSummary


class SloConfig(BaseModel):
    """Task-level bounds, all in seconds; None: not bounded. The field order is the
    order `slo_checks` reports them in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_ttft_p90: float | None = Field(default=None, gt=0, description="Seconds.")
    task_latency_p99: float | None = Field(default=None, gt=0, description="Seconds.")
    task_ttft_p99: float | None = Field(default=None, gt=0, description="Seconds.")
    task_latency_p90: float | None = Field(default=None, gt=0, description="Seconds.")
    task_ttft: float | None = Field(default=None, gt=0, description="Seconds, every task.")
    task_latency: float | None = Field(default=None, gt=0, description="Seconds, every task.")
    call_tpot_p99: float | None = Field(
        default=None, gt=0, description="Seconds; per task: the p99 of its calls' TPOT."
    )

    def bounds(self) -> dict[str, float]:
        """The bounds given, by name, in field order."""
        return {k: v for k, v in self.model_dump().items() if v is not None}

    def is_empty(self) -> bool:
        return not self.bounds()

    @property
    def ttft_bound(self) -> float:
        """The tightest bound on one task's TTFT (inf: none)."""
        given = (self.task_ttft_p90, self.task_ttft_p99, self.task_ttft)
        return min((v for v in given if v is not None), default=math.inf)

    @property
    def latency_bound(self) -> float:
        """The tightest bound on one task's latency (inf: none)."""
        given = (self.task_latency_p90, self.task_latency_p99, self.task_latency)
        return min((v for v in given if v is not None), default=math.inf)

    def met_by_task(
        self, task_ttft: float | None, task_latency: float, call_tpots: Sequence[float] = ()
    ) -> bool:
        """Whether one succeeded task meets every bound (task_ttft None: no answer token
        reached the client, which misses any TTFT bound)."""
        ttft_bound = self.ttft_bound
        if ttft_bound < math.inf and (task_ttft is None or task_ttft > ttft_bound):
            return False
        if task_latency > self.latency_bound:
            return False
        if self.call_tpot_p99 is not None and call_tpots:
            p99 = float(np.percentile(np.asarray(call_tpots, dtype=float), 99))
            if p99 > self.call_tpot_p99:
                return False
        return True

    def to_dict(self) -> dict[str, float | None]:
        """Every bound, named with its unit (`task_ttft_s`); None when not given."""
        return {f"{k}_s": v for k, v in self.model_dump().items()}

    def text(self) -> str:
        """The bounds in `parse_slo`'s grammar, e.g. 'task_ttft_p90=5s,task_latency=30s'."""
        return ",".join(f"{k}={v:g}s" for k, v in self.bounds().items())


KNOWN = tuple(SloConfig.model_fields)
_DURATION = re.compile(r"^([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s)?$", re.IGNORECASE)


def parse_slo(text: str, option: str = "--slo") -> SloConfig:
    """Parse the grammar of the module docstring; raises ValueError with a message fit
    for the command line (naming `option`)."""
    bounds: dict[str, float] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"{option}: {item!r} is not NAME=VALUE (e.g. task_ttft_p90=5s)")
        name = name.removesuffix("_s")
        if name not in SloConfig.model_fields:
            raise ValueError(f"{option}: unknown bound {name!r}; known: {', '.join(KNOWN)}")
        if name in bounds:
            raise ValueError(f"{option}: {name} given twice")
        bounds[name] = _seconds(value.strip(), name, option)
    return SloConfig(**bounds)


def _seconds(value: str, name: str, option: str) -> float:
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"{option}: {name}={value!r} is not a duration (e.g. 5s, 100ms, 2.5)")
    unit = (match.group(2) or "s").lower()
    seconds = float(match.group(1)) * (0.001 if unit == "ms" else 1.0)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{option}: {name} must be a positive duration, got {value!r}")
    return seconds


@dataclass(slots=True, frozen=True)
class SloCheck:
    """One SLO bound against the run's measured figure."""

    name: str  # the SloConfig field, e.g. "task_ttft_p90"
    bound_s: float
    value_s: float  # the figure over the measured tasks

    @property
    def met(self) -> bool:
        return self.value_s <= self.bound_s

    @property
    def label(self) -> str:
        """'task TTFT p90' for 'task_ttft_p90', 'task latency max' for 'task_latency'."""
        scope, what, *pct = self.name.split("_")
        shown = what.upper() if what in ("ttft", "tpot") else what
        return f"{scope} {shown} {pct[0] if pct else 'max'}"


def _figure(name: str, summary: RunSummary) -> float:
    metric, sep, pct = name.rpartition("_p")
    dist: Distribution = getattr(summary, metric if sep else name)
    return float(getattr(dist, f"p{pct}")) if sep else dist.max


def slo_checks(slo: SloConfig, summary: RunSummary) -> tuple[SloCheck, ...]:
    """Each bound `slo` gives against the summary's figure (module docstring)."""
    return tuple(SloCheck(k, v, _figure(k, summary)) for k, v in slo.bounds().items())
