"""`inflection load` end to end: a local sim orchestrator started and stopped for the run,
the summary with token amplification, one line for an unreachable host, two Locust worker
processes whose merged agentic totals equal Locust's own task count, and a rate sweep."""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from loadtests import cli

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _load_argv() -> list[str]:
    """`inflection load` once orchestrator/cli.py registers it; the same command via
    `python -m loadtests.cli` until then."""
    from orchestrator.cli import build_parser

    parser = build_parser()
    registered = any(
        "load" in (getattr(action, "choices", None) or {}) for action in parser._actions
    )
    script = Path(sys.executable).parent / "inflection"
    if registered and script.exists():
        return [str(script), "load"]
    return [sys.executable, "-m", "loadtests.cli", "load"]


def inflection_load(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_load_argv(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "160"},
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


@pytest.fixture(scope="module")
def orchestrator() -> Iterator[str]:
    """The same local sim orchestrator `inflection load` starts without --host."""
    with (
        tempfile.TemporaryDirectory() as folder,
        cli.local_orchestrator(Path(folder), Console(file=open(os.devnull, "w"))) as address,
    ):
        yield address
    assert not _listening(address)


def test_without_host_starts_and_stops_a_local_sim_orchestrator(tmp_path: Path) -> None:
    done = inflection_load("--run-time", "10s", "--users", "4", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    match = re.search(r"local orchestrator \(sim backend\) on (\S+)", done.stdout)
    assert match, done.stdout
    assert not _listening(match.group(1))  # stopped at the end
    assert "Agentic summary" in done.stdout and "token amplification" in done.stdout
    row = next(line for line in done.stdout.splitlines() if "token amplification" in line)
    mean = float(row.split("│")[2].split("/")[0])  # the `all` column's mean
    assert mean > 5
    snap = json.loads((tmp_path / "locust_agentic.json").read_text())
    assert snap["summary"]["ok"] > 0 and snap["summary"]["failed"] == 0
    assert (tmp_path / "locust_stats.csv").is_file() and (tmp_path / "locust.html").is_file()
    report = (tmp_path / "report.html").read_text()  # the agentic report, with its plots
    assert "plan_execute" in report and "<svg" in report
    assert (tmp_path / "summary.csv").is_file() and (tmp_path / "timeseries.csv").is_file()


def test_unreachable_host_is_one_line_quickly() -> None:
    started = time.monotonic()
    done = inflection_load("--host", f"127.0.0.1:{_free_port()}", "--run-time", "30s")
    assert done.returncode != 0
    assert time.monotonic() - started < 20
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("inflection: cannot reach the orchestrator at 127.0.0.1:")
    assert "Agentic summary" not in done.stdout


def test_two_worker_processes_merge_into_the_summary(orchestrator: str, tmp_path: Path) -> None:
    mix = tmp_path / "mix.yaml"
    mix.write_text("agents: {plan_execute: 3, react: 1}\ninput_tokens: 32\n")
    out = tmp_path / "out"
    done = inflection_load(
        *("--host", orchestrator, "--processes", "2", "--users", "4", "--run-time", "6s"),
        *("--workload", str(mix), "--out", str(out), "--slo", "task_latency=30s"),
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # The locustfile ships raw samples from each worker, not per-worker totals: the merged
    # task count must equal what Locust's own stats counted for the task entries.
    with open(out / "locust_stats.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["Type"] == "task"]
    locust_tasks = sum(int(r["Request Count"]) for r in rows)
    summary = json.loads((out / "locust_agentic.json").read_text())["summary"]
    assert summary["tasks"] == locust_tasks > 10
    printed = next(line for line in done.stdout.splitlines() if "tasks ok / failed" in line)
    assert printed.split("│")[2].strip() == f"{summary['ok']} / {summary['failed']}"


def test_sweep_reports_the_highest_rate_meeting_the_slo(orchestrator: str) -> None:
    done = inflection_load(
        *("--host", orchestrator, "--sweep", "2:2:4", "--step-time", "3s"),
        *("--slo", "task_latency=30s"),
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "step: 2 tasks/s" in done.stdout and "step: 4 tasks/s" in done.stdout
    assert "highest rate meeting the SLO: 4 tasks/s" in done.stdout
