"""The load generator's OpenAI target against vLLM's own OpenAI server (CPU build, the
tiny model; tests/integration/openai_server.py): per-task token counts equal the dry
run's exactly on /v1/completions, cached tokens are read, chat mode works, the README's
`inflection load --target openai` example runs, and a stopped server's failures are
counted by cause. The last test stops the server."""

from __future__ import annotations

import locust

# isort: split
import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from locust.env import Environment

from loadtests.openai_user import OpenAIRunner, connect
from loadtests.state import state_of
from loadtests.workload import Workload
from orchestrator.executor.estimate import dry_run
from tests.integration.openai_server import OpenAIServer, openai_server

_ = (locust, openai_server)  # locust first (gevent); the fixture, by import
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _runner(
    server: OpenAIServer, api: str = "completions", priority: bool = False, **workload: object
) -> OpenAIRunner:
    env = Environment(host=server.url)
    env.parsed_options = argparse.Namespace(
        target="openai",
        api=api,
        model="",
        tokenizer="",  # the served model is a directory: its tokenizer is used
        affinity_header="",
        priority=priority,
        token="",
    )
    state_of(env).workload = Workload.model_validate(
        {"agents": {"plan_execute": 1}, "input_tokens": 32, **workload}
    )
    state_of(env).stats.keep_calls = True
    return OpenAIRunner(env, server.url)


def test_completions_token_counts_equal_the_dry_run(openai_server: OpenAIServer) -> None:
    runner = _runner(openai_server)
    target = runner.target()
    assert target.model == openai_server.model and target.max_model_len == 1024
    for agent, seed in [("plan_execute", 1), ("self_consistency", 2), ("tree_of_thoughts", 3)]:
        state = runner.rng.getstate()
        sample = runner.run_one(agent, seed=seed)
        runner.rng.setstate(state)
        spec = runner.spec(agent, seed)
        shape = dry_run(target.interpreters[agent], spec, seed)
        assert sample.status == "OK", sample
        assert (sample.llm_calls, sample.prompt_tokens, sample.output_tokens) == (
            shape.llm_calls,
            shape.prompt_tokens,
            shape.output_tokens,
        ), agent
        assert sample.user_input_tokens == shape.user_input_tokens
        assert sample.final_output_tokens == shape.final_output_tokens
        assert sample.task_ttft is not None and 0 < sample.task_ttft <= sample.task_latency
        assert all(c.ttft_s is not None and c.ttft_s > 0 for c in sample.calls if c.kind == "llm")
    # Every program repeats its system prompt: vLLM's prefix cache serves it again.
    samples = runner.stats.samples
    assert sum(s.cached_tokens for s in samples) > 0
    assert all(s.cached_tokens < s.prompt_tokens for s in samples)
    figures = runner.stats.snapshot()["summary"]
    assert figures["ok"] == 3 and figures["prefix_hit_rate"] is not None
    assert 0 < figures["prefix_hit_rate"] < 1
    runner.close()


def test_chat_mode(openai_server: OpenAIServer) -> None:
    runner = _runner(openai_server, api="chat")
    sample = runner.run_one("plan_execute", seed=5)
    assert sample.status == "OK", sample
    assert sample.llm_calls == 5
    # Counted by the server: the chat template's tokens are in its prompt counts.
    assert sample.prompt_tokens > 0 and sample.output_tokens > 0
    assert all(c.output_tokens > 0 for c in sample.calls if c.kind == "llm")
    runner.close()


def _readme_example() -> list[str]:
    """The `inflection load` command of the README's OpenAI subsection, as argv."""
    text = (REPO / "README.md").read_text()
    section = text.split("### Against any OpenAI-compatible server", 1)[1]
    block = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0]
    command = block.replace("\\\n", " ").split("inflection load", 1)[1].splitlines()[0]
    return shlex.split(command)


