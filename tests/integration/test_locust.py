"""Real Locust, headless, against a real orchestrator on instant simulated replicas: the
standard stats show tasks by agent, the agentic JSON holds amplification as the server
predicts it, distributed workers' samples all reach the master, server errors count as
failures by status name, and bad input ends the run before load with one clear line."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
LOCUST = str(VENV_BIN / "locust")
LOCUSTFILE = str(REPO / "loadtests" / "locustfile.py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serve(tmp: Path, sim: str, server: str = "") -> Iterator[str]:
    """`inflection serve` in a subprocess on 127.0.0.1; yields its address, stops it with
    SIGINT (never `ray stop`: the Ray instance is the server's own, address local)."""
    port = _free_port()
    config = tmp / "serve.yaml"
    config.write_text(
        f"replicas: {{count: 1, num_cpus: 0.5, backend: sim, sim: {{{sim}}}}}\n"
        "ray: {address: local, num_cpus: 2}\n"
        f"server: {{host: 127.0.0.1, port: {port}{server}}}\n"
    )
    proc = subprocess.Popen(
        [str(VENV_BIN / "inflection"), "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    try:
        address = _wait_for_serving(proc, time.monotonic() + 60)
        assert address, "the orchestrator did not print `inflection: serving on`"
        yield address
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


TOKEN = "test-token"


@pytest.fixture(scope="module")
def orchestrator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Simulated replicas at 1/20 of real time (a plan_execute task takes ~70 ms; one call
    of 4096 tokens ~1.5 s), bearer auth. One server for every test: starting one costs
    10-20 s on this machine."""
    with serve(
        tmp_path_factory.mktemp("orchestrator"), "time_scale: 0.05", f", auth_token: {TOKEN}"
    ) as address:
        yield address


def _wait_for_serving(proc: subprocess.Popen[str], deadline: float) -> str | None:
    """The address from the serving line; the rest of stdout is drained in a thread so
    the server never blocks on a full pipe."""
    found: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("inflection: serving on") and not found:
                found.append(line.split()[-1])
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(max(0.0, deadline - time.monotonic()))
    return found[0] if found else None


def run_locust(
    *args: str, timeout: float = 60, token: str | None = TOKEN
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    auth = ["--token", token] if token else []
    return subprocess.run(
        [LOCUST, "-f", LOCUSTFILE, "--headless", "--only-summary", *auth, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )


def write_mix(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mix.yaml"
    path.write_text(text)
    return str(path)


def stats_rows(prefix: Path) -> list[dict[str, str]]:
    with open(f"{prefix}_stats.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_distributed_run_reports_tasks_and_agentic_figures(
    orchestrator: str, tmp_path: Path
) -> None:
    mix = write_mix(tmp_path, "agents: {plan_execute: 3, react: 1}\ninput_tokens: 32\n")
    prefix = tmp_path / "run"
    done = run_locust(
        *("--processes", "2", "-u", "4", "-r", "4", "-t", "5s", "--host", orchestrator),
        *("--workload", mix, "--csv", str(prefix), "--slo", "task_latency=30s"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr

    rows = {(r["Type"], r["Name"]): r for r in stats_rows(prefix)}
    for agent in ("plan_execute", "react"):
        assert int(rows["task", agent]["Request Count"]) > 0
        assert int(rows["task", agent]["Failure Count"]) == 0
    # Locust's own views count tasks only (TTFT and steps are agentic figures): its
    # "Aggregated" row, and so its header RPS, is the task count and rate.
    assert {kind for kind, _ in rows} == {"task", ""}, sorted(rows)

    snap = json.loads(Path(f"{prefix}_agentic.json").read_text())
    summary = snap["summary"]
    # Both workers' samples reached the master: the same total Locust's own stats count.
    assert summary["tasks"] == int(rows["", "Aggregated"]["Request Count"]) > 20
    # ... and they are the sum of what each worker process saw: two workers, each with
    # tasks of its own, each counted once (its own running total equals what it shipped).
    workers = snap["workers"]
    assert len(workers) == 2
    assert all(w["recorded"] == w["merged"] > 0 for w in workers.values())
    assert sum(w["recorded"] for w in workers.values()) == summary["tasks"]
    assert summary["failed"] == 0 and summary["goodput_per_s"] == summary["tasks_per_s"]
    per_agent = {a["agent"]: a for a in snap["per_agent"]}
    # Synthetic mode is deterministic: plan_execute amplifies a 32-token input ~11.6x (the
    # server's ListAgents estimate, 11.56), five calls per task.
    assert per_agent["plan_execute"]["token_amplification"]["mean"] == pytest.approx(11.6, 0.05)
    assert per_agent["plan_execute"]["llm_calls_per_task"]["p50"] == 5
    assert per_agent["react"]["token_amplification"]["mean"] > 5
    assert summary["task_ttft_s"]["count"] == summary["ok"]
    assert summary["call_tpot_s"]["p99"] > 0
    assert 0 < summary["prefix_hit_rate"] < 1
    assert snap["timeseries"] and snap["timeseries"][-1]["t"] >= snap["timeseries"][0]["t"]


def test_open_loop_and_server_errors_by_status(orchestrator: str, tmp_path: Path) -> None:
    # A 1 ms budget: every task ends DEADLINE_EXCEEDED on the server.
    mix = write_mix(tmp_path, "agents: {plan_execute: 1}\ndeadline_s: 0.001\n")
    prefix = tmp_path / "late"
    done = run_locust(
        *("-u", "1", "-r", "1", "-t", "3s", "--host", orchestrator, "--workload", mix),
        *("--arrival-rate", "10", "--csv", str(prefix)),
    )
    assert done.returncode == 1, done.stderr[-3000:]  # Locust's exit code when requests failed
    assert "Traceback" not in done.stderr
    snap = json.loads(Path(f"{prefix}_agentic.json").read_text())
    assert snap["summary"]["ok"] == 0
    assert snap["summary"]["failures"]["DEADLINE_EXCEEDED"] == snap["summary"]["tasks"] >= 10
    with open(f"{prefix}_failures.csv", newline="") as f:
        failures = list(csv.DictReader(f))
    # Task ids are stripped, so every deadline failure groups under one row.
    assert len(failures) == 1 and failures[0]["Error"].startswith("TaskFailed('DEADLINE_EXCEEDED")


def test_sweep_reports_the_highest_rate_meeting_the_slo(orchestrator: str, tmp_path: Path) -> None:
    prefix = tmp_path / "sweep"
    started = time.monotonic()
    done = run_locust(
        *("-u", "1", "-t", "60s", "--host", orchestrator, "--csv", str(prefix)),
        *("--sweep", "start=10,factor=2,step_s=3,warmup_s=0.5,max_rate=20,min_good=0.9"),
        *("--slo", "task_latency=20s"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.monotonic() - started < 30  # ends when the sweep does, not at -t
    sweep = json.loads(Path(f"{prefix}_agentic.json").read_text())["sweep"]
    assert [step["rate"] for step in sweep["steps"]] == [10, 20]
    assert all(step["tasks"] > 5 and step["good_fraction"] >= 0.9 for step in sweep["steps"]), sweep
    assert sweep["highest_rate_meeting_slo"] == 20
    assert "sweep: highest rate meeting the SLO: 20.0 tasks/s" in done.stderr


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("bad_host", "inflection: cannot reach the orchestrator at 127.0.0.1:"),
        ("unknown_agent", "inflection: unknown agent in the workload: nope; "),
        ("bad_mix", "mix.yaml: agents.react: Input should be greater than 0"),
        ("tls_mismatch", "(--tls given: does the server serve TLS?)"),
    ],
)
def test_bad_input_ends_before_load_with_one_line(
    orchestrator: str, tmp_path: Path, case: str, expected: str
) -> None:
    host = orchestrator
    mix = write_mix(tmp_path, "agents: {plan_execute: 1, nope: 1}\n")
    if case == "bad_host":
        host = f"127.0.0.1:{_free_port()}"
    elif case == "bad_mix":
        mix = write_mix(tmp_path, "agents: {react: 0}\n")
    extra = ["--tls"] if case == "tls_mismatch" else []
    if case == "tls_mismatch":
        mix = write_mix(tmp_path, "agents: {plan_execute: 1}\n")
    started = time.monotonic()
    done = run_locust("-u", "2", "-r", "2", "-t", "30s", "--host", host, "--workload", mix, *extra)
    assert done.returncode == 1
    assert time.monotonic() - started < 15
    errors = [line for line in done.stderr.splitlines() if line.startswith("inflection: ")]
    assert len(errors) == 1 and expected in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Greenlet" not in done.stderr
    assert "Shutting down" not in done.stderr  # no run started


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("", "UNAUTHENTICATED: missing authorization metadata"),
        ("wrong", "UNAUTHENTICATED: invalid bearer token"),
    ],
)
def test_auth_mismatch_ends_before_load(orchestrator: str, token: str, expected: str) -> None:
    done = run_locust("-u", "1", "-t", "30s", "--host", orchestrator, token=token, timeout=30)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("inflection: ")]
    assert len(errors) == 1 and expected in errors[0] and "(check --token)" in errors[0]
    assert "Traceback" not in done.stderr


CANCEL_SCRIPT = """
import locust  # gevent patches first
import sys, time, types
import gevent
from locust.env import Environment
from loadtests.state import state_of
from loadtests.user import TaskRunner
from loadtests.workload import Workload
from orchestrator.client import Client

host, token = sys.argv[1], sys.argv[2]
env = Environment()
env.parsed_options = types.SimpleNamespace(token=token)
# One 4096-token planner call: ~1.5 s at the server's time scale.
state_of(env).workload = Workload(agents={"plan_execute": 1}, step_max_tokens={"planner": 4096})
runner = TaskRunner(env, host)
client = Client(host, token=token)

def busy():
    return sum(r.in_flight_calls + r.unfinished_requests for r in client.cluster_status().replicas)

task = gevent.spawn(runner.run_one)
deadline = time.monotonic() + 5
while not busy() and time.monotonic() < deadline:
    gevent.sleep(0.02)
print("busy", busy(), flush=True)
task.kill()  # what Locust does to a user's greenlet when the run stops
deadline = time.monotonic() + 0.5  # well before the task would have finished
while busy() and time.monotonic() < deadline:
    gevent.sleep(0.02)
print("after", busy(), len(env.agentic.stats.samples), flush=True)
runner.close()
"""


def test_killing_a_user_greenlet_cancels_its_task(orchestrator: str) -> None:
    # In one live process (the channel stays open), so only the stream's cancel can end
    # the server-side task before it would complete on its own (~1.5 s).
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", CANCEL_SCRIPT, orchestrator, TOKEN],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    busy, after = done.stdout.splitlines()[-2:]
    assert busy != "busy 0"
    assert after == "after 0 0"  # nothing in flight, and a killed task records no sample
    assert time.monotonic() - started < 20
