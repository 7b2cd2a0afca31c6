"""What `inflection load` prints: where (`Output`), the one-line errors, the live progress
line, the final count and the summary and sweep tables.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loadtests.metrics import Figures, Snapshot
from loadtests.sweep_curve import SweepPoint
from orchestrator.tables import TableFormat

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from loadtests.locust_run import Live

INTERRUPTED = 130  # the shell's code for a run ended by Ctrl-C (128 + SIGINT)


@dataclass(slots=True, frozen=True)
class Output:
    """Where the command prints: result tables on `out` (stdout) in `fmt`; messages on
    `info` (stdout, or stderr when stdout carries CSV/JSON); live progress on stderr."""

    out: Console
    info: Console
    progress: Console
    fmt: TableFormat

    @classmethod
    def for_format(cls, fmt: TableFormat) -> Output:
        from rich.console import Console

        out = Console()
        stderr = Console(stderr=True)
        return cls(out, out if fmt is TableFormat.TABLE else stderr, stderr, fmt)


def print_error(message: str) -> None:
    line = message if message.startswith("inflection: ") else f"inflection: {message}"
    sys.stderr.write(line.splitlines()[0] + "\n")
    sys.stderr.flush()


def _num(value: float) -> str:
    """Three significant digits, but never an exponent (1234.5 -> 1234, not 1.23e+03)."""
    return f"{value:.0f}" if abs(value) >= 99.95 else f"{value:.3g}"


def ms(seconds: float | None) -> str:
    """Seconds as milliseconds, the unit of every latency in the tables and charts."""
    return "-" if seconds is None else _num(seconds * 1000)


def live_line(live: Live) -> str:
    """One line of live figures: totals, then the trailing window's rates and percentiles."""
    f = live.figures
    counts = f"{f.failed} failed" + (f", {f.warmup_tasks} in warm-up" if f.warmup_tasks else "")
    amplification = (
        "-" if f.token_amplification_mean is None else f"{f.token_amplification_mean:.3g}"
    )
    return (
        f"{live.users} users, {f.tasks} tasks ({counts}) | last {f.window_s:.0f}s: "
        f"{f.tasks_per_s:.2f} tasks/s, "
        f"TTFT p50/p99 {ms(f.task_ttft_p50_s)}/{ms(f.task_ttft_p99_s)} ms, "
        f"latency p50/p99 {ms(f.task_latency_p50_s)}/{ms(f.task_latency_p99_s)} ms, "
        f"{f.output_tokens_per_s:.0f} output tok/s, amplification {amplification}"
    )


def finished_line(snapshot: Snapshot) -> str:
    """The run's final count, from the same snapshot as the summary (so they agree)."""
    summary = snapshot["summary"]
    line = (
        f"{summary['tasks']} tasks measured ({summary['ok']} ok, {summary['failed']} failed) "
        f"over {summary['duration_s']:.1f}s"
    )
    warmup = snapshot.get("warmup")
    if warmup is not None:
        line += (
            f"; warm-up: {warmup['excluded_tasks']} tasks that started in the first "
            f"{warmup['seconds']:g}s are left out of every figure below"
        )
    return line


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value}{unit}"
    return f"{float(value):.{digits}f}{unit}"


_DIST_STATS = ("mean", "p50", "p99")


def _dist(figures: Mapping[str, Any], key: str, scale: float = 1.0, stat: str = "") -> str:
    """`mean / p50 / p99` of one distribution (or just `stat`), `-` without samples."""
    d = figures[key]
    if not d["count"]:
        return "-"
    return " / ".join(_num(d[k] * scale) for k in ((stat,) if stat else _DIST_STATS))


