"""The report writer: all four files, JSON numbers equal to the snapshot, CSV rows per
agent, and an HTML page with its plots inline and nothing loaded from elsewhere."""

from __future__ import annotations

import argparse
import csv
import io
import re
from pathlib import Path

import orjson
import pytest

from loadtests.metrics import AgenticStats, TaskSample
from loadtests.report import run_config, summary_columns, write_reports
from orchestrator.workload.slo import SloConfig


def sample(agent: str, i: int, ok: bool = True) -> TaskSample:
    return TaskSample(
        completed_at=1000.0 + i * 0.5,
        agent=agent,
        ok=ok,
        status="OK" if ok else "UNAVAILABLE",
        llm_calls=5,
        prompt_tokens=800 + i,
        cached_tokens=300,
        output_tokens=200,
        user_input_tokens=64,
        final_output_tokens=12,
        token_amplification=10.0 + (i % 7) * (2 if agent == "react" else 1),
        task_ttft=0.5 + i * 0.01,
        task_latency=2.0 + i * 0.02,
        call_tpots=(0.01, 0.02),
    )


@pytest.fixture
def stats() -> AgenticStats:
    stats = AgenticStats()
    for i in range(40):
        stats.add(sample("plan_execute" if i % 3 else "react", i, ok=i != 5))
    return stats


def test_writes_every_file_with_the_snapshot_numbers(stats: AgenticStats, tmp_path: Path) -> None:
    snap = stats.snapshot(SloConfig(task_latency=2.5))
    paths = write_reports(
        tmp_path / "out", snap, title="run <1>", config={"users": 4, "path": tmp_path}
    )
    assert sorted(p.name for p in paths.values()) == [
        "report.html",
        "summary.csv",
        "summary.json",
        "timeseries.csv",
    ]
    assert all(p.exists() and p.stat().st_size > 0 for p in paths.values())

    document = orjson.loads(paths["json"].read_bytes())
    assert document["title"] == "run <1>" and document["config"]["users"] == 4
    for key in ("summary", "per_agent", "timeseries"):
        assert document[key] == snap[key]
    assert document["summary"]["tasks"] == 40 and document["summary"]["failed"] == 1

    rows = list(csv.DictReader(io.StringIO(paths["summary_csv"].read_text())))
    assert [r["agent"] for r in rows] == ["(all)", "plan_execute", "react"]
    assert list(rows[0]) == summary_columns()
    react = next(a for a in snap["per_agent"] if a["agent"] == "react")
    assert float(rows[2]["token_amplification_p99"]) == react["token_amplification"]["p99"]
    assert float(rows[0]["prefix_hit_rate"]) == snap["summary"]["prefix_hit_rate"]
    assert rows[0]["failures"] == "UNAVAILABLE=1" and rows[2]["failures"] == ""

    series = list(csv.DictReader(io.StringIO(paths["timeseries_csv"].read_text())))
    assert len(series) == len(snap["timeseries"]) == 20
    assert float(series[3]["tasks_per_s"]) == snap["timeseries"][3]["tasks_per_s"]


@pytest.mark.parametrize("with_samples", [True, False])
def test_html_is_self_contained_with_three_plots(
    stats: AgenticStats, tmp_path: Path, with_samples: bool
) -> None:
    snap = stats.snapshot()
    paths = write_reports(
        tmp_path,
        snap,
        title="agentic <run>",
        config={"host": "127.0.0.1:1"},
        samples=stats.samples if with_samples else None,
    )
    page = paths["html"].read_text()
    assert "<title>agentic &lt;run&gt;</title>" in page
    for key in ("throughput", "latency", "amplification"):
        assert f'id="plot-{key}"' in page
    assert page.count("<svg") == 3
    assert "plan_execute" in page and "react" in page
    # No scripts, stylesheets, images or fonts from elsewhere.
    assert not re.search(r'(src|href)="(?!#)', page)
    assert "http://" not in page.replace("http://www.w3.org/", "")
    assert "https://" not in page and "<script" not in page


def test_an_empty_run_still_writes_a_report(tmp_path: Path) -> None:
    paths = write_reports(tmp_path, AgenticStats().snapshot(), title="empty", config={})
    assert "no completed tasks" in paths["html"].read_text()
    assert paths["timeseries_csv"].read_text().count("\n") == 1  # the header only


def test_run_config_drops_secrets_and_empty_options() -> None:
    options = argparse.Namespace(
        token="s3cret", tls_ca="", num_users=4, host="h:1", max_tokens=8, auth_token="x"
    )
    assert run_config(options) == {"host": "h:1", "max_tokens": 8, "num_users": 4}


def test_latencies_are_in_ms_and_the_plots_state_their_window(
    stats: AgenticStats, tmp_path: Path
) -> None:
    snap = stats.snapshot()
    page = write_reports(tmp_path, snap, title="t", config={})["html"].read_text()
    headers = re.findall(r"<th[^>]*>([^<]*)</th>", page)
    assert "latency p50 (ms)" in headers and not [h for h in headers if "(s)" in h]
    p50_ms = round(snap["summary"]["task_latency_s"]["p50"] * 1000)
    assert f'<td class="num">{p50_ms}</td>' in page
    assert page.count("10 s rolling window") == 2  # throughput and latency
    assert '<div class="table-scroll">' in page  # a wide table scrolls in its box
