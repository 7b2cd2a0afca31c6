"""`inflection load` end to end: the README's example (a relative --out, from another
folder) with a local sim orchestrator started and stopped for the run, live progress, the
summary with token amplification, the warm-up and tasks.jsonl; one line for an unreachable
host; two Locust worker processes whose merged agentic totals equal Locust's own task count
(calls exported from the workers); Ctrl-C; and a rate sweep with its curve."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from loadtests import local_server, locust_run
from tests.polling import wait_until

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


ENV = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "160"}


def inflection_load(
    *args: str, timeout: float = 90, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_load_argv(), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=ENV
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
        local_server.local_orchestrator(
            Path(folder), Console(file=open(os.devnull, "w"))
        ) as address,
    ):
        yield address
    assert not _listening(address)


def test_the_readme_example_with_a_relative_out_starts_and_stops_a_local_orchestrator(
    tmp_path: Path,
) -> None:
    # README: `inflection load --run-time 20s --users 8 --out reports/load`, from a folder
    # that is not the repository (shorter, with a warm-up, to keep the test quick).
    done = inflection_load(
        *("--run-time", "12s", "--users", "8", "--out", "reports/load", "--warmup", "3s"),
        cwd=tmp_path,
        timeout=150,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    tmp_path = tmp_path / "reports" / "load"
    match = re.search(r"local orchestrator \(sim backend\) on (\S+)", done.stdout)
    assert match, done.stdout
    assert not _listening(match.group(1))  # stopped at the end
    assert "Agentic summary" in done.stdout and "token amplification" in done.stdout
    row = next(line for line in done.stdout.splitlines() if "token amplification" in line)
    mean = float(row.split("│")[2].split("/")[0])  # the `all` column's mean
    assert mean > 5
    snap = json.loads((tmp_path / "locust_agentic.json").read_text())
    assert snap["summary"]["ok"] > 0 and snap["summary"]["failed"] == 0
    # Live progress on stderr (a line every 10 s off a terminal), with the live figures.
    progress = [line for line in done.stderr.splitlines() if " users, " in line]
    assert progress and "tasks/s" in progress[0] and "amplification" in progress[0], done.stderr
    # The final count is the summary's, and the warm-up is stated and left out.
    summary, warmup = snap["summary"], snap["warmup"]
    assert f"{summary['tasks']} tasks measured ({summary['ok']} ok, 0 failed)" in done.stdout
    assert f"warm-up: {warmup['excluded_tasks']} tasks that started in the first 3s" in (
        done.stdout
    )
    tasks = [json.loads(line) for line in (tmp_path / "tasks.jsonl").read_text().splitlines()]
    assert len(tasks) == summary["tasks"] + warmup["excluded_tasks"]
    assert sum(t["warmup"] for t in tasks) == warmup["excluded_tasks"] > 0
    assert all(t["status"] == "OK" and t["usage"]["llm_calls"] > 0 for t in tasks)
    assert not (tmp_path / "locust_live.json").exists()
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
        "--export-calls",
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
    # --export-calls reached the worker processes: every task line has its calls.
    tasks = [json.loads(line) for line in (out / "tasks.jsonl").read_text().splitlines()]
    assert len(tasks) == summary["tasks"]
    for task in tasks:
        llm = [c for c in task["calls"] if c["kind"] == "llm"]
        assert len(llm) == task["usage"]["llm_calls"] and llm[0]["replica"]
        assert sum(c["output_tokens"] for c in llm) == task["usage"]["output_tokens"]


def _live_tasks(path: Path) -> int:
    """Tasks finished so far, as the run's live progress file says (0 before it exists)."""
    live = locust_run.read_live(path)
    return live.figures.tasks if live is not None else 0


def test_ctrl_c_prints_and_writes_the_partial_summary(orchestrator: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*_load_argv(), "--host", orchestrator, "--run-time", "60s", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=ENV,
        start_new_session=True,  # its own group, as a shell job: Ctrl-C goes to the group
    )
    try:
        # Interrupt once the first tasks have finished (the live file counts them).
        wait_until(lambda: _live_tasks(out / "locust_live.json") > 0, timeout=60, interval=0.2)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stdout[-2000:] + stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines == ["inflection: interrupted: the figures above are of the tasks finished so far"]
    assert "Agentic summary" in stdout
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert summary["tasks"] > 0
    assert f"{summary['tasks']} tasks measured" in stdout


def test_sweep_that_never_broke_says_so_and_writes_its_curve(
    orchestrator: str, tmp_path: Path
) -> None:
    done = inflection_load(
        *("--host", orchestrator, "--sweep", "2:2:4", "--step-time", "3s"),
        *("--slo", "task_latency=30s", "--out", str(tmp_path)),
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "step: 2 tasks/s" in done.stdout and "step: 4 tasks/s" in done.stdout
    assert re.search(r"offered 4 tasks/s, achieved [0-9.]+: .* latency p50/p99", done.stdout)
    assert "SLO never broke up to 4 tasks/s" in done.stdout
    assert "highest rate meeting the SLO" not in done.stdout
    curve = json.loads((tmp_path / "sweep.json").read_text())
    assert curve["outcome"] == "never_broke"
    assert [p["offered_per_s"] for p in curve["points"]] == [2, 4]
    assert all(p["achieved_per_s"] > 0 for p in curve["points"])
    assert len((tmp_path / "sweep.csv").read_text().splitlines()) == 3
    assert 'id="plot-sweep"' in (tmp_path / "report.html").read_text()
