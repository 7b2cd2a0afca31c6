"""The `inflection simulate` reports: the JSON record and the self-contained HTML page."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from orchestrator.domain import TaskResult, TaskUsage
from orchestrator.report import Distribution, RunSummary, summarize
from orchestrator.sim.report import MAX_POINTS, RunOutcome, span_text, write_html, write_json
from orchestrator.sim.timeline import AgentBreakdown, Percentiles, Sample, Timeline
from orchestrator.workload.slo import SloCheck

from ..factories import call_record

CHROMIUM = Path("/usr/bin/chromium")
PLOTS = ("latency", "throughput", "kv", "queue")
# A 64-replica, 2,000-sample page must stay small enough to attach to a CI run.
HTML_BOUND_BYTES = 1_500_000


def make_summary(**overrides: Any) -> RunSummary:
    fields: dict[str, Any] = {
        "tasks": 1234,
        "failed_tasks": 7,
        "duration_s": 600.0,
        "tasks_per_s": 2.0567,
        "llm_calls_per_task": 7.83,
        "output_tps": 4321.5,
        "processed_tps": 98765.4,
        "prefix_hit_rate": 0.861,
        "token_amplification": Distribution(14.2, 13.0, 20.0, 22.0, 31.5, 40.0),
        "task_ttft": Distribution(1.2345, 1.1, 2.2, 2.5, 3.7891, 4.0),
        "task_latency": Distribution(12.3456, 11.0, 20.0, 22.0, 29.8765, 31.0),
        "call_tpot": Distribution(0.031, 0.03, 0.04, 0.045, 0.0523, 0.06),
    }
    fields.update(overrides)
    return RunSummary(**fields)


def make_timeline(replicas: int, samples: int, interval: float = 0.5, seed: int = 0) -> Timeline:
    """A plausible run: load ramps up, replica 0 runs hot, some intervals finish no task."""
    rng = np.random.default_rng(seed)
    names = tuple(f"replica-{i:02d}" for i in range(replicas))
    out = []
    for k in range(samples):
        load = min(1.0, (k + 1) / (samples / 4))
        done = int(rng.poisson(3 * load))
        latency = Percentiles(5.0 + load, 8.0 + load, 12.0 + 2 * load) if done else None
        ttft = Percentiles(0.5 * load, 0.9 * load, 1.5 * load) if done else None
        kv = np.clip(rng.normal(0.6 * load, 0.1, replicas), 0.0, 1.0)
        kv[0] = 0.95 * load  # a hot spot the plots should show
        queue = rng.poisson(4 * load, replicas)
        out.append(
            Sample(
                t=(k + 1) * interval,
                interval=interval,
                tasks_completed=done,
                output_tokens=int(rng.integers(1000, 3000)),
                prompt_tokens=int(rng.integers(10_000, 30_000)),
                task_latency=latency,
                task_ttft=ttft,
                kv_usage=tuple(float(v) for v in kv),
                queue_depth=tuple(int(v) for v in queue),
                running=tuple(int(v) for v in rng.integers(0, 64, replicas)),
            )
        )
    return Timeline(replicas=names, samples=tuple(out))


def make_config(replicas: int) -> dict[str, Any]:
    return {"model": "llama-3.1-8b", "gpu": "h100", "replicas": replicas, "rate_per_s": 2.5}


def write_both(tmp_path: Path, timeline: Timeline, **kw: Any) -> tuple[Path, Path]:
    args: dict[str, Any] = {
        "title": "sim <test> & report",
        "summary": make_summary(),
        "timeline": timeline,
        "config": make_config(len(timeline.replicas)),
    }
    args.update(kw)
    json_path, html_path = tmp_path / "out" / "report.json", tmp_path / "out" / "report.html"
    write_json(json_path, **args)
    write_html(html_path, **args)
    return json_path, html_path


@pytest.mark.parametrize("replicas", [2, 64])
def test_json_holds_summary_config_and_every_sample(tmp_path: Path, replicas: int) -> None:
    timeline = make_timeline(replicas, 300)
    json_path, _ = write_both(tmp_path, timeline, extra={"planner": {"gpus": 8}})
    doc = orjson.loads(json_path.read_bytes())

    assert doc["title"] == "sim <test> & report"
    assert doc["summary"]["tasks"] == 1234
    assert doc["summary"]["output_tps"] == 4321.5
    assert doc["summary"]["task_latency"]["p99"] == 29.8765
    assert doc["config"] == make_config(replicas)
    assert doc["extra"] == {"planner": {"gpus": 8}}
    assert doc["replicas"] == list(timeline.replicas)
    assert len(doc["samples"]) == 300
    for got, want in zip(doc["samples"], timeline.samples, strict=True):
        assert got["t"] == want.t
        assert got["output_tokens"] == want.output_tokens
        assert got["kv_usage"] == list(want.kv_usage)
        assert got["queue_depth"] == list(want.queue_depth)
        assert got["running"] == list(want.running)
        if want.task_latency is None:
            assert got["task_latency"] is None
        else:
            assert got["task_latency"]["p99"] == want.task_latency.p99
    assert isinstance(doc["samples"][0]["kv_usage"][0], float)


def test_json_writes_numpy_numbers_as_plain_numbers(tmp_path: Path) -> None:
    base = make_timeline(2, 3)
    sample = base.samples[0]
    numpy_sample = Sample(
        t=np.float64(sample.t),  # type: ignore[arg-type]
        interval=sample.interval,
        tasks_completed=np.int64(2),  # type: ignore[arg-type]
        output_tokens=sample.output_tokens,
        prompt_tokens=sample.prompt_tokens,
        task_latency=None,
        task_ttft=None,
        kv_usage=(np.float32(0.5), np.float64(0.25)),  # type: ignore[arg-type]
        queue_depth=(np.int64(1), 2),  # type: ignore[arg-type]
        running=(0, 0),
    )
    timeline = Timeline(replicas=base.replicas, samples=(numpy_sample,))
    json_path = tmp_path / "r.json"
    write_json(
        json_path,
        title="t",
        summary=make_summary(),
        timeline=timeline,
        config={"path": tmp_path, "levels": np.float64(0.9)},
    )
    doc = orjson.loads(json_path.read_bytes())
    assert doc["samples"][0]["kv_usage"] == [0.5, 0.25]
    assert doc["samples"][0]["tasks_completed"] == 2
    assert doc["config"] == {"path": str(tmp_path), "levels": 0.9}


def test_json_of_an_empty_timeline_parses(tmp_path: Path) -> None:
    timeline = Timeline(replicas=("r0",), samples=())
    json_path, html_path = write_both(tmp_path, timeline, summary=make_summary(tasks=0))
    assert orjson.loads(json_path.read_bytes())["samples"] == []
    assert html_path.read_text().count("<svg") == 4


def figures(page: str) -> dict[str, str]:
    found = dict(re.findall(r'<figure class="plot" id="plot-(\w+)">(.*?)</figure>', page, re.S))
    return found


@pytest.mark.parametrize("replicas", [2, 64])
def test_html_is_self_contained_with_summary_and_four_plots(tmp_path: Path, replicas: int) -> None:
    _, html_path = write_both(tmp_path, make_timeline(replicas, 400))
    page = html_path.read_text()

    plots = figures(page)
    assert sorted(plots) == sorted(PLOTS)
    for svg in plots.values():
        assert svg.count("<svg") == 1
        assert "simulated time (s)" in svg  # x axis labelled with its unit
    assert "seconds" in plots["latency"]
    assert "output tokens/s" in plots["throughput"] and "tasks/s" in plots["throughput"]
    assert "% of KV blocks" in plots["kv"]
    assert "queued calls" in plots["queue"]

    # The summary rows of `inflection run`'s table, formatted the same way.
    for text in ("tasks completed", "1234", "2.06", "7.83", "4321.5", "98765.4", "86.1%"):
        assert text in page
    assert "12345.6" in page  # task latency mean, 12.3456 s in ms
    assert "3789.1" in page  # task TTFT p99 in ms
    assert "sim &lt;test&gt; &amp; report" in page  # the title, escaped
    assert "llama-3.1-8b" in page  # the config

    # Nothing is fetched: no external sources, no links out, no duplicate ids.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page and "@import" not in page and "<link" not in page
    ids = Counter(re.findall(r'\bid="([^"]+)"', page))
    assert [i for i, n in ids.items() if n > 1] == []
    assert html_path.stat().st_size < HTML_BOUND_BYTES


def test_many_replicas_are_drawn_as_a_band_with_eight_named_lines(tmp_path: Path) -> None:
    _, html_path = write_both(tmp_path, make_timeline(64, 200))
    kv = figures(html_path.read_text())["kv"]
    assert "min-max over replicas" in kv and "median over replicas" in kv
    named = set(re.findall(r"replica-\d\d", kv))
    assert len(named) == 8
    assert "replica-00" in named  # the hot replica is among those drawn


def test_few_replicas_are_each_drawn(tmp_path: Path) -> None:
    _, html_path = write_both(tmp_path, make_timeline(2, 50))
    queue = figures(html_path.read_text())["queue"]
    assert {"replica-00", "replica-01"} <= set(re.findall(r"replica-\d\d", queue))
    assert "min-max" not in queue


def test_long_runs_are_downsampled_and_stay_small(tmp_path: Path) -> None:
    json_path, html_path = write_both(tmp_path, make_timeline(64, 2000))
    page = html_path.read_text()
    assert html_path.stat().st_size < HTML_BOUND_BYTES
    assert "Downsampled" in page
    # No plotted line has more vertices than the bound (a path's "L" commands + its "M").
    for svg in figures(page).values():
        for d in re.findall(r'<path d="([^"]+)"', svg):
            assert d.count("L") + 1 <= 2 * MAX_POINTS + 2  # a band has two edges
    # The JSON keeps every sample at full resolution.
    assert len(orjson.loads(json_path.read_bytes())["samples"]) == 2000


def test_rates_are_per_simulated_second() -> None:
    """Output tokens/s is tokens over simulated time, downsampled or not."""
    from orchestrator.sim.report import _bin

    for samples in (100, 1501):
        base = make_timeline(2, samples, interval=0.25)
        steady = tuple(
            dataclasses.replace(s, output_tokens=1000, tasks_completed=1) for s in base.samples
        )
        binned = _bin(Timeline(replicas=base.replicas, samples=steady))
        assert len(binned.output_tps) == min(samples, MAX_POINTS)
        assert np.allclose(binned.output_tps, 4000.0)
        assert np.allclose(binned.tasks_per_s, 4.0)


def make_outcome(**overrides: Any) -> RunOutcome:
    fields: dict[str, Any] = {
        "simulated_s": 612.5,
        "warmup_s": 30.0,
        "slo_checks": (
            SloCheck("task_ttft_p90", 5.0, 2.2),
            SloCheck("task_latency_p99", 60.0, 29.8765),
        ),
        "goodput_tasks_per_s": 2.0,
        "agents": (
            AgentBreakdown("plan_execute", make_summary(tasks=800), 1.4),
            AgentBreakdown("react", make_summary(tasks=434, llm_calls_per_task=3.25), 0.6),
        ),
    }
    fields.update(overrides)
    return RunOutcome(**fields)


def test_html_opens_with_the_slo_verdict_and_goodput(tmp_path: Path) -> None:
    _, html_path = write_both(tmp_path, make_timeline(2, 50), outcome=make_outcome())
    page = html_path.read_text()
    verdict = page.index('class="verdict met"')
    assert verdict < page.index("<h2>Summary")
    line = page[verdict : page.index("</p>", verdict)]
    assert "SLO met: task TTFT p90 2,200 ms &lt;= 5,000 ms" in line
    assert "task latency p99 29,876 ms &lt;= 60,000 ms" in line
    assert "goodput 2.00 tasks/s (97.2% of measured tasks)" in line

    missed = make_outcome(slo_checks=(SloCheck("task_ttft_p90", 1.0, 2.2),))
    _, html_path = write_both(tmp_path, make_timeline(2, 50), outcome=missed)
    assert "SLO missed: task TTFT p90 2,200 ms &gt; 1,000 ms" in html_path.read_text()


def test_html_subtitle_states_the_simulated_and_measured_spans(tmp_path: Path) -> None:
    outcome = make_outcome()
    _, html_path = write_both(tmp_path, make_timeline(2, 50), outcome=outcome)
    sub = re.search(r'<p class="sub">(.*?)</p>', html_path.read_text())
    assert sub is not None
    # The words the CLI prints, from the same function.
    assert sub.group(1).startswith(span_text(outcome, make_summary()))
    assert "simulated 612.5 s, measured 600.0 s after a 30 s warm-up" in sub.group(1)


def test_html_has_a_per_agent_breakdown(tmp_path: Path) -> None:
    _, html_path = write_both(tmp_path, make_timeline(2, 50), outcome=make_outcome())
    page = html_path.read_text()
    section = page[page.index("<h2>Per agent") : page.index("<h2>Over simulated time")]
    for text in ("plan_execute", "react", "800", "434", "3.25", "1.40", "0.60", "29876.5"):
        assert f">{text}<" in section, text


@pytest.mark.parametrize("replicas", [2, 64])
def test_the_warm_up_is_shaded_on_every_plot(tmp_path: Path, replicas: int) -> None:
    _, html_path = write_both(tmp_path, make_timeline(replicas, 200), outcome=make_outcome())
    plots = figures(html_path.read_text())
    assert sorted(plots) == sorted(PLOTS)
    for key, svg in plots.items():
        assert "warm-up (not measured)" in svg, key
    _, html_path = write_both(tmp_path, make_timeline(2, 50), outcome=make_outcome(warmup_s=0))
    assert "warm-up (not measured)" not in html_path.read_text()


chromium_missing = not CHROMIUM.exists()
try:
    import playwright.sync_api  # noqa: F401
except ImportError:
    chromium_missing = True


@pytest.mark.skipif(chromium_missing, reason="needs playwright and /usr/bin/chromium")
@pytest.mark.parametrize("replicas", [2, 64])
def test_html_renders_four_plots_in_headless_chromium(tmp_path: Path, replicas: int) -> None:
    from playwright.sync_api import sync_playwright

    _, html_path = write_both(tmp_path, make_timeline(replicas, 2000))
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(html_path.as_uri())
            for key in PLOTS:
                svg = page.locator(f"#plot-{key} svg")
                box = svg.bounding_box()
                assert box is not None and box["width"] > 400 and box["height"] > 100, key
                # Lines were drawn and laid out, not just an empty frame.
                drawn = svg.evaluate(
                    "s => Array.from(s.querySelectorAll('path'))"
                    ".filter(p => { const b = p.getBBox(); return b.width > 0; }).length"
                )
                assert drawn > 5, key
        finally:
            browser.close()
    assert [u for u in requests if not u.startswith("file://")] == []


def test_token_rates_count_the_calls_of_failed_tasks_too() -> None:
    # docs/metrics.md: output and processed tokens/s and the prefix hit rate are over all
    # calls of the run; a failed task's calls consumed the GPUs as much as anyone's.
    call = call_record("c1", prompt=100, cached=50, output=20)
    done = TaskResult("t1", "a", "", _usage(prompt=100, cached=50, output=20), (call,))
    partial = _usage(prompt=300, cached=0, output=10)
    summary = summarize([done], 10.0, failed=[partial, None])
    assert summary.tasks == 1 and summary.failed_tasks == 2
    assert summary.output_tps == 3.0  # (20 + 10) / 10 s
    assert summary.processed_tps == 43.0  # (100 + 20 + 300 + 10) / 10 s
    assert summary.prefix_hit_rate == 50 / 400


def _usage(*, prompt: int, cached: int, output: int) -> TaskUsage:
    return TaskUsage(4, 8, 1, 0, 0, prompt, cached, output, 1.0, 1.0, 0.0, 1, 0.5, 1.0, 0.0)
