"""Session-wide fixtures: one Ray cluster, one replica of vLLM's CPU build with the tiny
model, and one gRPC server, shared by every integration test (the machine has 2 cores;
starting the engine costs ~30 s)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
# Tests build the tiny model inside the checkout, so a clean clone builds its own.
os.environ.setdefault("INFLECTION_CACHE_DIR", str(REPO / "build" / "cache"))


# Suites that run Locust users in this very process: importing locust applies gevent's
# monkey patches, which turn threads into greenlets and hang this session's Ray driver
# and live server. They run in a pytest process of their own (tests/unit/loadtests/
# test_gevent_suites.py, tests/integration/test_gevent_suites.py), never here.
GEVENT_SUITES = {
    "unit": ["unit/loadtests/test_openai_http.py", "unit/loadtests/test_openai_faults.py"],
    "integration": ["integration/test_openai_target.py"],
}
GEVENT_SUITE_ENV = "INFLECTION_GEVENT_SUITE"
if not os.environ.get(GEVENT_SUITE_ENV):
    collect_ignore = [path for paths in GEVENT_SUITES.values() for path in paths]


def run_gevent_suite(kind: str, timeout_s: float) -> None:
    """Run one kind of gevent suite in its own pytest process; fail with its output."""
    import subprocess
    import sys

    paths = [str(REPO / "tests" / path) for path in GEVENT_SUITES[kind]]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *paths],
        cwd=REPO,
        env={**os.environ, GEVENT_SUITE_ENV: "1"},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]


# vLLM's OpenAI server with priority scheduling and an API key, shared by every module
# that asks for it (one start, ~30-60 s): defined once here, not imported per module,
# which would start one per module.
from tests.integration.openai_server import guarded_openai_server  # noqa: E402

_ = guarded_openai_server


@dataclass
class LiveServer:
    address: str
    model_dir: str
    loop: asyncio.AbstractEventLoop
    max_model_len: int


@pytest.fixture(scope="session")
def live_server() -> Iterator[LiveServer]:
    """A real deployment: Ray actor hosting vLLM (CPU build) behind grpc.aio on
    127.0.0.1, run on its own event loop in a background thread."""
    import ray

    from orchestrator.config import DeploymentConfig
    from orchestrator.server.app import Deployment

    config = DeploymentConfig.model_validate(
        {
            "ray": {"num_cpus": 2},
            "server": {"host": "127.0.0.1", "port": 0},
            # The real engine, explicitly: the default backend is the simulated GPU.
            "replicas": {"count": 1, "backend": "vllm", "health_period_s": 0.5},
            "limits": {"max_tokens_per_call": 1024},
        }
    )
    # Ray is started from the main thread (it installs signal handlers there); the
    # deployment then joins it.
    ray.init(
        address="local",  # never join a cluster that happens to be running
        num_cpus=2,
        include_dashboard=False,
        namespace="inflection",
        log_to_driver=False,
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="live-server", daemon=True)
    thread.start()
    try:
        deployment = asyncio.run_coroutine_threadsafe(Deployment.start(config), loop).result(
            timeout=600
        )
        try:
            yield LiveServer(
                address=deployment.address,
                model_dir=deployment.pool.model,
                loop=loop,
                max_model_len=deployment.pool.max_model_len,
            )
        finally:
            asyncio.run_coroutine_threadsafe(deployment.stop(), loop).result(timeout=120)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        ray.shutdown()