def test_inflection_load_against_the_server(openai_server: OpenAIServer, tmp_path: Path) -> None:
    """The README's example (`Against any OpenAI-compatible server`), verbatim but for the
    server's address, its model directory and the output folder."""
    out = tmp_path / "out"
    argv = [
        {
            "http://127.0.0.1:8000": openai_server.url,
            "/models/tiny": openai_server.model,
            "reports/openai": str(out),
        }.get(arg, arg)
        for arg in _readme_example()
    ]
    assert argv[:2] == ["--target", "openai"] and "--users" in argv
    command = [sys.executable, "-m", "loadtests.cli", "load", *argv, "--export-calls"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "160"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((out / "locust_agentic.json").read_text())["summary"]
    assert figures["ok"] > 0 and figures["failed"] == 0, figures
    assert figures["prefix_hit_rate"] and figures["prefix_hit_rate"] > 0
    assert json.loads((out / "summary.json").read_text())["config"]["target"] == "openai"
    task = json.loads((out / "tasks.jsonl").read_text().splitlines()[0])
    assert task["calls"] and task["calls"][0]["replica"] == openai_server.url
    assert "tasks measured" in done.stderr + done.stdout


def test_trace_replay(openai_server: OpenAIServer, tmp_path: Path) -> None:
    """`--trace` with `--target openai`: lines sharing hash_ids blocks hit the cache."""
    trace = tmp_path / "trace.jsonl"
    lines = [
        {"timestamp": 100 * i, "input_length": 600, "output_length": 8, "hash_ids": [i % 2, 9 + i]}
        for i in range(8)
    ]
    trace.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "agentic.json"
    command = [
        *(sys.executable, "-m", "locust", "-f", str(REPO / "loadtests" / "locustfile.py")),
        *("--headless", "-u", "1", "-t", "6s", "--stop-timeout", "0", "--only-summary"),
        *("--host", openai_server.url, "--target", "openai", "--trace", str(trace)),
        *("--trace-vocab", "500", "--agentic-json", str(out)),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())["summary"]
    assert figures["ok"] == 8 and figures["failed"] == 0, figures
    assert figures["prefix_hit_rate"] is not None and figures["prefix_hit_rate"] > 0.4


def test_priority_on_a_server_without_priority_scheduling(openai_server: OpenAIServer) -> None:
    """vLLM 0.32 started without `--scheduling-policy priority` (FCFS) takes the
    `priority` field of any value and ignores it: `--priority` against it runs as
    without, with no error to show (its protocol's "will raise an error" is not so)."""
    runner = _runner(openai_server, priority=True)
    sample = runner.run_one("plan_execute", seed=7)
    assert sample.status == "OK" and sample.llm_calls == 5, sample
    runner.close()
    for level in (3, -1):
        body = {"model": openai_server.model, "prompt": [1, 2, 3], "max_tokens": 2}
        request = urllib.request.Request(
            f"{openai_server.url}/v1/completions",
            data=json.dumps({**body, "priority": level}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            assert reply.status == 200
            assert json.loads(reply.read())["usage"]["completion_tokens"] == 2


def test_unknown_model_is_one_line(openai_server: OpenAIServer, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "loadtests.cli",
        "load",
        "--target",
        "openai",
        "--host",
        openai_server.url,
        "--model",
        "gpt-nope",
        "--run-time",
        "5s",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        f"inflection: --model 'gpt-nope' is not served; the server has: {openai_server.model}"
    ], done.stderr


def test_stopped_server_failures_are_counted_by_cause(openai_server: OpenAIServer) -> None:
    """Last: it stops the session's server."""
    runner = _runner(openai_server)
    target = runner.target()  # connected while the server ran
    assert connect(runner.options) is target
    openai_server.stop()
    for _ in range(3):
        sample = runner.run_one("plan_execute")
        assert not sample.ok and sample.status == "connection"
    figures = runner.stats.snapshot()["summary"]
    assert figures["failures"] == {"connection": 3}
    runner.close()
