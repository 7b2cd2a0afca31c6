"""Real headless Locust replays the shipped sample trace with `TraceUser` against a real
orchestrator on instant simulated replicas: every call succeeds, the lines' shared
hash_ids show up as prefix-cache hits, and the reports are written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from loadtests.workload import sample_trace_path
from orchestrator.workload.traces import load_mooncake_trace
from tests.integration.test_locust import run_locust, serve

pytestmark = pytest.mark.slow

LOCUSTFILE = str(Path(__file__).resolve().parents[2] / "loadtests" / "locustfile.py")


@pytest.fixture(scope="module")
def orchestrator(tmp_path_factory: pytest.TempPathFactory) -> object:
    with serve(tmp_path_factory.mktemp("trace"), "time_scale: 0.0") as address:
        yield address


def test_sample_trace_replays_with_prefix_hits(orchestrator: str, tmp_path: Path) -> None:
    requests = load_mooncake_trace(sample_trace_path())
    prefix = tmp_path / "run"
    done = run_locust(
        *("-f", LOCUSTFILE, "-u", "2", "-r", "2", "-t", "25s"),
        *("--host", orchestrator, "--trace", str(sample_trace_path())),
        *("--trace-speedup", "10", "--csv", str(prefix)),
        *("--agentic-report", str(tmp_path / "run_report")),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    generate = rows["generate", "trace"]
    # The whole trace, once: 60 s at 10x is 6 s; the 25 s run leaves room on a busy machine.
    assert int(generate["Request Count"]) == len(requests)
    assert int(generate["Failure Count"]) == 0
    # One Locust request per call: the TTFT is an agentic figure, not a second request.
    assert int(rows["", "Aggregated"]["Request Count"]) == len(requests)
    assert sorted(rows) == [("", "Aggregated"), ("generate", "trace")]

    snap = json.loads(Path(f"{prefix}_agentic.json").read_text())
    summary = snap["summary"]
    assert summary["ok"] == len(requests) and summary["failed"] == 0
    assert summary["task_ttft_s"]["count"] == len(requests)
    assert summary["prompt_tokens_per_s"] * summary["duration_s"] == pytest.approx(
        sum(r.input_length for r in requests)
    )
    assert summary["prefix_hit_rate"] > 0.2  # sessions re-send their history
    report = tmp_path / "run_report"
    assert (report / "report.html").exists()
    written = json.loads((report / "summary.json").read_text())
    assert written["summary"]["prefix_hit_rate"] == summary["prefix_hit_rate"]
    assert written["config"]["trace_speedup"] == 10


def test_malformed_trace_ends_before_load(orchestrator: str, tmp_path: Path) -> None:
    trace = tmp_path / "bad.jsonl"
    good = sample_trace_path().read_text().splitlines()[:3]
    trace.write_text("\n".join([good[0], "{not json", good[1], '{"timestamp": 1}']) + "\n")
    done = run_locust(
        *("-f", LOCUSTFILE, "-u", "1", "-t", "30s", "--host", orchestrator),
        *("--trace", str(trace)),
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("inflection: ")]
    assert len(errors) == 1, done.stderr[-2000:]
    assert f"{trace}: 2 malformed lines: line 2: not JSON" in errors[0]
    assert "line 4: missing input_length, output_length, hash_ids" in errors[0]
    assert "Traceback" not in done.stderr
