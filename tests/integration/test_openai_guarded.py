"""The OpenAI target and `replicas.backend: openai` against a vLLM server started as a user
starts it for `--priority` and keys: `--scheduling-policy priority --api-key KEY` (CPU
build, tiny model; tests/integration/openai_server.py, `guarded_openai_server`).

- `inflection load --target openai --priority --token KEY`: tasks succeed, every call
  carries `priority` and the key (read on the wire by a recording proxy in front of the
  server);
- without `--token`, or with a wrong one: the run stops before any load with one line
  naming the 401 and what to do with `--token` (no crash, no table of failed tasks);
- `replicas.backend: openai` with `api_key_env`: tasks run on the keyed server; the env
  variable unset fails the start with one line naming it.

Runs in the main pytest process: `inflection load` is a subprocess (no locust import).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.integration.openai_server import OpenAIServer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# plan_execute alone, short inputs (the default mix's react outgrows a 1024-token model);
# workers long enough (~0.5 s and more each) that a task's synthesizer call comes after
# more than priority_quantum_s of attained service.
WORKLOAD = """\
agents: {plan_execute: 1}
input_tokens: 24
mode: synthetic
step_max_tokens: {planner: 8, worker: 200, synthesizer: 8}
"""


@dataclass
class Seen:
    """What the proxy saw: each POST's path, Authorization header and JSON body."""

    posts: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Relay(BaseHTTPRequestHandler):
    """Forwards one request to the upstream server and streams the reply back as it comes
    (HTTP/1.0, closed after: the client reads to the end)."""

    server: _Proxy

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if body is not None:
            with self.server.seen.lock:
                self.server.seen.posts.append(
                    (self.path, self.headers.get("Authorization"), json.loads(body))
                )
        skip = {"host", "connection", "content-length", "transfer-encoding"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=120)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            reply = upstream.getresponse()
            self.send_response(reply.status)
            for key, value in reply.getheaders():
                if key.lower() not in skip:
                    self.send_header(key, value)
            self.send_header("Connection", "close")
            self.end_headers()
            while chunk := reply.read1(65536):
                self.wfile.write(chunk)
                self.wfile.flush()
        finally:
            upstream.close()

    do_GET = do_POST = _relay  # noqa: N815 (http.server's names)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Relay)
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.seen = Seen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="module")
def proxy(guarded_openai_server: OpenAIServer) -> Iterator[_Proxy]:
    server = _Proxy(guarded_openai_server.url)
    thread = threading.Thread(target=server.serve_forever, name="recording-proxy", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _load(
    host: str, out: Path, *flags: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    workload = out.parent / "workload.yaml"
    workload.write_text(WORKLOAD)
    command = [
        *(sys.executable, "-m", "loadtests.cli", "load", "--target", "openai"),
        *("--host", host, "--workload", str(workload), "--out", str(out)),
        *flags,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "160"}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
    )


@pytest.fixture(scope="module")
def priority_run(
    guarded_openai_server: OpenAIServer, proxy: _Proxy, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Path, Seen]:
    """One `inflection load --priority --token KEY` run through the proxy."""
    out = tmp_path_factory.mktemp("priority-run") / "out"
    key = guarded_openai_server.api_key
    assert key
    done = _load(proxy.url, out, "--priority", "--token", key, "--users", "3", "--run-time", "8s")
    return done, out, proxy.seen


def test_priority_with_a_key_runs_on_a_priority_scheduling_server(
    guarded_openai_server: OpenAIServer, priority_run: tuple[Any, Path, Seen]
) -> None:
    done, out, seen = priority_run
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((out / "locust_agentic.json").read_text())["summary"]
    assert figures["ok"] >= 3 and figures["failed"] == 0, figures
    calls = [body for path, _, body in seen.posts if path == "/v1/completions"]
    assert len(calls) >= 5 * figures["ok"]
    # Every call carries the field vLLM's priority scheduler reads, and the key.
    assert all(isinstance(body.get("priority"), int) for body in calls), calls[:3]
    assert {auth for _, auth, _ in seen.posts} == {f"Bearer {guarded_openai_server.api_key}"}


def test_priority_levels_reach_the_server(priority_run: tuple[Any, Path, Seen]) -> None:
    """A synthesizer call after ~1 s of workers has attained more than the 0.5 s quantum:
    its level is above 0 (README "Routing, priority and admission")."""
    _, _, seen = priority_run
    levels = {body["priority"] for path, _, body in seen.posts if path == "/v1/completions"}
    assert levels - {0}, levels


@pytest.mark.parametrize(
    ("flags", "hint"),
    [
        ((), "(the server wants an API key: give it with --token)"),
        (("--token", "not-the-key"), "(check --token: the server refused this key)"),
    ],
    ids=["no-token", "wrong-token"],
)
def test_a_missing_or_wrong_key_stops_the_run_with_one_line(
    guarded_openai_server: OpenAIServer, tmp_path: Path, flags: tuple[str, ...], hint: str
) -> None:
    out = tmp_path / "out"
    done = _load(guarded_openai_server.url, out, "--run-time", "5s", *flags, timeout=60)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        f"inflection: cannot list the models of {guarded_openai_server.url} (/v1/models): "
        f"http_4xx: HTTP 401: Unauthorized {hint}"
    ], done.stderr
    assert "Traceback" not in done.stdout and not (out / "locust_agentic.json").exists()


def _deployment(server: OpenAIServer, env_name: str) -> Any:
    from orchestrator.config import DeploymentConfig
    from orchestrator.server.app import Deployment

    config = DeploymentConfig.model_validate(
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "replicas": {
                "backend": "openai",
                "openai": {"endpoints": [server.url + "/v1"], "api_key_env": env_name},
                "health_period_s": 0.5,
            },
            "limits": {"max_tokens_per_call": 256},
        }
    )
    return Deployment.start(config)


def test_replicas_backend_openai_with_the_key_from_the_environment(
    guarded_openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.client import Client, ReplicaState

    key = guarded_openai_server.api_key
    assert key
    monkeypatch.delenv("INFLECTION_TEST_VLLM_KEY", raising=False)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="keyed-deployment", daemon=True)
    thread.start()
    try:
        # The variable unset: the start fails with a line naming it.
        with pytest.raises(Exception, match="INFLECTION_TEST_VLLM_KEY"):
            asyncio.run_coroutine_threadsafe(
                _deployment(guarded_openai_server, "INFLECTION_TEST_VLLM_KEY"), loop
            ).result(timeout=60)
        monkeypatch.setenv("INFLECTION_TEST_VLLM_KEY", key)
        running = asyncio.run_coroutine_threadsafe(
            _deployment(guarded_openai_server, "INFLECTION_TEST_VLLM_KEY"), loop
        ).result(timeout=120)
        try:
            with Client(running.address, timeout=120) as client:
                status = client.cluster_status()
                assert [r.state for r in status.replicas] == [ReplicaState.READY]
                result = client.run("plan_execute", "Plan a keyed run.", max_tokens=8)
                assert result.usage.llm_calls == 5
                assert result.usage.output_tokens_total > 0
        finally:
            asyncio.run_coroutine_threadsafe(running.stop(), loop).result(timeout=60)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
