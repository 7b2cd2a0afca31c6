"""The "Agentic" tabs of the Locust web UI (per agent, the run's summary, per step), a CSV
and JSON of the live figures, and a self-contained live-charts page.

Locust 2.47's React UI is extended only through `template_args`: `extended_tabs` (a title
per tab), `extended_tables` (one table per tab: column keys and titles) and
`extended_csv_files` (links on the "Download Data" tab); the rows arrive with every stats
poll (every 2 s) as `extended_stats` in the `/stats/requests` response, which we add in an
`after_request` hook. Cells render as plain text, so the tab cannot draw charts or hold
HTML: the charts are a page of our own, `/agentic` (inline JS + SVG, no CDN), polling
`/agentic/stats.json` (the snapshot plus `rolling`: points over a trailing 10 s window,
loadtests.series, since per-second counts of a few tasks/s draw square waves). A small
script injected into the index page shows that page in an iframe under the Agentic tab's
table while the tab is selected, with a link that opens it on its own, and makes the
summary tab's "Live charts" cell a link; "Download Data" links it too.

Everything here reads `environment.agentic` (loadtests.state.AgenticState; on a master its
stats hold every worker's samples) at request time, so `install` may run before the
locustfile has created it.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from flask import Blueprint, Flask, Response, request

from loadtests.metrics import AgenticStats, CallSample, Snapshot, TaskSample
from loadtests.series import STEP_S, WINDOW_S, rolling
from loadtests.state import state_of
from orchestrator.report import PERCENTILES
from orchestrator.workload.slo import SloConfig

TAB_KEY = "agentic"
_View = Callable[[], Response]
SUMMARY_TAB_KEY = "agentic-summary"
STEPS_TAB_KEY = "agentic-steps"
_ALL_AGENTS = "All agents"
LIVE_CHARTS = "Live charts"  # the summary tab's row that links the charts page
_NONE = "-"  # shown for figures that have no samples yet (a percentile of nothing)

# The per-agent table: (row key, column title, figure path, scale, decimals). A figure path
# is a key of `Figures`, or (key, sub-key) inside one of its `Dist`s.
_Column = tuple[str, str, str | tuple[str, str], float, int]
_AGENT_COLUMNS: tuple[_Column, ...] = (
    ("tasks", "Tasks", "tasks", 1, 0),
    ("failed", "Failed", "failed", 1, 0),
    ("tasks_per_s", "Tasks/s", "tasks_per_s", 1, 2),
    ("goodput_per_s", "Goodput/s", "goodput_per_s", 1, 2),
    ("amp_mean", "Token amp. mean", ("token_amplification", "mean"), 1, 2),
    ("amp_p50", "Amp. p50", ("token_amplification", "p50"), 1, 2),
    ("amp_p90", "Amp. p90", ("token_amplification", "p90"), 1, 2),
    ("amp_p99", "Amp. p99", ("token_amplification", "p99"), 1, 2),
    ("calls_per_task", "LLM calls/task", ("llm_calls_per_task", "mean"), 1, 2),
    ("prompt_tps", "Prompt tok/s", "prompt_tokens_per_s", 1, 1),
    ("output_tps", "Output tok/s", "output_tokens_per_s", 1, 1),
    ("ttft_p50_ms", "Task TTFT p50 (ms)", ("task_ttft_s", "p50"), 1000, 0),
    ("ttft_p99_ms", "Task TTFT p99 (ms)", ("task_ttft_s", "p99"), 1000, 0),
    ("latency_p50_ms", "Latency p50 (ms)", ("task_latency_s", "p50"), 1000, 0),
    ("latency_p90_ms", "Latency p90 (ms)", ("task_latency_s", "p90"), 1000, 0),
    ("latency_p99_ms", "Latency p99 (ms)", ("task_latency_s", "p99"), 1000, 0),
    ("tpot_p50_ms", "Call TPOT p50 (ms)", ("call_tpot_s", "p50"), 1000, 1),
    ("tpot_p99_ms", "Call TPOT p99 (ms)", ("call_tpot_s", "p99"), 1000, 1),
    ("prefix_hit_pct", "Prefix hit %", "prefix_hit_rate", 100, 1),
)

# Distributions listed in the summary tab and the CSV, with the unit they are shown in.
_DISTS: tuple[tuple[str, str, float], ...] = (
    ("token_amplification", "Token amplification", 1),
    ("llm_calls_per_task", "LLM calls per task", 1),
    ("task_ttft_s", "Task TTFT (ms)", 1000),
    ("task_latency_s", "Task latency (ms)", 1000),
    ("call_tpot_s", "Call TPOT (ms)", 1000),
)


def install(
    environment: Any, slo: SloConfig | Callable[[], SloConfig | None] | None = None
) -> None:
    """Add the Agentic tabs, `/agentic`, `/agentic/stats.json` and `/agentic/csv` to the
    web UI of `environment` (call from an `init` listener when `environment.web_ui` is set).

    `slo` (or a callable returning it) sets goodput's bounds; by default the locustfile's
    `state_of(environment).slo` (--slo), read at each request. Installing twice is a no-op.
    """
    web_ui = environment.web_ui
    if web_ui is None or "agentic" in web_ui.app.blueprints:
        return
    options = environment.parsed_options
    base = (getattr(options, "web_base_path", None) or "").rstrip("/")

    def current_slo() -> SloConfig | None:
        if slo is None:
            return state_of(environment).slo
        return slo() if callable(slo) else slo

    def current_stats() -> AgenticStats:
        return state_of(environment).stats

    def snapshot() -> Snapshot:
        return current_stats().snapshot(current_slo())

    # Kept across update_template_args(), which merges its own keys over ours.
    web_ui.template_args.update(
        {
            "extended_tabs": [
                {"key": TAB_KEY, "title": "Agentic"},
                {"key": SUMMARY_TAB_KEY, "title": "Agentic summary"},
                {"key": STEPS_TAB_KEY, "title": "Agentic steps"},
            ],
            "extended_tables": [
                {"key": TAB_KEY, "structure": agent_table_structure()},
                {
                    "key": SUMMARY_TAB_KEY,
                    "structure": [
                        {"key": "metric", "title": "Metric"},
                        {"key": "value", "title": "Value"},
                    ],
                },
                {
                    "key": STEPS_TAB_KEY,
                    "structure": [{"key": k, "title": t} for k, t in STEP_COLUMNS],
                },
            ],
            "extended_csv_files": [
                {"href": "./agentic/csv", "title": "Download agentic statistics CSV"},
                {"href": "./agentic/stats.json", "title": "Agentic statistics JSON"},
                {"href": "./agentic", "title": "Agentic live charts"},
            ],
        }
    )

    blueprint = Blueprint("agentic", __name__, url_prefix=base or None)
    # Typed here: locust ships no type information.
    auth: Callable[[_View], _View] = web_ui.auth_required_if_enabled
    app: Flask = web_ui.app

    @blueprint.route("/agentic")
    @auth
    def charts_page() -> Response:
        return Response(CHARTS_HTML, mimetype="text/html")

    @blueprint.route("/agentic/stats.json")
    @auth
    def stats_json() -> Response:
        snap = snapshot()
        snap["rolling"] = rolling_json(current_stats().samples, time.time())
        return Response(json.dumps(snap), mimetype="application/json")

    @blueprint.route("/agentic/csv")
    @auth
    def stats_csv() -> Response:
        response = Response(snapshot_csv(snapshot()), mimetype="text/csv")
        name = f"agentic_stats_{int(time.time())}.csv"
        response.headers["Content-Disposition"] = f"attachment;filename={name}"
        return response

    @blueprint.route("/agentic/tab.js")
    @auth
    def tab_script() -> Response:
        return Response(TAB_JS, mimetype="application/javascript")

    app.register_blueprint(blueprint)

    @app.after_request
    def add_agentic(response: Response) -> Response:
        path = request.path
        if path == f"{base}/stats/requests" and response.is_json:
            body = response.get_json()
            if isinstance(body, dict):
                snap = snapshot()
                body["extended_stats"] = [
                    {"key": TAB_KEY, "data": agent_rows(snap)},
                    {"key": SUMMARY_TAB_KEY, "data": summary_rows(snap)},
                    {"key": STEPS_TAB_KEY, "data": step_rows(current_stats().samples)},
                ]
                response.set_data(json.dumps(body))
        elif path in (f"{base}/", base) and response.mimetype == "text/html":
            page = response.get_data(as_text=True)
            tag = '<script src="./agentic/tab.js"></script>'
            if "</body>" in page and tag not in page:
                response.set_data(page.replace("</body>", f"{tag}\n</body>", 1))
        return response


def rolling_json(samples: list[TaskSample], now: float) -> dict[str, Any]:
    """The charts' series: `window_s` and one point per second up to `now`, each over the
    trailing window (loadtests.series), so a few tasks/s draw a steady line."""
    points = [point.to_dict() for point in rolling(samples, until=now)]
    return {"window_s": WINDOW_S, "step_s": STEP_S, "points": points}


def agent_table_structure() -> list[dict[str, str]]:
    """Columns of the Agentic tab's table (Locust camelCases the keys on both sides)."""
    return [{"key": "agent", "title": "Agent"}] + [
        {"key": key, "title": title} for key, title, *_ in _AGENT_COLUMNS
    ]


