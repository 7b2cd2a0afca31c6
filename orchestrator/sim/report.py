"""The JSON and HTML reports of `inflection simulate`.

The JSON file is the full-resolution record of a run (summary, timeline, config) for
other tools to read; the HTML file is one self-contained page for people: the SLO verdict
and goodput first, the summary table of `inflection run`, a per-agent breakdown, four
plots over simulated time (warm-up shaded) embedded as inline SVG, and the config.
Nothing in the page loads from the network, so it opens from a CI artifact or an
air-gapped machine as it is.

matplotlib is imported inside the HTML writer only: the CLI and SDK import this package
and must stay quick to import.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from orchestrator.report import RunSummary, summary_table
from orchestrator.reporting import CSS, dumps, new_figure, no_data, svg
from orchestrator.sim.timeline import AgentBreakdown, Percentiles, Sample, Timeline
from orchestrator.workload.slo import SloCheck

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from rich.table import Table

FORMAT_VERSION = 1  # of the JSON layout below; bump on incompatible changes
MAX_POINTS = 600  # per plotted series: keeps the page small for long runs
MAX_REPLICA_LINES = 8  # replicas drawn individually; more become a min/median/max band

_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})
# Colours for individual replica lines: tab10 without the blue of the band and the grey.
_LINE_COLOURS = ("C1", "C2", "C3", "C4", "C5", "C6", "C8", "C9")

Floats = npt.NDArray[np.float64]
ReportPath = str | PathLike[str]


@dataclass(slots=True, frozen=True)
class RunOutcome:
    """What a run concluded beyond its summary: its span, SLO verdict and goodput, and the
    per-agent breakdown (the CLI and the HTML page word them the same way)."""

    simulated_s: float  # virtual time at the last completion (arrivals, then drain)
    warmup_s: float = 0.0  # arrivals before this were not measured
    slo_checks: tuple[SloCheck, ...] = ()
    goodput_tasks_per_s: float = 0.0
    agents: tuple[AgentBreakdown, ...] = ()
    interrupted: bool = False


def span_text(outcome: RunOutcome, summary: RunSummary) -> str:
    """'simulated 122.0 s, measured 92.0 s after a 30 s warm-up'."""
    measured = (
        f"measured {summary.duration_s:,.1f} s after a {outcome.warmup_s:g} s warm-up"
        if outcome.warmup_s > 0
        else f"measured {summary.duration_s:,.1f} s (no warm-up)"
    )
    cut = " (interrupted)" if outcome.interrupted else ""
    return f"simulated {outcome.simulated_s:,.1f} s{cut}, {measured}"


def slo_text(outcome: RunOutcome, summary: RunSummary) -> str | None:
    """'SLO met: task TTFT p90 1833 ms <= 5000 ms, ...; goodput 38.51 tasks/s (99.8% of
    measured tasks)'; None when the run had no SLO."""
    if not outcome.slo_checks:
        return None
    met = summary.tasks > 0 and all(c.met for c in outcome.slo_checks)
    bounds = ", ".join(
        f"{c.label} {c.value_s * 1000:,.0f} ms {'<=' if c.met else '>'} {c.bound_s * 1000:,.0f} ms"
        for c in outcome.slo_checks
    )
    share = (
        f" ({outcome.goodput_tasks_per_s / summary.tasks_per_s:.1%} of measured tasks)"
        if summary.tasks_per_s > 0
        else ""
    )
    return (
        f"SLO {'met' if met else 'missed'}: {bounds}; "
        f"goodput {outcome.goodput_tasks_per_s:.2f} tasks/s{share}"
    )


