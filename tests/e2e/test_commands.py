"""The commands a user types: `make run` (simulated GPUs, the default), `inflection run
--backend vllm`, and the service started as a Ray job on either backend.

These run before the integration tests (pytest collects tests/e2e first), while no Ray
cluster of the test session is up: each starts and stops its own."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.client import Client, InflectionError

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env.pop("RAY_ADDRESS", None)
    # Ray 2.5x enables token authentication on clusters; the CLI must send the token.
    env["RAY_AUTH_MODE"] = "token"
    return env


def _summary_rows(out: str, tasks: int) -> None:
    for row in (
        "tasks completed",
        "LLM calls per task",
        "token amplification",
        "task TTFT (ms)",
        "task latency (ms)",
        "output tokens/s",
    ):
        assert row in out, out[-3000:]
    assert re.search(rf"tasks completed\s*│\s*{tasks}\s*│", out), out[-3000:]
    assert re.search(r"tasks failed\s*│\s*0\s*│", out), out[-3000:]


def _row(out: str, name: str) -> float:
    match = re.search(rf"{re.escape(name)}\s*│\s*([\d,.]+)", out)
    assert match, out[-3000:]
    return float(match.group(1).replace(",", ""))


def test_make_run_prints_the_summary() -> None:
    started = time.monotonic()
    proc = subprocess.run(
        ["make", "run"],
        cwd=REPO,
        env={**_env(), "MAKEFLAGS": ""},
        capture_output=True,
        text=True,
        timeout=900,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "2 simulated replica(s) of llama-3.1-8b on h100 ready" in out, out[-3000:]
    _summary_rows(out, 24)
    # Simulated H100s answer like H100s: a plan_execute task (5 calls, ~10 steps of
    # generation each) takes well under a few seconds, not the CPU engine's minutes.
    assert 0 < _row(out, "task latency (ms)") < 10_000, out[-3000:]
    # The README's sample shows this run: the rows that do not depend on timing (the
    # seeded tasks' shapes and token counts) must be exactly what it prints today.
    readme = (REPO / "README.md").read_text().split("## What `make run` shows", 1)[1]
    for row in ("tasks completed", "LLM calls per task", "token amplification"):
        printed = re.search(rf"│ {re.escape(row)} .*│", out)
        quoted = re.search(rf"│ {re.escape(row)} .*│", readme)
        assert printed and quoted, row
        assert printed.group(0) == quoted.group(0), f"README's make run table is stale: {row}"
    # The sim backend needs no model download or engine build: the whole command
    # (venv already set up by this test session) stays short.
    assert elapsed < 180, f"make run took {elapsed:.0f} s"


def test_run_on_the_vllm_backend(tmp_path: Path) -> None:
    """`--backend vllm` still runs the real engine (vLLM's CPU build, tiny model)."""
    summary = tmp_path / "summary.json"
    proc = subprocess.run(
        [str(BIN / "inflection"), "run", "--backend", "vllm", "--tasks", "4",
         "--concurrency", "4", "--json", str(summary)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 vLLM replica(s) of" in proc.stdout, proc.stdout[-3000:]
    _summary_rows(proc.stdout, 4)


@pytest.fixture
def ray_head() -> Iterator[str]:
    """A `ray start --head --block` cluster on loopback; yields the job server address.

    --block keeps the head in the foreground, so stopping this one process stops exactly
    this cluster (`ray stop` would stop every Ray on the machine)."""
    gcs, dashboard = _free_port(), _free_port()
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            "--num-cpus=2",
            "--disable-usage-stats",
            # Ray's agents default to fixed ports (52365 and others): another Ray on the
            # machine holding one leaves this head without a job agent ("No available
            # agent to submit job"), so each gets a free port of its own.
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
        ],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 180
        while _ray("job", "list", "--address", address, timeout=60).returncode != 0:
            assert head.poll() is None, "ray start --head exited"
            assert time.monotonic() < deadline, "the Ray head never came up"
            time.sleep(1)
        yield address
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait(timeout=30)


def _ray(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ray"), *args], env=_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    ("config", "engine"), [("cluster/local.yaml", "sim"), ("cluster/local-vllm.yaml", "vllm")]
)
def test_serve_as_a_ray_job(ray_head: str, config: str, engine: str) -> None:
    port = _free_port()
    command = (
        "job", "submit", "--address", ray_head, "--no-wait", "--working-dir", str(REPO),
        "--submission-id", "inflection-e2e", "--",
        "inflection", "serve", "--config", config, "--port", str(port), "--http-port", "0",
    )  # fmt: skip
    # The head answers before its job agent is up ("No available agent to submit job"),
    # so submission is retried until it is accepted or the deadline passes (on a loaded
    # 2-core machine the agent has taken over 3 minutes).
    deadline = time.monotonic() + 300
    while (submitted := _ray(*command)).returncode != 0 and time.monotonic() < deadline:
        time.sleep(3)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    try:
        deadline = time.monotonic() + 600
        with Client(f"127.0.0.1:{port}", timeout=10) as client:
            while True:
                try:
                    agents = client.list_agents()
                    break
                except InflectionError:
                    status = _ray("job", "status", "--address", ray_head, "inflection-e2e")
                    assert "FAILED" not in status.stdout, _ray(
                        "job", "logs", "--address", ray_head, "inflection-e2e"
                    ).stdout[-3000:]
                    assert time.monotonic() < deadline, "the job's server never came up"
                    time.sleep(2)
            assert "plan_execute" in {a.name for a in agents}
        with Client(f"127.0.0.1:{port}", timeout=120) as client:
            result = client.run("plan_execute", "Plan a trip to the data centre.", max_tokens=8)
        assert result.usage.llm_calls == 5
        assert result.usage.output_tokens_total == 40
        with Client(f"127.0.0.1:{port}", timeout=30) as client:
            status = client.cluster_status()
        assert {r.engine for r in status.replicas} == {engine}
        logs = _ray("job", "logs", "--address", ray_head, "inflection-e2e").stdout
        assert f"inflection: serving on 127.0.0.1:{port}" in logs
    finally:
        _ray("job", "stop", "--address", ray_head, "inflection-e2e")