def _figure(figures: Mapping[str, Any], path: str | tuple[str, str]) -> Any:
    if isinstance(path, tuple):
        dist = figures.get(path[0])
        return dist.get(path[1]) if isinstance(dist, dict) else None
    return figures.get(path)


def _shown(value: Any, scale: float = 1, decimals: int = 2) -> float | int | str:
    """A number as the table shows it; no samples (None) as a dash."""
    if value is None:
        return _NONE
    if decimals == 0:
        return round(float(value) * scale)
    return round(float(value) * scale, decimals)


def agent_rows(snap: Snapshot) -> list[dict[str, Any]]:
    """The Agentic tab: one row for all agents, then one per agent."""
    rows = []
    entries = [(_ALL_AGENTS, snap["summary"])]
    entries += [(str(entry["agent"]), entry) for entry in snap["per_agent"]]
    for name, figures in entries:
        row: dict[str, Any] = {"agent": name}
        for key, _title, path, scale, decimals in _AGENT_COLUMNS:
            row[key] = _shown(_figure(figures, path), scale, decimals)
        rows.append(row)
    return rows


def summary_rows(snap: Snapshot) -> list[dict[str, Any]]:
    """The Agentic summary tab: one metric per row, over every task of the run."""
    s: Mapping[str, Any] = snap["summary"]
    rows: list[tuple[str, Any]] = [
        ("Tasks (ok / failed)", f"{s['tasks']} ({s['ok']} / {s['failed']})"),
        ("Dropped arrivals (open loop)", s.get("dropped_tasks", 0)),
        ("Run duration (s)", _shown(s["duration_s"], 1, 1)),
        ("Tasks/s", _shown(s["tasks_per_s"])),
        ("Goodput (tasks/s meeting the SLO)", _shown(s["goodput_per_s"])),
        ("Goodput fraction of ok tasks", _shown(s.get("goodput_fraction"))),
        ("SLO", _slo_text(s.get("slo"))),
        ("Prompt tokens/s", _shown(s["prompt_tokens_per_s"], 1, 1)),
        ("Output tokens/s", _shown(s["output_tokens_per_s"], 1, 1)),
        ("Prefix hit rate (%)", _shown(s.get("prefix_hit_rate"), 100, 1)),
    ]
    for key, title, scale in _DISTS:
        dist = s.get(key) or {}
        parts = [f"mean {_shown(dist.get('mean'), scale)}"]
        parts += [f"p{p} {_shown(dist.get(f'p{p}'), scale)}" for p in PERCENTILES]
        rows.append((title, ", ".join(parts) + f" (n={dist.get('count', 0)})"))
    failures = s.get("failures") or {}
    rows.append(
        ("Failures by status", ", ".join(f"{k}: {v}" for k, v in failures.items()) or "none")
    )
    # Cells are plain text: tab.js adds the link to this one.
    rows.append((LIVE_CHARTS, "./agentic"))
    return [{"metric": metric, "value": value} for metric, value in rows]


