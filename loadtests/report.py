"""The files a headless agentic Locust run leaves behind, from `AgenticStats.snapshot()`:

    report.html        one self-contained page: summary and per-agent tables (latencies
                       in ms), throughput and latency percentiles over time over a rolling
                       window (loadtests.series), amplification per agent (inline SVG;
                       nothing loads from the network)
    summary.json       title, config and the snapshot as it is (orjson)
    summary.csv        one row per agent plus an "(all)" row, distributions flattened
    timeseries.csv     the snapshot's per-second buckets

The page style, plotting and JSON helpers are `orchestrator.reporting`'s (as the
simulator's report's are), so both reports look and serialize alike; matplotlib is
imported only when the HTML is written.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from loadtests.metrics import Snapshot, TaskSample
from loadtests.series import STEP_S, WINDOW_S, RollingPoint, from_buckets, rolling
from orchestrator.report import PERCENTILES
from orchestrator.reporting import CSS, dumps, new_figure, no_data, svg

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from loadtests.sweep_curve import SweepPoint

FORMAT_VERSION = 1  # of summary.json
ALL = "(all)"  # the summary row's agent name in summary.csv
_DISTS = (
    "token_amplification",
    "llm_calls_per_task",
    "task_ttft_s",
    "task_latency_s",
    "call_tpot_s",
)
_SCALARS = (
    "tasks",
    "ok",
    "failed",
    "dropped_tasks",
    "duration_s",
    "tasks_per_s",
    "goodput_per_s",
    "goodput_fraction",
    "prompt_tokens_per_s",
    "output_tokens_per_s",
    "prefix_hit_rate",
)
_STATS = ("count", "mean", *(f"p{p}" for p in PERCENTILES))


def write_reports(
    out_dir: str | PathLike[str],
    snapshot: Snapshot,
    *,
    title: str,
    config: Mapping[str, Any],
    samples: Sequence[TaskSample] | None = None,
) -> dict[str, Path]:
    """Write the four files into `out_dir` (created); returns them by kind. `samples`
    (AgenticStats.samples) draws amplification histograms; without them the per-agent
    plot shows the snapshot's percentiles."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "html": out / "report.html",
        "json": out / "summary.json",
        "summary_csv": out / "summary.csv",
        "timeseries_csv": out / "timeseries.csv",
    }
    paths["json"].write_bytes(summary_json(snapshot, title=title, config=config))
    paths["summary_csv"].write_text(summary_csv(snapshot))
    paths["timeseries_csv"].write_text(timeseries_csv(snapshot))
    paths["html"].write_text(report_html(snapshot, title=title, config=config, samples=samples))
    return paths


_SECRET_KEYS = ("token", "password", "secret", "api_key")


def run_config(options: Any) -> dict[str, Any]:
    """Locust's parsed options as report config, without secrets (`--token`) or empty
    values; pass the result as `config=`."""
    items = vars(options) if options is not None else {}
    return {
        key: value
        for key, value in sorted(items.items())
        if value not in (None, "", [], {})
        and not any(key == s or key.endswith(f"_{s}") for s in _SECRET_KEYS)
    }


def _dumps(value: Any, *, indent: bool = True) -> bytes:
    # Locust's parsed options hold a few objects (classes, file handles) with no JSON
    # form; the report keeps their text instead of failing the run's last step.
    return dumps(value, indent=indent, lenient=True)


def summary_json(snapshot: Snapshot, *, title: str, config: Mapping[str, Any]) -> bytes:
    document = {"format_version": FORMAT_VERSION, "title": title, "config": dict(config)}
    document.update(snapshot)
    return _dumps(document) + b"\n"


def summary_columns() -> list[str]:
    columns = ["agent", *_SCALARS, "failures"]  # failures: "STATUS=n;STATUS=n"
    columns += [f"{name}_{stat}" for name in _DISTS for stat in _STATS]
    return columns


def summary_rows(snapshot: Snapshot) -> list[dict[str, Any]]:
    rows = []
    entries: list[tuple[str, Mapping[str, Any]]] = [(ALL, snapshot["summary"])]
    entries += [(a["agent"], a) for a in snapshot["per_agent"]]
    for agent, fig in entries:
        row: dict[str, Any] = {"agent": agent}
        row.update({k: fig.get(k) for k in _SCALARS})
        failures = fig.get("failures") or {}
        row["failures"] = ";".join(f"{status}={n}" for status, n in failures.items())
        for name in _DISTS:
            dist = fig.get(name) or {}
            row.update({f"{name}_{stat}": dist.get(stat) for stat in _STATS})
        rows.append(row)
    return rows


