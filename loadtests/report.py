"""The files a headless agentic Locust run leaves behind, from `AgenticStats.snapshot()`:

    report.html        one self-contained page: summary and per-agent tables, throughput
                       and latency percentiles over time, amplification per agent (inline
                       SVG; nothing loads from the network)
    summary.json       title, config and the snapshot as it is (orjson)
    summary.csv        one row per agent plus an "(all)" row, distributions flattened
    timeseries.csv     the snapshot's per-second buckets

The plotting and JSON helpers are `orchestrator.sim.report`'s, so both reports look and
serialize alike; matplotlib is imported only when the HTML is written.
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
import orjson

from loadtests.metrics import PERCENTILES, TaskSample
from orchestrator.sim.report import _CSS, _figure, _json_default, _no_data, _svg

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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
    snapshot: Mapping[str, Any],
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
    option = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    return orjson.dumps(
        value, default=_lenient_default, option=option | (orjson.OPT_INDENT_2 if indent else 0)
    )


def _lenient_default(value: Any) -> Any:
    # Locust's parsed options hold a few objects (classes, file handles) with no JSON
    # form; the report keeps their text instead of failing the run's last step.
    try:
        return _json_default(value)
    except TypeError:
        return str(value)


def summary_json(snapshot: Mapping[str, Any], *, title: str, config: Mapping[str, Any]) -> bytes:
    document = {"format_version": FORMAT_VERSION, "title": title, "config": dict(config)}
    document.update(snapshot)
    return _dumps(document) + b"\n"


def summary_columns() -> list[str]:
    columns = ["agent", *_SCALARS, "failures"]  # failures: "STATUS=n;STATUS=n"
    columns += [f"{name}_{stat}" for name in _DISTS for stat in _STATS]
    return columns


def summary_rows(snapshot: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for agent, fig in [(ALL, snapshot["summary"])] + [
        (a["agent"], a) for a in snapshot["per_agent"]
    ]:
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


def summary_csv(snapshot: Mapping[str, Any]) -> str:
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


def timeseries_csv(snapshot: Mapping[str, Any]) -> str:
    return _csv(TIMESERIES_COLUMNS, snapshot["timeseries"])


# ---------------------------------------------------------------------------- HTML


def report_html(
    snapshot: Mapping[str, Any],
    *,
    title: str,
    config: Mapping[str, Any],
    samples: Sequence[TaskSample] | None = None,
) -> str:
    esc = html.escape
    plots = [
        ("throughput", "Throughput over time (per second, by completion)", _throughput(snapshot)),
        ("latency", "Task latency and TTFT percentiles over time", _latency(snapshot)),
        ("amplification", "Token amplification per agent", _amplification(snapshot, samples)),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        "<h2>Summary</h2>",
        _table(snapshot),
    ]
    for key, caption, fig in plots:
        parts.append(
            f'<figure class="plot" id="plot-{key}">{_svg(fig, key)}'
            f"<figcaption>{esc(caption)}.</figcaption></figure>"
        )
    parts += ["<h2>Configuration</h2>", f"<pre>{esc(_dumps(dict(config)).decode())}</pre>"]
    parts.append("</body></html>\n")
    return "\n".join(parts)


_TABLE_COLUMNS = (
    ("tasks", "tasks", "{:d}"),
    ("failed", "failed", "{:d}"),
    ("tasks_per_s", "tasks/s", "{:.2f}"),
    ("goodput_per_s", "goodput/s", "{:.2f}"),
    ("token_amplification.mean", "amplification mean", "{:.2f}"),
    ("token_amplification.p99", "amplification p99", "{:.2f}"),
    ("llm_calls_per_task.mean", "calls/task", "{:.2f}"),
    ("prompt_tokens_per_s", "prompt tok/s", "{:.0f}"),
    ("output_tokens_per_s", "output tok/s", "{:.0f}"),
    ("prefix_hit_rate", "prefix hit rate", "{:.1%}"),
    ("task_ttft_s.p50", "TTFT p50 (s)", "{:.3f}"),
    ("task_ttft_s.p99", "TTFT p99 (s)", "{:.3f}"),
    ("task_latency_s.p50", "latency p50 (s)", "{:.3f}"),
    ("task_latency_s.p99", "latency p99 (s)", "{:.3f}"),
    ("call_tpot_s.p99", "TPOT p99 (s)", "{:.4f}"),
)


def _cell(fig: Mapping[str, Any], key: str, fmt: str) -> str:
    value: Any = fig
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return "-" if value is None else fmt.format(value)


def _table(snapshot: Mapping[str, Any]) -> str:
    head = "".join(f'<th class="num">{html.escape(label)}</th>' for _, label, _ in _TABLE_COLUMNS)
    rows = [f'<table class="summary"><tr><th>agent</th>{head}</tr>']
    entries = [(ALL, snapshot["summary"])] + [(a["agent"], a) for a in snapshot["per_agent"]]
    for agent, fig in entries:
        cells = "".join(
            f'<td class="num">{html.escape(_cell(fig, key, fmt))}</td>'
            for key, _, fmt in _TABLE_COLUMNS
        )
        rows.append(f"<tr><td>{html.escape(agent)}</td>{cells}</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _elapsed(buckets: Sequence[Mapping[str, Any]]) -> np.ndarray[Any, np.dtype[np.float64]]:
    t = np.array([b["t"] for b in buckets], dtype=float)
    return t - t[0] if t.size else t


def _series(buckets: Sequence[Mapping[str, Any]], key: str) -> np.ndarray[Any, np.dtype[Any]]:
    return np.array([np.nan if b.get(key) is None else b[key] for b in buckets], dtype=float)


def _throughput(snapshot: Mapping[str, Any]) -> Figure:
    fig, ax = _figure()
    ax.set_xlabel("run time (s)")
    buckets = snapshot["timeseries"]
    if not buckets:
        _no_data(ax, "completed tasks")
        return fig
    t = _elapsed(buckets)
    ax.plot(t, _series(buckets, "tasks_per_s"), label="tasks/s", color="C0")
    ax.plot(t, _series(buckets, "failures_per_s"), label="failures/s", color="C3")
    ax.set_ylabel("tasks / s")
    tokens = ax.twinx()
    tokens.plot(t, _series(buckets, "output_tokens_per_s"), label="output tok/s", color="C2")
    tokens.set_ylabel("output tokens / s")
    lines = ax.get_lines() + tokens.get_lines()
    ax.legend(lines, [str(line.get_label()) for line in lines], loc="upper left", fontsize=8)
    return fig


def _latency(snapshot: Mapping[str, Any]) -> Figure:
    fig, ax = _figure()
    ax.set_xlabel("run time (s)")
    buckets = snapshot["timeseries"]
    if not buckets:
        _no_data(ax, "completed tasks")
        return fig
    t = _elapsed(buckets)
    marker = "." if len(buckets) <= 120 else ""
    for key, label, colour, style in (
        ("task_latency_p50_s", "latency p50", "C0", "-"),
        ("task_latency_p99_s", "latency p99", "C0", "--"),
        ("task_ttft_p50_s", "TTFT p50", "C1", "-"),
        ("task_ttft_p99_s", "TTFT p99", "C1", "--"),
    ):
        ax.plot(t, _series(buckets, key), style, marker=marker, color=colour, label=label)
    ax.set_ylabel("seconds")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def _amplification(snapshot: Mapping[str, Any], samples: Sequence[TaskSample] | None) -> Figure:
    fig, ax = _figure()
    agents = [a["agent"] for a in snapshot["per_agent"]]
    if samples is not None:
        values = {
            a: [s.token_amplification for s in samples if s.ok and s.agent == a] for a in agents
        }
        values = {a: v for a, v in values.items() if v}
        if not values:
            _no_data(ax, "completed tasks")
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
        _no_data(ax, "completed tasks")
        return fig
    for y, (_agent, d) in enumerate(dists):
        ax.plot([d["p50"], d["p99"]], [y, y], color="C0")
        ax.plot([d["p50"], d["p90"]], [y, y], color="C0", linewidth=6)
        ax.plot([d["mean"]], [y], "o", color="C1")
    ax.set_yticks(range(len(dists)), [a for a, _ in dists])
    ax.set_xlabel("token amplification: p50-p90 bar, whisker to p99, dot = mean")
    return fig