# The Agentic steps tab: per step of each agent, from the tasks' call records. These were
# Locust "step" request entries, which inflated its RPS; they need the calls kept.
STEP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("agent", "Agent"),
    ("step", "Step"),
    ("kind", "Kind"),
    ("runs", "Runs"),
    ("elapsed_p50_ms", "Elapsed p50 (ms)"),
    ("elapsed_p99_ms", "Elapsed p99 (ms)"),
    ("queue_p50_ms", "Queue p50 (ms)"),
    ("ttft_p50_ms", "Engine TTFT p50 (ms)"),
    ("output_mean", "Output tokens mean"),
)
NO_STEPS = "per-step figures need --agentic-export-calls (inflection load --export-calls)"


def step_rows(samples: Sequence[TaskSample]) -> list[dict[str, Any]]:
    """One row per (agent, step): its runs and engine-side timings (llm: the call's e2e,
    a tool: its elapsed time), or one row saying how to get them."""
    groups: dict[tuple[str, str, str], list[CallSample]] = {}
    for sample in samples:
        for call in sample.calls:
            groups.setdefault((sample.agent, call.step, call.kind), []).append(call)
    if not groups:
        return [{key: (NO_STEPS if key == "step" else _NONE) for key, _ in STEP_COLUMNS}]

    def p(values: list[float], q: float) -> float | int | str:
        return _shown(float(np.percentile(values, q)) if values else None, 1000, 0)

    rows = []
    for (agent, step, kind), calls in sorted(groups.items()):
        queues = [c.queue_s for c in calls if c.queue_s is not None]
        ttfts = [c.ttft_s for c in calls if c.ttft_s is not None]
        elapsed = [c.elapsed_s for c in calls]
        output = sum(c.output_tokens for c in calls) / len(calls)
        rows.append(
            {
                "agent": agent,
                "step": step,
                "kind": kind,
                "runs": len(calls),
                "elapsed_p50_ms": p(elapsed, 50),
                "elapsed_p99_ms": p(elapsed, 99),
                "queue_p50_ms": p(queues, 50),
                "ttft_p50_ms": p(ttfts, 50),
                "output_mean": _shown(output, 1, 1),
            }
        )
    return rows


