"""The curve a rate sweep measures: per step, the offered against the achieved task rate,
latency percentiles and the SLO verdict, and what the sweep concludes.

Pure (no locust, no Ray): `inflection load --sweep` builds one `SweepPoint` per step from
that step's agentic figures (loadtests.metrics `figures`), prints them, and writes
`sweep.json` and `sweep.csv`; the locustfile's in-run sweep stores the same points in its
agentic JSON. A sweep whose every step met the SLO has not found the limit: the verdict
says "SLO never broke up to MAX" rather than calling MAX the answer.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import orjson

from loadtests.metrics import Figures, TaskSample, meets_slo
from orchestrator.workload.slo import SloConfig
from orchestrator.workload.sweep import SweepStep, step_meets_slo


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


def sweep_step_of(rate: float, summary: Figures) -> SweepStep:
    """One sweep step from a run's summary figures: failed tasks and dropped arrivals
    count as misses, so an overloaded server cannot meet the SLO by refusing work."""
    ok = int(summary["ok"])
    fraction = summary["goodput_fraction"]
    good = round(float(fraction) * ok) if fraction is not None else 0
    attempted = int(summary["tasks"]) + int(summary["dropped_tasks"])
    return SweepStep(rate, good / attempted if attempted else 0.0, attempted)


@dataclass(slots=True, frozen=True)
class SweepPoint:
    """One step of a sweep."""

    offered_per_s: float  # the arrival rate the step asked for
    achieved_per_s: float  # ok tasks completed per second
    tasks: int  # attempted: completed (ok or failed) plus dropped arrivals
    ok: int
    failed: int
    dropped: int
    good_fraction: float  # tasks meeting the SLO / attempted
    met: bool  # good_fraction reached the sweep's min_good
    task_ttft_p50_s: float | None
    task_ttft_p99_s: float | None
    task_latency_p50_s: float | None
    task_latency_p99_s: float | None
    output_tokens_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepPoint:
        return cls(**{f.name: data[f.name] for f in fields(cls)})


COLUMNS = tuple(f.name for f in fields(SweepPoint))


def sweep_point(
    rate: float,
    figures: Figures,
    step: SweepStep,
    min_good: float,
    span_s: float | None = None,
) -> SweepPoint:
    """The point of a step from its `figures` (loadtests.metrics) and its judged SweepStep;
    `span_s`: the judged window's length (the achieved rate is ok tasks over it), else the
    figures' own tasks_per_s (a step that was a whole run)."""
    ok = int(figures["ok"])
    achieved = ok / span_s if span_s else float(figures["tasks_per_s"])
    return SweepPoint(
        offered_per_s=rate,
        achieved_per_s=achieved,
        tasks=step.tasks,
        ok=ok,
        failed=int(figures["failed"]),
        dropped=int(figures["dropped_tasks"]),
        good_fraction=step.good_fraction,
        met=step_meets_slo(step, min_good),
        task_ttft_p50_s=figures["task_ttft_s"]["p50"],
        task_ttft_p99_s=figures["task_ttft_s"]["p99"],
        task_latency_p50_s=figures["task_latency_s"]["p50"],
        task_latency_p99_s=figures["task_latency_s"]["p99"],
        output_tokens_per_s=float(figures["output_tokens_per_s"]),
    )


class Outcome(StrEnum):
    BROKE = "broke"  # some rate met the SLO, a higher one did not
    NEVER_BROKE = "never_broke"  # every rate tried met it: the limit is above the last one
    NEVER_MET = "never_met"  # not even the first rate met it


@dataclass(slots=True, frozen=True)
class Verdict:
    outcome: Outcome
    best: float | None  # highest offered rate that met the SLO
    last: float  # highest offered rate tried

    def line(self, slo: str) -> str:
        if self.outcome is Outcome.NEVER_MET:
            return f"no rate met the SLO ({slo}); the lowest tried was too high"
        if self.outcome is Outcome.NEVER_BROKE:
            return (
                f"SLO never broke up to {self.last:g} tasks/s (the highest rate tried): "
                "the limit is higher; raise MAX to find it"
            )
        return f"highest rate meeting the SLO: {self.best:g} tasks/s (broke at {self.last:g})"


def verdict(points: Sequence[SweepPoint]) -> Verdict:
    """What a sweep's steps say (points in the order they ran; at least one)."""
    met = [p.offered_per_s for p in points if p.met]
    last = max(p.offered_per_s for p in points)
    if not met:
        return Verdict(Outcome.NEVER_MET, None, last)
    if all(p.met for p in points):
        return Verdict(Outcome.NEVER_BROKE, max(met), last)
    return Verdict(Outcome.BROKE, max(met), last)


def sweep_json(points: Sequence[SweepPoint], *, slo: str, min_good: float) -> bytes:
    """`sweep.json`: the SLO, the verdict and every point."""
    v = verdict(points)
    document = {
        "slo": slo,
        "min_good": min_good,
        "outcome": v.outcome.value,
        "highest_rate_meeting_slo": v.best,
        "highest_rate_tried": v.last,
        "points": [p.to_dict() for p in points],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def sweep_csv(points: Sequence[SweepPoint]) -> str:
    """`sweep.csv`: one row per step, the SweepPoint fields as columns (empty: no sample)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for p in points:
        writer.writerow(["" if v is None else v for v in (getattr(p, c) for c in COLUMNS)])
    return out.getvalue()