def agent_table(agents: Sequence[AgentBreakdown], title: str = "per agent") -> Table:
    """The measured tasks of each agent program, one row each."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("agent")
    for name in ("tasks", "tasks/s", "calls /task", "amplif. mean", "TTFT p90 ms",
                 "latency p99 ms", "goodput tasks/s"):  # fmt: skip
        table.add_column(name, justify="right")
    for a in agents:
        s = a.summary
        table.add_row(
            a.agent,
            str(s.tasks),
            f"{s.tasks_per_s:.2f}",
            f"{s.llm_calls_per_task:.2f}",
            f"{s.token_amplification.mean:.2f}",
            f"{s.task_ttft.p90 * 1000:.1f}",
            f"{s.task_latency.p99 * 1000:.1f}",
            f"{a.goodput_tasks_per_s:.2f}",
        )
    return table


# ---------------------------------------------------------------------------- JSON


def write_json(
    path: ReportPath,
    *,
    title: str,
    summary: RunSummary,
    timeline: Timeline,
    config: Mapping[str, Any],
    extra: Mapping[str, Any] = _NO_EXTRA,
    outcome: RunOutcome | None = None,
) -> None:
    """Write the run as indented JSON: title, summary, outcome (SLO checks, per-agent
    breakdown), config, extra and every sample.

    Samples are written one per line (the rest is indented) so that a 64-replica run of
    thousands of samples stays a few MB and stays greppable.
    """
    head = {
        "format_version": FORMAT_VERSION,
        "title": title,
        "summary": summary,
        "outcome": outcome,
        "config": config,
        "extra": extra,
        "replicas": timeline.replicas,
    }
    head_text = _dumps(head, indent=True)
    # head_text ends with "\n}"; splice the samples in before the closing brace.
    body = b",\n".join(b"    " + _dumps(sample, indent=False) for sample in timeline.samples)
    out = head_text[:-2] + b',\n  "samples": [\n' + body + (b"\n" if body else b"") + b"  ]\n}\n"
    _write(path, out)


def _dumps(value: Any, *, indent: bool) -> bytes:
    return dumps(value, indent=indent)


def _write(path: ReportPath, data: bytes) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


# ---------------------------------------------------------------------------- HTML


def write_html(
    path: ReportPath,
    *,
    title: str,
    summary: RunSummary,
    timeline: Timeline,
    config: Mapping[str, Any],
    extra: Mapping[str, Any] = _NO_EXTRA,
    outcome: RunOutcome | None = None,
) -> None:
    """Write one self-contained HTML page: the SLO verdict and goodput, summary table,
    per-agent table, four plots with the warm-up shaded, config, extra."""
    warmup = outcome.warmup_s if outcome is not None else 0.0
    binned = _bin(timeline, warmup)
    plots = [
        ("latency", "Task latency and task TTFT", svg(_latency_figure(binned), "latency")),
        ("throughput", "Throughput", svg(_throughput_figure(binned), "throughput")),
        ("kv", "KV cache usage per replica", svg(_kv_figure(binned), "kv")),
        ("queue", "Queue depth per replica", svg(_queue_figure(binned), "queue")),
    ]
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="sub">{esc(_subtitle(summary, timeline, outcome))}</p>',
    ]
    if outcome is not None:
        verdict = slo_text(outcome, summary)
        if summary.tasks == 0:
            parts.append('<p class="verdict missed">No tasks measured: no SLO verdict.</p>')
        elif verdict is not None:
            met = verdict.startswith("SLO met")
            parts.append(f'<p class="verdict {"met" if met else "missed"}">{esc(verdict)}</p>')
        else:
            parts.append(
                f'<p class="verdict">No SLO given; throughput '
                f"{summary.tasks_per_s:.2f} tasks/s.</p>"
            )
    parts += ["<h2>Summary</h2>", _table_html(summary_table(summary, title))]
    if outcome is not None and outcome.agents:
        parts += ["<h2>Per agent</h2>", _table_html(agent_table(outcome.agents))]
    parts.append("<h2>Over simulated time</h2>")
    for key, caption, drawn in plots:
        parts.append(
            f'<figure class="plot" id="plot-{key}">{drawn}'
            f"<figcaption>{esc(caption)}. {esc(_binning_note(binned, key))}</figcaption></figure>"
        )
    parts += ["<h2>Configuration</h2>", f"<pre>{esc(_dumps(config, indent=True).decode())}</pre>"]
    if extra:
        parts += ["<h2>Details</h2>", f"<pre>{esc(_dumps(extra, indent=True).decode())}</pre>"]
    parts.append("</body></html>\n")
    _write(path, "\n".join(parts).encode())


def _table_html(table: object) -> str:
    """The rows of a table the CLI prints, read from the table itself so the two never
    drift."""
    from rich.table import Table

    if not isinstance(table, Table):
        raise TypeError(f"summary_table returned {type(table).__name__}, not a rich Table")
    columns = [[str(cell) for cell in column.cells] for column in table.columns]
    head = "".join(
        f"<th{'' if i == 0 else ' class=num'}>{html.escape(str(c.header))}</th>"
        for i, c in enumerate(table.columns)
    )
    rows = []
    for row in zip(*columns, strict=True):
        label, *numbers = row
        cells = "".join(f"<td class=num>{html.escape(v)}</td>" for v in numbers)
        rows.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    return (
        f'<table class="summary"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _subtitle(summary: RunSummary, timeline: Timeline, outcome: RunOutcome | None) -> str:
    interval = timeline.samples[0].interval if timeline.samples else 0.0
    span = (
        span_text(outcome, summary)
        if outcome is not None
        else f"{summary.duration_s:,.1f} s measured"
    )
    return (
        f"{span} · {len(timeline.replicas)} replicas · "
        f"{len(timeline.samples):,} samples of {interval:g} s"
    )


def _binning_note(binned: _Binned, plot: str) -> str:
    if binned.per_bin <= 1:
        return "One point per sampling interval."
    how = {
        "latency": "weighted by the tasks completed in each",
        "throughput": "tokens and tasks over the bin's simulated time",
    }.get(plot, "short peaks are smoothed; the JSON report has every sample")
    return f"Downsampled: each point covers up to {binned.per_bin} sampling intervals ({how})."


# ----------------------------------------------------------------- binned series


@dataclass(slots=True, frozen=True)
class _Binned:
    """The timeline reduced to at most MAX_POINTS consecutive bins of samples."""

    per_bin: int  # samples in the largest bin (1: not downsampled)
    warmup_s: float  # shaded on every plot: tasks arriving before it are not measured
    replicas: tuple[str, ...]
    t_mid: Floats  # simulated time at the middle of each bin: rates and latencies
    t_end: Floats  # mean of the bin's sample end times: per-replica gauges
    output_tps: Floats
    tasks_per_s: Floats
    # Tasks-weighted mean of the per-interval percentiles; NaN where no task finished.
    latency: dict[str, Floats]
    ttft: dict[str, Floats]
    kv_usage: Floats  # bins x replicas, fraction 0..1
    queue_depth: Floats  # bins x replicas


def _bin(timeline: Timeline, warmup_s: float = 0.0) -> _Binned:
    samples = timeline.samples
    n, r = len(samples), len(timeline.replicas)
    if n == 0:
        empty, no_gauge = np.zeros(0), np.zeros((0, r))
        return _Binned(
            per_bin=1,
            warmup_s=warmup_s,
            replicas=timeline.replicas,
            t_mid=empty,
            t_end=empty,
            output_tps=empty,
            tasks_per_s=empty,
            latency={},
            ttft={},
            kv_usage=no_gauge,
            queue_depth=no_gauge,
        )
    starts = (np.arange(min(n, MAX_POINTS)) * n) // min(n, MAX_POINTS)
    counts = np.diff(np.append(starts, n)).astype(float)

    def column(get: Callable[[Sample], float]) -> Floats:
        return np.fromiter((get(s) for s in samples), dtype=float, count=n)

    def total(values: Floats) -> Floats:
        return np.add.reduceat(values, starts, axis=0)

    t, interval = column(lambda s: s.t), column(lambda s: s.interval)
    span = total(interval)
    t_mid = t[starts] - interval[starts] + span / 2

    def rate(values: Floats) -> Floats:
        return np.divide(total(values), span, out=np.zeros(len(starts)), where=span > 0)

    def percentiles(of: Callable[[Sample], Percentiles | None]) -> dict[str, Floats]:
        # A sample with percentiles but no completed tasks would be odd; count it once.
        weight = column(lambda s: 0.0 if of(s) is None else max(s.tasks_completed, 1))
        values = np.array(
            [(0.0, 0.0, 0.0) if (p := of(s)) is None else (p.p50, p.p90, p.p99) for s in samples],
            dtype=float,
        )
        num, den = total(weight[:, None] * values), total(weight)[:, None]
        means = np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)
        return {"p50": means[:, 0], "p90": means[:, 1], "p99": means[:, 2]}

    def gauge(get: Callable[[Sample], Sequence[float]]) -> Floats:
        matrix = np.array([get(s) for s in samples], dtype=float).reshape(n, r)
        mean: Floats = total(matrix) / counts[:, None]
        return mean

    return _Binned(
        per_bin=int(counts.max()),
        warmup_s=warmup_s,
        replicas=timeline.replicas,
        t_mid=t_mid,
        t_end=total(t) / counts,
        output_tps=rate(column(lambda s: s.output_tokens)),
        tasks_per_s=rate(column(lambda s: s.tasks_completed)),
        latency=percentiles(lambda s: s.task_latency),
        ttft=percentiles(lambda s: s.task_ttft),
        kv_usage=gauge(lambda s: s.kv_usage),
        queue_depth=gauge(lambda s: s.queue_depth),
    )


# --------------------------------------------------------------------- figures


def _shade_warmup(ax: Axes, b: _Binned) -> None:
    if b.warmup_s > 0 and len(b.t_mid):
        ax.axvspan(
            0, b.warmup_s, color="#8c959f", alpha=0.15, linewidth=0, label="warm-up (not measured)"
        )


def _marker(points: int) -> str:
    # Sparse series (few samples, or latency only where tasks finished) need visible dots.
    return "." if points <= 120 else ""


def _latency_figure(b: _Binned) -> Figure:
    fig, ax = new_figure()
    ax.set_title(
        "Task latency and task TTFT (percentiles of tasks finishing in each interval)",
        fontsize="medium",
        loc="left",
    )
    ax.set_ylabel("seconds")
    series = [
        ("latency p50", b.latency.get("p50"), "C0", "-"),
        ("latency p90", b.latency.get("p90"), "C1", "-"),
        ("latency p99", b.latency.get("p99"), "C3", "-"),
        ("TTFT p50", b.ttft.get("p50"), "C2", "--"),
        ("TTFT p99", b.ttft.get("p99"), "C4", "--"),
    ]
    drawn = False
    _shade_warmup(ax, b)
    for label, values, colour, style in series:
        if values is None or not np.isfinite(values).any():
            continue
        ax.plot(
            b.t_mid,
            values,
            style,
            color=colour,
            label=label,
            linewidth=1.2,
            marker=_marker(int(np.isfinite(values).sum())),
            markersize=3,
        )
        drawn = True
    if drawn:
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize="small")
    else:
        no_data(ax, "tasks finished")
    return fig


def _throughput_figure(b: _Binned) -> Figure:
    fig, ax = new_figure()
    ax.set_title("Throughput", fontsize="medium", loc="left")
    if len(b.t_mid) == 0:
        no_data(ax, "samples")
        ax.set_ylabel("output tokens/s")
        return fig
    marker = _marker(len(b.t_mid))
    _shade_warmup(ax, b)
    (tokens,) = ax.plot(
        b.t_mid,
        b.output_tps,
        color="C0",
        linewidth=1.2,
        marker=marker,
        markersize=3,
        label="output tokens/s",
    )
    ax.set_ylabel("output tokens/s", color="C0")
    ax.set_ylim(bottom=0)
    right = ax.twinx()
    (tasks,) = right.plot(
        b.t_mid,
        b.tasks_per_s,
        color="C1",
        linewidth=1.0,
        marker=marker,
        markersize=3,
        label="tasks/s",
    )
    right.set_ylabel("tasks/s", color="C1")
    right.set_ylim(bottom=0)
    shaded = [p for p in ax.patches if str(p.get_label()).startswith("warm-up")]
    ax.legend(
        handles=[tokens, tasks, *shaded],
        loc="upper left",
        bbox_to_anchor=(1.08, 1.0),
        frameon=False,
        fontsize="small",
    )
    return fig


def _kv_figure(b: _Binned) -> Figure:
    fig, ax = new_figure()
    _replica_lines(ax, b, b.kv_usage * 100.0, "KV cache blocks in use", "% of KV blocks", "{:.0f}%")
    if len(b.t_end):
        ax.set_ylim(0, 101)  # a full cache is not hidden under the frame
    return fig


def _queue_figure(b: _Binned) -> Figure:
    fig, ax = new_figure()
    _replica_lines(
        ax, b, b.queue_depth, "Calls waiting in each replica's scheduler", "queued calls", "{:.1f}"
    )
    if len(b.t_end):
        ax.set_ylim(bottom=0)
    return fig


def _replica_lines(ax: Axes, b: _Binned, values: Floats, title: str, unit: str, fmt: str) -> None:
    """A line per replica, or for many replicas a min-max band, the median and a few
    replicas picked across the ranking by mean (busiest and idlest included)."""
    ax.set_ylabel(unit)
    replicas = len(b.replicas)
    if values.shape[0] == 0 or replicas == 0:
        ax.set_title(title, fontsize="medium", loc="left")
        no_data(ax, "samples")
        return
    marker = _marker(values.shape[0])
    _shade_warmup(ax, b)
    means = values.mean(axis=0)
    if replicas <= MAX_REPLICA_LINES:
        ax.set_title(title, fontsize="medium", loc="left")
        for i, name in enumerate(b.replicas):
            ax.plot(
                b.t_end,
                values[:, i],
                color=f"C{i}",
                linewidth=1.1,
                marker=marker,
                markersize=3,
                label=f"{name} (mean {fmt.format(means[i])})",
            )
        legend_title = None
    else:
        ax.set_title(f"{title}: {replicas} replicas", fontsize="medium", loc="left")
        ax.fill_between(
            b.t_end,
            values.min(axis=1),
            values.max(axis=1),
            color="C0",
            alpha=0.18,
            linewidth=0,
            label="min-max over replicas",
        )
        # Drawn above the individual replicas so that it stays readable among them.
        ax.plot(
            b.t_end,
            np.median(values, axis=1),
            color="black",
            linewidth=1.8,
            zorder=4,
            label="median over replicas",
        )
        order = np.argsort(-means, kind="stable")  # busiest first
        picks = np.unique(np.round(np.linspace(0, replicas - 1, MAX_REPLICA_LINES)).astype(int))
        for colour, rank in zip(_LINE_COLOURS, picks, strict=False):
            i = int(order[rank])
            ax.plot(
                b.t_end,
                values[:, i],
                color=colour,
                linewidth=0.8,
                alpha=0.8,
                label=f"{b.replicas[i]} (mean {fmt.format(means[i])})",
            )
        legend_title = f"{len(picks)} of {replicas}, busiest first"
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
        fontsize="small",
        title=legend_title,
        title_fontsize="small",
    )