def _slo_text(slo: Any) -> str:
    if not isinstance(slo, dict):
        return "none (goodput = tasks/s)"
    given = [f"{k.removesuffix('_s')} <= {v * 1000:g} ms" for k, v in slo.items() if v is not None]
    return ", ".join(given) or "none (goodput = tasks/s)"


def csv_header() -> list[str]:
    """Columns of `/agentic/csv`: the `Figures` of the snapshot, distributions flattened."""
    header = ["agent", "tasks", "ok", "failed", "duration_s", "tasks_per_s", "goodput_per_s"]
    header += ["goodput_fraction", "prompt_tokens_per_s", "output_tokens_per_s"]
    header += ["prefix_hit_rate"]
    for key, _title, _scale in _DISTS:
        header += [f"{key}_{stat}" for stat in ("count", "mean", *(f"p{p}" for p in PERCENTILES))]
    header.append("failures")
    return header


def snapshot_csv(snap: Snapshot) -> str:
    """The snapshot as CSV: one row for all agents, then one per agent (SI units)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = csv_header()
    writer.writerow(header)
    entries = [(_ALL_AGENTS, snap["summary"])]
    entries += [(str(entry["agent"]), entry) for entry in snap["per_agent"]]
    for name, figures in entries:
        flat: dict[str, Any] = {"agent": name}
        for key, value in figures.items():
            if key == "failures" and isinstance(value, dict):
                flat[key] = ";".join(f"{k}={v}" for k, v in value.items())
            elif isinstance(value, dict):
                flat.update({f"{key}_{stat}": v for stat, v in value.items()})
            else:
                flat[key] = value
        writer.writerow(["" if flat.get(col) is None else flat[col] for col in header])
    return out.getvalue()


# Shows /agentic in an iframe under the Agentic tab's table while that tab is selected,
# with a link to open it on its own, and makes the summary tab's "Live charts" cell a link.
# React leaves nodes it did not create alone, and re-renders of the table keep them.
TAB_JS = r"""
(function () {
  var box = null;
  function selectedTab() {
    var tab = document.querySelector('[role="tab"][aria-selected="true"]');
    return tab ? tab.textContent.trim() : '';
  }
  function link(text) {
    var a = document.createElement('a');
    a.href = './agentic';
    a.target = '_blank';
    a.rel = 'noopener';
    a.className = 'agentic-charts-link';
    a.textContent = text;
    a.style.cssText = 'font:14px sans-serif;color:#2e7d32;text-decoration:underline';
    return a;
  }
  function linkSummaryCell() {
    document.querySelectorAll('tr').forEach(function (row) {
      var cells = row.querySelectorAll('td');
      if (cells.length === 2 && cells[0].textContent.trim() === '__LIVE_CHARTS__' &&
          !cells[1].querySelector('a')) {
        cells[1].appendChild(document.createTextNode(' '));
        cells[1].appendChild(link('open the live charts in a new window'));
      }
    });
  }
  function tick() {
    var show = selectedTab() === 'Agentic';
    // Right under the tab's table; React drops it with the tab panel, so re-make it then.
    var table = document.querySelector('.MuiTableContainer-root');
    if (box && !box.isConnected) { box = null; }
    if (show && table && !box) {
      box = document.createElement('div');
      box.id = 'agentic-charts';
      box.style.cssText = 'padding:16px 0 24px 0;';
      box.appendChild(link('Live charts: open in a new window'));
      var frame = document.createElement('iframe');
      frame.src = './agentic?embed=1';
      frame.title = 'Agentic live charts';
      frame.style.cssText = 'display:block;width:100%;height:760px;border:0;margin-top:8px';
      box.appendChild(frame);
      table.after(box);
    }
    if (box) { box.style.display = show ? 'block' : 'none'; }
    // Denser cells so the 20 columns fit a 1280 px window (they scroll in their box on a
    // narrower one); only while the tab shows, as React may reuse the box for other tabs.
    if (table) {
      if (show) { table.setAttribute('data-agentic', ''); }
      else { table.removeAttribute('data-agentic'); }
    }
    linkSummaryCell();
  }
  var style = document.createElement('style');
  style.textContent = '[data-agentic] th,[data-agentic] td{padding:6px 5px;font-size:13px}' +
    '[data-agentic] th:first-child,[data-agentic] td:first-child{padding-left:12px}';
  document.head.appendChild(style);
  setInterval(tick, 500);
  tick();
})();
""".replace("__LIVE_CHARTS__", LIVE_CHARTS)

# Self-contained (no network here or on air-gapped load machines): polls the JSON every
# 2 s and draws each series of `rolling` as an SVG path on a grid of round-number ticks.
# Latencies are shown in ms, as in the tables.
CHARTS_HTML = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Inflection: agentic live charts</title>
<style>
 body{font-family:system-ui,sans-serif;margin:16px;background:#fff;color:#222}
 body.embed{margin:0}
 h1{font-size:18px;margin:0 0 4px 0}
 #about,#status{font-size:13px;color:#555;margin-bottom:6px}
 .grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,480px),1fr));gap:16px}
 .chart{border:1px solid #ddd;border-radius:6px;padding:8px;min-width:0}
 .chart h2{font-size:14px;margin:0 0 4px 0}
 .chart h2 .window{font-weight:normal;color:#555}
 .legend span{font-size:12px;margin-right:12px;white-space:nowrap}
 svg{width:100%;height:auto;display:block}
 .axis{stroke:#888;stroke-width:1}
 .gridline{stroke:#e6e6e6;stroke-width:1}
 .tick{font-size:11px;fill:#555}
 .axis-title{font-size:12px;fill:#333}
 path.series{fill:none;stroke-width:2}
</style></head>
<body>
<h1>Agentic live charts</h1>
<div id="about">Each point covers the trailing __WINDOW_S__ s (a rolling window, one point a
second); latencies in ms.</div>
<div id="status">waiting for the first poll...</div>
<div class="grid" id="charts"></div>
<script>
"use strict";
var COLORS = ["#1976d2", "#d32f2f", "#2e7d32", "#f57c00"];
// id, title, y-axis title, scale to the shown unit, series [label, key, dashed]
var CHARTS = [
  {id: "tasks", title: "Tasks/s", y: "tasks / s", scale: 1,
   series: [["completed ok", "tasks_per_s"], ["failed", "failures_per_s"]]},
  {id: "output", title: "Output tokens/s", y: "output tokens / s", scale: 1,
   series: [["output tok/s", "output_tokens_per_s"]]},
  {id: "latency", title: "Task latency and TTFT (ms)", y: "ms", scale: 1000,
   series: [["latency p50", "task_latency_p50_s"], ["latency p99", "task_latency_p99_s", 1],
            ["TTFT p50", "task_ttft_p50_s"], ["TTFT p99", "task_ttft_p99_s", 1]]},
  {id: "amplification", title: "Token amplification (mean of ok tasks)",
   y: "tokens processed / seen", scale: 1,
   series: [["amplification", "token_amplification_mean"]]}
];
var W = 600, H = 260, L = 64, R = 14, T = 12, B = 46;
if (location.search.indexOf("embed=1") >= 0) {
  document.body.className = "embed";
  document.querySelector("h1").style.display = "none";
}
var grid = document.getElementById("charts");
CHARTS.forEach(function (c) {
  var div = document.createElement("div");
  div.className = "chart";
  div.innerHTML = "<h2>" + c.title + " <span class='window'>(__WINDOW_S__ s rolling " +
    "window)</span></h2><div class='legend' id='legend-" + c.id + "'></div>" +
    "<svg id='chart-" + c.id + "' viewBox='0 0 " + W + " " + H + "'></svg>";
  grid.appendChild(div);
});
function fmt(v) {
  if (v === null || v === undefined || !isFinite(v)) return "-";
  var a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
}
// Round-number ticks (1, 2 or 5 times a power of ten) covering [0, hi].
function ticks(hi, count) {
  var raw = (hi > 0 ? hi : 1) / count;
  var mag = Math.pow(10, Math.floor(Math.log10(raw)));
  var step = [1, 2, 5, 10].map(function (m) { return m * mag; })
    .filter(function (s) { return s >= raw; })[0];
  var top = Math.ceil((hi > 0 ? hi : 1) / step - 1e-9) * step, out = [];
  for (var i = 0; i * step <= top + step * 1e-9; i++) { out.push(i * step); }
  out.decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return out;
}
function tickText(v, values) { return v.toFixed(values.decimals); }
function text(cls, x, y, body, extra) {
  return "<text class='" + cls + "' x='" + x.toFixed(1) + "' y='" + y.toFixed(1) + "'" +
    (extra || "") + ">" + body + "</text>";
}
function draw(chart, lines) {
  var svg = document.getElementById("chart-" + chart.id);
  var xmax = 1, ymax = 0;
  lines.forEach(function (l) { l.points.forEach(function (p) {
    xmax = Math.max(xmax, p[0]);
    if (p[1] !== null && isFinite(p[1])) { ymax = Math.max(ymax, p[1]); } }); });
  var xt = ticks(xmax, 6), yt = ticks(ymax * 1.05, 4);
  var x1 = xt[xt.length - 1], y1 = yt[yt.length - 1];
  var sx = function (x) { return L + x / x1 * (W - L - R); };
  var sy = function (y) { return H - B - y / y1 * (H - B - T); };
  var html = "";
  yt.forEach(function (v) {
    html += "<line class='gridline' x1='" + L + "' x2='" + (W - R) + "' y1='" +
      sy(v).toFixed(1) + "' y2='" + sy(v).toFixed(1) + "'/>";
    html += text("tick", L - 6, sy(v) + 4, tickText(v, yt), " text-anchor='end'");
  });
  xt.forEach(function (v) {
    html += "<line class='gridline' y1='" + T + "' y2='" + (H - B) + "' x1='" +
      sx(v).toFixed(1) + "' x2='" + sx(v).toFixed(1) + "'/>";
    html += text("tick", sx(v), H - B + 15, tickText(v, xt), " text-anchor='middle'");
  });
  html += "<line class='axis' x1='" + L + "' y1='" + (H - B) + "' x2='" + (W - R) +
    "' y2='" + (H - B) + "'/><line class='axis' x1='" + L + "' y1='" + T + "' x2='" + L +
    "' y2='" + (H - B) + "'/>";
  html += text("axis-title", (L + W - R) / 2, H - 8, "run time (s)", " text-anchor='middle'");
  html += text("axis-title", 14, (T + H - B) / 2, chart.y,
    " text-anchor='middle' transform='rotate(-90 14 " + ((T + H - B) / 2).toFixed(1) + ")'");
  var legend = "", drawn = false;
  lines.forEach(function (l, i) {
    var d = "", pen = "M", colour = COLORS[i % COLORS.length];
    l.points.forEach(function (p) {
      if (p[1] === null || !isFinite(p[1])) { pen = "M"; return; }
      d += pen + sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1) + " ";
      pen = "L";
    });
    if (d) {
      drawn = true;
      html += "<path class='series' data-series='" + l.label + "' stroke='" + colour + "'" +
        (l.dashed ? " stroke-dasharray='6 4'" : "") + " d='" + d.trim() + "'/>";
    }
    var last = l.points.length ? l.points[l.points.length - 1][1] : null;
    legend += "<span style='color:" + colour + "'>" + (l.dashed ? "&#8211; &#8211;" :
      "&#9632;") + " " + l.label + " " + fmt(last) + "</span>";
  });
  if (!drawn) { html += text("tick", W / 2, H / 2, "no tasks yet", " text-anchor='middle'"); }
  svg.innerHTML = html;
  document.getElementById("legend-" + chart.id).innerHTML = legend;
}
function render(snap) {
  var points = (snap.rolling && snap.rolling.points) || [];
  CHARTS.forEach(function (c) {
    draw(c, c.series.map(function (s) {
      return {label: s[0], dashed: !!s[2], points: points.map(function (p) {
        var v = p[s[1]];
        return [p.elapsed_s, v === null || v === undefined ? null : v * c.scale];
      })};
    }));
  });
  var s = snap.summary || {}, amp = s.token_amplification;
  document.getElementById("status").textContent = "updated " +
    new Date().toLocaleTimeString() + "; whole run: tasks " + (s.tasks || 0) + ", failed " +
    (s.failed || 0) + ", tasks/s " + fmt(s.tasks_per_s) + ", token amplification " +
    fmt(amp && amp.mean);
}
function poll() {
  fetch("./agentic/stats.json", {cache: "no-store"})
    .then(function (r) { return r.json(); })
    .then(render)
    .catch(function (e) {
      document.getElementById("status").textContent = "poll failed: " + e;
    });
}
poll();
setInterval(poll, 2000);
</script>
</body></html>
""".replace("__WINDOW_S__", f"{WINDOW_S:g}")
