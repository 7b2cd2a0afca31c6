"""Run-level aggregates (docs/metrics.md "Aggregates over a run") and their table.

Pure functions over finished `TaskResult`s, shared by `inflection run`, the simulator and
the benchmarks; the load generator's figures (`loadtests.metrics.figures`) take their
distributions from `Distribution.of` too, so a percentile or mean means one thing
everywhere. Task TTFT percentiles are over the tasks whose answer reached the client (a
task with no answer token has no TTFT: it is left out, not counted as 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from orchestrator.domain import TaskResult, TaskUsage

PERCENTILES = (50, 90, 95, 99)


@dataclass(slots=True, frozen=True)
class Distribution:
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution:
        if not values:
            return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        arr = np.asarray(values, dtype=float)
        p50, p90, p95, p99 = (float(v) for v in np.percentile(arr, PERCENTILES))
        # fsum is exactly rounded: the mean does not depend on the order values came in
        # (merged load-generator workers equal one process seeing every task, bit for bit).
        mean = math.fsum(arr.tolist()) / arr.size
        return cls(mean, p50, p90, p95, p99, float(arr.max()))


@dataclass(slots=True, frozen=True)
class RunSummary:
    tasks: int
    failed_tasks: int
    duration_s: float  # first dispatch -> last completion
    tasks_per_s: float
    llm_calls_per_task: float
    output_tps: float  # sum of output tokens over all calls / duration
    processed_tps: float  # sum of prompt + output tokens over all calls / duration
    prefix_hit_rate: float  # over all calls of the run
    token_amplification: Distribution
    task_ttft: Distribution
    task_latency: Distribution
    call_tpot: Distribution  # over every call with more than one output token


def summarize(
    results: Sequence[TaskResult],
    duration_s: float,
    failed: Sequence[TaskUsage | None] = (),
) -> RunSummary:
    """`failed`: the partial usage of each failed task (None where it ran no call); the
    token rates and the prefix hit rate count their calls too ("all calls")."""
    calls = [c for r in results for c in r.calls]
    partial = [u for u in failed if u is not None]
    output = sum(c.usage.output_tokens for c in calls) + sum(u.output_tokens_total for u in partial)
    prompt = sum(c.usage.prompt_tokens for c in calls) + sum(u.prompt_tokens_total for u in partial)
    cached = sum(c.usage.cached_prompt_tokens for c in calls) + sum(
        u.cached_tokens_total for u in partial
    )
    span = duration_s if duration_s > 0 else float("inf")
    return RunSummary(
        tasks=len(results),
        failed_tasks=len(failed),
        duration_s=duration_s,
        tasks_per_s=len(results) / span,
        llm_calls_per_task=(len(calls) / len(results)) if results else 0.0,
        output_tps=output / span,
        processed_tps=(prompt + output) / span,
        prefix_hit_rate=cached / prompt if prompt else 0.0,
        token_amplification=Distribution.of([r.usage.token_amplification for r in results]),
        task_ttft=Distribution.of(
            [r.usage.task_ttft for r in results if r.usage.final_output_tokens > 0]
        ),
        task_latency=Distribution.of([r.usage.task_latency for r in results]),
        call_tpot=Distribution.of([c.timings.tpot for c in calls if c.timings.tpot is not None]),
    )


def summary_table(summary: RunSummary, title: str = "Inflection run") -> object:
    """A rich Table of the summary (typed loosely so importing rich stays local)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("mean", justify="right")
    table.add_column("p50", justify="right")
    table.add_column("p90", justify="right")
    table.add_column("p99", justify="right")

    def dist(name: str, d: Distribution, scale: float = 1.0, fmt: str = "{:.3f}") -> None:
        table.add_row(name, *(fmt.format(v * scale) for v in (d.mean, d.p50, d.p90, d.p99)))

    table.add_row("tasks completed", str(summary.tasks), "", "", "")
    table.add_row("tasks failed", str(summary.failed_tasks), "", "", "")
    table.add_row("tasks/s", f"{summary.tasks_per_s:.2f}", "", "", "")
    table.add_row("LLM calls per task", f"{summary.llm_calls_per_task:.2f}", "", "", "")
    dist("token amplification", summary.token_amplification, fmt="{:.2f}")
    dist("task TTFT (ms)", summary.task_ttft, 1000.0, "{:.1f}")
    dist("task latency (ms)", summary.task_latency, 1000.0, "{:.1f}")
    dist("call TPOT (ms)", summary.call_tpot, 1000.0, "{:.2f}")
    table.add_row("output tokens/s", f"{summary.output_tps:.1f}", "", "", "")
    table.add_row("processed tokens/s", f"{summary.processed_tps:.1f}", "", "", "")
    table.add_row("prefix hit rate", f"{summary.prefix_hit_rate:.1%}", "", "", "")
    return table