def summary_table(snapshot: Snapshot, *, split: bool = False) -> Table:
    """Rows are metrics, columns are `all` then each agent: narrow enough for any terminal.
    `split`: one row per statistic (`task latency (s) p99`) instead of `mean / p50 / p99`
    cells, for CSV and JSON."""
    from rich.table import Table

    columns = [("all", snapshot["summary"])] + [(a["agent"], a) for a in snapshot["per_agent"]]
    caption = None if split else "* mean / p50 / p99"
    table = Table(title="Agentic summary", title_justify="left", caption=caption)
    table.add_column("metric")
    for name, _ in columns:
        table.add_column(name, justify="right")

    def row(label: str, cell: Callable[[Figures], str]) -> None:
        table.add_row(label, *(cell(f) for _, f in columns))

    def dist_row(label: str, key: str, scale: float = 1.0) -> None:
        if not split:
            row(f"{label} *", lambda f: _dist(f, key, scale))
            return
        for stat in _DIST_STATS:
            row(f"{label} {stat}", lambda f, stat=stat: _dist(f, key, scale, stat))  # type: ignore[misc]

    row("tasks ok / failed", lambda f: f"{f['ok']} / {f['failed']}")
    row("tasks/s", lambda f: _fmt(f["tasks_per_s"]))
    row("goodput/s", lambda f: _fmt(f["goodput_per_s"]))
    dist_row("token amplification", "token_amplification")
    dist_row("llm calls per task", "llm_calls_per_task")
    dist_row("task ttft (ms)", "task_ttft_s", scale=1000.0)
    dist_row("task latency (ms)", "task_latency_s", scale=1000.0)
    dist_row("call tpot (ms)", "call_tpot_s", scale=1000.0)
    row("prompt tokens/s", lambda f: _fmt(f["prompt_tokens_per_s"], digits=1))
    row("output tokens/s", lambda f: _fmt(f["output_tokens_per_s"], digits=1))
    row(
        "prefix hit rate",
        lambda f: "-" if f["prefix_hit_rate"] is None else f"{f['prefix_hit_rate']:.1%}",
    )
    summary = snapshot["summary"]
    if summary["dropped_tasks"]:
        row("dropped arrivals", lambda f: str(f["dropped_tasks"]))
    if summary["failures"]:
        row(
            "failures",
            lambda f: ", ".join(f"{k} {v}" for k, v in f["failures"].items()) or "-",
        )
    return table


def step_line(point: SweepPoint) -> str:
    verdict_text = "met" if point.met else "BROKE"
    return (
        f"  offered {point.offered_per_s:g} tasks/s, achieved {point.achieved_per_s:.2f}: "
        f"{point.tasks} tasks, {point.good_fraction:.1%} within the SLO ({verdict_text}); "
        f"TTFT p50/p99 {ms(point.task_ttft_p50_s)}/{ms(point.task_ttft_p99_s)} ms, "
        f"latency p50/p99 {ms(point.task_latency_p50_s)}/{ms(point.task_latency_p99_s)} ms"
    )


def sweep_table(points: Sequence[SweepPoint], slo: str) -> Table:
    """One row per step: offered against achieved rate, latency percentiles, the verdict."""
    from rich.table import Table

    table = Table(title=f"Sweep against {slo}", title_justify="left")
    for name in (
        "offered tasks/s",
        "achieved tasks/s",
        "tasks",
        "failed",
        "within SLO",
        "TTFT p50 (ms)",
        "TTFT p99 (ms)",
        "latency p50 (ms)",
        "latency p99 (ms)",
        "output tok/s",
        "verdict",
    ):
        table.add_column(name, justify="right")
    for p in points:
        table.add_row(
            f"{p.offered_per_s:g}",
            f"{p.achieved_per_s:.2f}",
            str(p.tasks),
            str(p.failed + p.dropped),
            f"{p.good_fraction:.1%}",
            ms(p.task_ttft_p50_s),
            ms(p.task_ttft_p99_s),
            ms(p.task_latency_p50_s),
            ms(p.task_latency_p99_s),
            f"{p.output_tokens_per_s:.0f}",
            "met" if p.met else "broke",
        )
    return table