def _csv(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return buffer.getvalue()


def summary_csv(snapshot: Snapshot) -> str:
    return _csv(summary_columns(), summary_rows(snapshot))


TIMESERIES_COLUMNS = (
    "t",
    "tasks_per_s",
    "failures_per_s",
    "output_tokens_per_s",
    "task_latency_p50_s",
    "task_latency_p99_s",
    "task_ttft_p50_s",
    "task_ttft_p99_s",
)


def timeseries_csv(snapshot: Snapshot) -> str:
    return _csv(TIMESERIES_COLUMNS, snapshot["timeseries"])


# ---------------------------------------------------------------------------- HTML


def report_html(
    snapshot: Snapshot,
    *,
    title: str,
    config: Mapping[str, Any],
    samples: Sequence[TaskSample] | None = None,
) -> str:
    esc = html.escape
    # Exact from the raw samples; from the 1 s buckets when only the snapshot is at hand.
    points = rolling(samples) if samples else from_buckets(snapshot["timeseries"])
    window = f"{WINDOW_S:g} s rolling window, a point every {STEP_S:g} s"
    plots = [
        ("throughput", f"Throughput over time ({window}, by completion)", _throughput(points)),
        ("latency", f"Task latency and TTFT percentiles over time ({window})", _latency(points)),
        ("amplification", "Token amplification per agent", _amplification(snapshot, samples)),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}\n{_WIDE_TABLES}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        "<h2>Summary</h2>",
        _table(snapshot),
    ]
    for key, caption, fig in plots:
        parts.append(
            f'<figure class="plot" id="plot-{key}">{svg(fig, key)}'
            f"<figcaption>{esc(caption)}.</figcaption></figure>"
        )
    parts += ["<h2>Configuration</h2>", f"<pre>{esc(_dumps(dict(config)).decode())}</pre>"]
    parts.append("</body></html>\n")
    return "\n".join(parts)


# (figure path, header, format, scale): latencies shown in ms, as in the web UI.
_TABLE_COLUMNS: tuple[tuple[str, str, str, float], ...] = (
    ("tasks", "tasks", "{:d}", 1),
    ("failed", "failed", "{:d}", 1),
    ("tasks_per_s", "tasks/s", "{:.2f}", 1),
    ("goodput_per_s", "goodput/s", "{:.2f}", 1),
    ("token_amplification.mean", "amp. mean", "{:.2f}", 1),
    ("token_amplification.p99", "amp. p99", "{:.2f}", 1),
    ("llm_calls_per_task.mean", "calls/task", "{:.2f}", 1),
    ("prompt_tokens_per_s", "prompt tok/s", "{:.0f}", 1),
    ("output_tokens_per_s", "output tok/s", "{:.0f}", 1),
    ("prefix_hit_rate", "prefix hits", "{:.1%}", 1),
    ("task_ttft_s.p50", "TTFT p50 (ms)", "{:.0f}", 1000),
    ("task_ttft_s.p99", "TTFT p99 (ms)", "{:.0f}", 1000),
    ("task_latency_s.p50", "latency p50 (ms)", "{:.0f}", 1000),
    ("task_latency_s.p99", "latency p99 (ms)", "{:.0f}", 1000),
    ("call_tpot_s.p99", "TPOT p99 (ms)", "{:.1f}", 1000),
)

# The summary table has 16 columns: the page is a little wider than simulate.html's so it
# fits a 1280 px window, and on a narrower one it scrolls inside its box (headers wrap
# first), so the page itself never scrolls sideways.
_WIDE_TABLES = """
body{max-width:1200px}
.table-scroll{overflow-x:auto;max-width:100%}
table.summary{font-size:.85rem}
table.summary th,table.summary td{padding:.25rem .45rem}
table.summary th{white-space:normal;vertical-align:bottom}
""".strip()


def _cell(fig: Mapping[str, Any], key: str, fmt: str, scale: float) -> str:
    value: Any = fig
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return "-"
    return fmt.format(value * scale if scale != 1 else value)


def _table(snapshot: Snapshot) -> str:
    head = "".join(f'<th class="num">{html.escape(label)}</th>' for _, label, *_ in _TABLE_COLUMNS)
    rows = [f'<div class="table-scroll"><table class="summary"><tr><th>agent</th>{head}</tr>']
    entries = [(ALL, snapshot["summary"])] + [(a["agent"], a) for a in snapshot["per_agent"]]
    for agent, fig in entries:
        cells = "".join(
            f'<td class="num">{html.escape(_cell(fig, key, fmt, scale))}</td>'
            for key, _, fmt, scale in _TABLE_COLUMNS
        )
        rows.append(f"<tr><td>{html.escape(agent)}</td>{cells}</tr>")
    rows.append("</table></div>")
    return "\n".join(rows)


