"""Rolling-window series of a run, for the live charts (`/agentic`) and `report.html`.

Counting completions per 1 s bucket turns a steady few tasks/s into a square wave (a
closed loop of 6 users with 2 s tasks completes 6, 0, 6, 0 ... per second), so each point
here is over the trailing `WINDOW_S` seconds instead: rates are completions in the window
divided by its length, percentiles are over the tasks that completed in it. Points are
`STEP_S` apart from the run's first start, and the window is shortened at the start of a
run (it cannot reach before the first task began), so the first points are not
diluted by time when nothing could have completed.

Two inputs: the raw samples (exact; the live page and the locustfile's report have them),
or a snapshot's 1 s buckets (`inflection load` reports only have those): rates are then
exact at bucket resolution and the percentiles an approximation (see `from_buckets`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from loadtests.metrics import TaskSample

WINDOW_S = 10.0  # the trailing window of every point; the charts state it
STEP_S = 1.0  # the spacing of points


@dataclass(slots=True, frozen=True)
class RollingPoint:
    """The run's figures over the window ending at `t`; latency figures are of ok tasks,
    None when no ok task completed in the window."""

    t: float  # window end, unix seconds
    elapsed_s: float  # window end, seconds since the series began (the first task's start)
    window_s: float  # the window's length: WINDOW_S, shorter at the run's start
    tasks_per_s: float  # ok tasks completed
    failures_per_s: float
    output_tokens_per_s: float
    task_latency_p50_s: float | None
    task_latency_p99_s: float | None
    task_ttft_p50_s: float | None
    task_ttft_p99_s: float | None
    token_amplification_mean: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pct(values: Sequence[float], p: float) -> float | None:
    return float(np.percentile(values, p)) if values else None


def _ends(start: float, until: float, step_s: float) -> list[float]:
    """Window ends from `start + step_s` to `until`, `until` itself always last."""
    count = max(0, math.ceil((until - start) / step_s - 1e-9) - 1)
    return [start + (i + 1) * step_s for i in range(count)] + [until]


def rolling(
    samples: Sequence[TaskSample],
    *,
    until: float | None = None,
    window_s: float = WINDOW_S,
    step_s: float = STEP_S,
) -> list[RollingPoint]:
    """Points from the run's first start to `until` (unix s; default the last completion:
    a live view passes now, so a stalled run's rate falls to zero)."""
    if not samples:
        return []
    ordered = sorted(samples, key=lambda s: s.completed_at)
    done = [s.completed_at for s in ordered]
    start = min(s.started_at for s in ordered)
    end = done[-1] if until is None else max(until, start)
    points = []
    for t in _ends(start, end, step_s):
        window = min(window_s, t - start)
        if window <= 0:
            continue
        # (t - window, t]: a task completing exactly at a window end counts once.
        inside = ordered[bisect.bisect_right(done, t - window) : bisect.bisect_right(done, t)]
        ok = [s for s in inside if s.ok]
        ttfts = [s.task_ttft for s in ok if s.task_ttft is not None]
        latencies = [s.task_latency for s in ok]
        points.append(
            RollingPoint(
                t=t,
                elapsed_s=t - start,
                window_s=window,
                tasks_per_s=len(ok) / window,
                failures_per_s=(len(inside) - len(ok)) / window,
                output_tokens_per_s=sum(s.output_tokens for s in inside) / window,
                task_latency_p50_s=_pct(latencies, 50),
                task_latency_p99_s=_pct(latencies, 99),
                task_ttft_p50_s=_pct(ttfts, 50),
                task_ttft_p99_s=_pct(ttfts, 99),
                token_amplification_mean=(
                    sum(s.token_amplification for s in ok) / len(ok) if ok else None
                ),
            )
        )
    return points


def from_buckets(
    buckets: Sequence[Mapping[str, Any]], *, window_s: float = WINDOW_S
) -> list[RollingPoint]:
    """Points at each bucket's end from a snapshot's equal-width `timeseries` buckets.
    Rates are exact sums over the buckets in the window. Percentiles cannot be merged, so
    p50 is the ok-task-weighted mean of the buckets' p50s and p99 the highest bucket p99
    (an upper bound); amplification is not in the buckets unless a bucket carries
    `token_amplification_mean`."""
    if not buckets:
        return []
    width = float(buckets[1]["t"] - buckets[0]["t"]) if len(buckets) > 1 else 1.0
    span = max(1, round(window_s / width))
    start = float(buckets[0]["t"])
    points = []
    for i, last in enumerate(buckets):
        inside = buckets[max(0, i - span + 1) : i + 1]
        window = len(inside) * width
        counts = [float(b.get("tasks_per_s") or 0.0) * width for b in inside]
        end = float(last["t"]) + width
        points.append(
            RollingPoint(
                t=end,
                elapsed_s=end - start,
                window_s=window,
                tasks_per_s=sum(counts) / window,
                failures_per_s=_bucket_sum(inside, "failures_per_s") * width / window,
                output_tokens_per_s=_bucket_sum(inside, "output_tokens_per_s") * width / window,
                task_latency_p50_s=_weighted(inside, counts, "task_latency_p50_s"),
                task_latency_p99_s=_highest(inside, "task_latency_p99_s"),
                task_ttft_p50_s=_weighted(inside, counts, "task_ttft_p50_s"),
                task_ttft_p99_s=_highest(inside, "task_ttft_p99_s"),
                token_amplification_mean=_weighted(inside, counts, "token_amplification_mean"),
            )
        )
    return points


def _bucket_sum(buckets: Sequence[Mapping[str, Any]], key: str) -> float:
    return sum(float(b.get(key) or 0.0) for b in buckets)


def _weighted(
    buckets: Sequence[Mapping[str, Any]], weights: Sequence[float], key: str
) -> float | None:
    """The weight-averaged `key` of the buckets that have it and a weight."""
    pairs = zip(buckets, weights, strict=True)
    known = [(float(b[key]), w) for b, w in pairs if w > 0 and b.get(key) is not None]
    total = sum(w for _, w in known)
    return sum(v * w for v, w in known) / total if total else None


def _highest(buckets: Sequence[Mapping[str, Any]], key: str) -> float | None:
    known = [float(b[key]) for b in buckets if b.get(key) is not None]
    return max(known) if known else None
