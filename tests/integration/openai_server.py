"""A session fixture: vLLM's own OpenAI-compatible server (CPU build, the tiny model) as a
subprocess on 127.0.0.1, for the load generator's OpenAI target.

    python -m vllm.entrypoints.openai.api_server --model DIR --host 127.0.0.1 --port P \\
        --max-model-len 1024 --enforce-eager --dtype bfloat16 --enable-prefix-caching \\
        --enable-prompt-tokens-details

(~30 s to start here). Use it from a test module with
`from tests.integration.openai_server import openai_server  # noqa: F401`. It is stopped
by its process group at the end of the session, or earlier by a test (`stop()`).

`guarded_openai_server` is a second one, started as a user would for `--priority` and
keys: `--scheduling-policy priority --api-key KEY` (every /v1 request needs
`Authorization: Bearer KEY`; /health and /metrics do not).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 240.0
API_KEY = "inflection-test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class OpenAIServer:
    url: str  # http://127.0.0.1:PORT
    model: str  # the served model's name: the model directory
    process: subprocess.Popen[bytes]
    log: Path
    api_key: str | None = None

    def stop(self) -> None:
        """Stop the server (its process group) and wait for it."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def start_server(log: Path, *extra: str, api_key: str | None = None) -> Iterator[OpenAIServer]:
    """Start the server with `extra` arguments, wait for /health, yield it, stop it."""
    from orchestrator.replicas.tiny_model import build_tiny_model, default_tiny_model_dir

    model = build_tiny_model(default_tiny_model_dir())
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        "1024",
        "--enforce-eager",
        "--dtype",
        "bfloat16",
        "--enable-prefix-caching",
        "--enable-prompt-tokens-details",
        *extra,
        *(("--api-key", api_key) if api_key else ()),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    server = OpenAIServer(f"http://127.0.0.1:{port}", str(model), process, log, api_key)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(server.url):
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                pytest.fail(f"the vLLM OpenAI server exited ({process.returncode}):\n{tail}")
            if time.monotonic() > deadline:
                pytest.fail(f"the vLLM OpenAI server did not start in {START_TIMEOUT_S:.0f} s")
            time.sleep(0.5)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def openai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAIServer]:
    yield from start_server(tmp_path_factory.mktemp("openai-server") / "server.log")


@pytest.fixture(scope="session")
def guarded_openai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAIServer]:
    """Priority scheduling and an API key, as a user starts vLLM for `--priority`."""
    log = tmp_path_factory.mktemp("guarded-openai-server") / "server.log"
    yield from start_server(log, "--scheduling-policy", "priority", api_key=API_KEY)