# Under the plot, so a line near the top is never hidden behind it.
_LEGEND_BELOW: dict[str, Any] = {
    "loc": "upper center",
    "bbox_to_anchor": (0.5, -0.2),
    "ncol": 4,
    "fontsize": 8,
    "frameon": False,
}


def _values(points: Sequence[RollingPoint], key: str, scale: float = 1.0) -> list[float]:
    """One figure of every point; NaN (a gap in the line) where it has none."""
    values = [getattr(p, key) for p in points]
    return [np.nan if v is None else float(v) * scale for v in values]


def _throughput(points: Sequence[RollingPoint]) -> Figure:
    fig, ax = new_figure()
    ax.set_xlabel("run time (s)")
    if not points:
        no_data(ax, "completed tasks")
        return fig
    t = [p.elapsed_s for p in points]
    ax.plot(t, _values(points, "tasks_per_s"), label="tasks/s (ok)", color="C0")
    ax.plot(t, _values(points, "failures_per_s"), label="failures/s", color="C3")
    ax.set_ylabel("tasks / s")
    ax.set_ylim(bottom=0)
    tokens = ax.twinx()
    tokens.plot(t, _values(points, "output_tokens_per_s"), label="output tok/s", color="C2")
    tokens.set_ylabel("output tokens / s")
    tokens.set_ylim(bottom=0)
    lines = ax.get_lines() + tokens.get_lines()
    ax.legend(lines, [str(line.get_label()) for line in lines], **_LEGEND_BELOW)
    return fig


def _latency(points: Sequence[RollingPoint]) -> Figure:
    fig, ax = new_figure()
    ax.set_xlabel("run time (s)")
    if not points:
        no_data(ax, "completed tasks")
        return fig
    t = [p.elapsed_s for p in points]
    for key, label, colour, style in (
        ("task_latency_p50_s", "latency p50", "C0", "-"),
        ("task_latency_p99_s", "latency p99", "C0", "--"),
        ("task_ttft_p50_s", "TTFT p50", "C1", "-"),
        ("task_ttft_p99_s", "TTFT p99", "C1", "--"),
    ):
        ax.plot(t, _values(points, key, 1000), style, color=colour, label=label)
    ax.set_ylabel("ms")
    ax.set_ylim(bottom=0)
    ax.legend(**_LEGEND_BELOW)
    return fig


def _amplification(snapshot: Snapshot, samples: Sequence[TaskSample] | None) -> Figure:
    fig, ax = new_figure()
    agents = [a["agent"] for a in snapshot["per_agent"]]
    if samples is not None:
        values = {
            a: [s.token_amplification for s in samples if s.ok and s.agent == a] for a in agents
        }
        values = {a: v for a, v in values.items() if v}
        if not values:
            no_data(ax, "completed tasks")
            return fig
        upper = max(max(v) for v in values.values())
        lower = min(min(v) for v in values.values())
        bins = np.linspace(lower, upper if upper > lower else lower + 1, 40).tolist()
        for i, (agent, v) in enumerate(values.items()):
            ax.hist(v, bins=bins, alpha=0.55, color=f"C{i % 10}", label=f"{agent} (n={len(v)})")
        ax.set_xlabel("token amplification (tokens processed / tokens the user saw)")
        ax.set_ylabel("tasks")
        ax.legend(loc="upper right", fontsize=8)
        return fig
    # Percentiles only: one row per agent, p50 box from p50 to p90, whiskers to p99.
    dists = [(a["agent"], a["token_amplification"]) for a in snapshot["per_agent"]]
    dists = [(a, d) for a, d in dists if d.get("count")]
    if not dists:
        no_data(ax, "completed tasks")
        return fig
    for y, (_agent, d) in enumerate(dists):
        # count > 0: every statistic is a number
        p50, p90, p99, mean = (float(d[k] or 0.0) for k in ("p50", "p90", "p99", "mean"))
        ax.plot([p50, p99], [y, y], color="C0")
        ax.plot([p50, p90], [y, y], color="C0", linewidth=6)
        ax.plot([mean], [y], "o", color="C1")
    ax.set_yticks(range(len(dists)), [a for a, _ in dists])
    ax.set_xlabel("token amplification: p50-p90 bar, whisker to p99, dot = mean")
    return fig


# ---------------------------------------------------------------------------- sweep curve
# `inflection load --sweep`: the offered-vs-achieved curve and latency percentiles per step.


def sweep_section(points: Sequence[SweepPoint], *, slo: str) -> str:
    """The HTML of the sweep curve: the plot, the verdict and a table of the steps."""
    from loadtests.sweep_curve import verdict

    esc = html.escape
    head = (
        "offered tasks/s",
        "achieved tasks/s",
        "tasks",
        "within SLO",
        "TTFT p50 (ms)",
        "TTFT p99 (ms)",
        "latency p50 (ms)",
        "latency p99 (ms)",
        "verdict",
    )

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.0f}"

    rows = [
        '<div style="overflow-x:auto"><table class="summary"><tr>'
        + "".join(f'<th class="num">{esc(h)}</th>' for h in head)
        + "</tr>"
    ]
    for p in points:
        cells = (
            f"{p.offered_per_s:g}",
            f"{p.achieved_per_s:.2f}",
            str(p.tasks),
            f"{p.good_fraction:.1%}",
            ms(p.task_ttft_p50_s),
            ms(p.task_ttft_p99_s),
            ms(p.task_latency_p50_s),
            ms(p.task_latency_p99_s),
            "met" if p.met else "broke",
        )
        rows.append("<tr>" + "".join(f'<td class="num">{esc(c)}</td>' for c in cells) + "</tr>")
    rows.append("</table></div>")
    caption = (
        "Rate sweep: achieved against offered task rate (left) and task latency and TTFT "
        "percentiles per step (right); hollow markers are steps that broke the SLO"
    )
    return "\n".join(
        [
            '<section id="sweep"><h2>Rate sweep</h2>',
            f"<p>SLO: <code>{esc(slo)}</code>. Result: {esc(verdict(points).line(slo))}.</p>",
            f'<figure class="plot" id="plot-sweep">{svg(_sweep_figure(points), "sweep")}'
            f"<figcaption>{esc(caption)}.</figcaption></figure>",
            *rows,
            "</section>",
        ]
    )


def _sweep_figure(points: Sequence[SweepPoint]) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    rate, latency = fig.subplots(1, 2)
    offered = np.array([p.offered_per_s for p in points], dtype=float)
    achieved = np.array([p.achieved_per_s for p in points], dtype=float)
    met = np.array([p.met for p in points], dtype=bool)
    top = float(max(offered.max(initial=0.0), achieved.max(initial=0.0), 1e-9)) * 1.1
    for ax in (rate, latency):
        ax.grid(True, color="#e5e5e5", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.set_xlabel("offered rate (tasks/s)")
    rate.plot([0, top], [0, top], ":", color="#8c959f", label="achieved = offered")
    rate.plot(offered, achieved, "-", color="C0")
    rate.plot(offered[met], achieved[met], "o", color="C0", label="met the SLO")
    rate.plot(offered[~met], achieved[~met], "o", mfc="none", color="C3", label="broke the SLO")
    rate.set_ylabel("achieved rate (ok tasks/s)")
    rate.set_title("Throughput")
    rate.legend(loc="upper left", fontsize=8)
    for key, label, colour, style in (
        ("task_latency_p50_s", "latency p50", "C0", "-"),
        ("task_latency_p99_s", "latency p99", "C0", "--"),
        ("task_ttft_p50_s", "TTFT p50", "C1", "-"),
        ("task_ttft_p99_s", "TTFT p99", "C1", "--"),
    ):
        values = np.array(
            [np.nan if getattr(p, key) is None else getattr(p, key) * 1000 for p in points]
        )
        latency.plot(offered, values, style, marker="o", color=colour, label=label)
    latency.set_ylabel("ms")
    latency.set_ylim(bottom=0)
    latency.set_title("Task latency and TTFT")
    latency.legend(loc="upper left", fontsize=8)
    return fig


def add_sweep_section(report: Path, points: Sequence[SweepPoint], *, slo: str) -> None:
    """Insert the sweep section into an existing report.html, before its end."""
    text = report.read_text()
    end = text.rfind("</body>")
    section = sweep_section(points, slo=slo)
    report.write_text(text[:end] + section + "\n" + text[end:] if end >= 0 else text + section)


def write_sweep_report(
    out_dir: str | PathLike[str],
    points: Sequence[SweepPoint],
    *,
    slo: str,
    config: Mapping[str, Any],
    title: str = "inflection load --sweep",
) -> Path:
    """report.html of a sweep run as separate Locust runs: the sweep section alone."""
    esc = html.escape
    path = Path(out_dir) / "report.html"
    path.write_text(
        "\n".join(
            [
                "<!DOCTYPE html>",
                '<html lang="en"><head><meta charset="utf-8">',
                '<meta name="viewport" content="width=device-width, initial-scale=1">',
                f"<title>{esc(title)}</title><style>{CSS}\n{_WIDE_TABLES}</style></head><body>",
                f"<h1>{esc(title)}</h1>",
                sweep_section(points, slo=slo),
                "<h2>Configuration</h2>",
                f"<pre>{esc(_dumps(dict(config)).decode())}</pre>",
                "</body></html>\n",
            ]
        )
    )
    return path
