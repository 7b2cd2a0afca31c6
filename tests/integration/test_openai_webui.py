"""The Locust web UI with the OpenAI target, in a real headless Chromium, while a bounded
load runs against vLLM's own OpenAI server (CPU build, tiny model, started with
`--scheduling-policy priority --api-key KEY`: the session's `guarded_openai_server`, so
no extra server start). A user would notice: the Agentic tab fills in and moves (tasks,
5 LLM calls per plan_execute task, token amplification, vLLM's prefix cache hits), no task
fails, the steps tab lists the program's steps, and the summary tab shows the failures
line. Locust runs as a subprocess (no locust import here). Screenshot:
build/test-artifacts/agentic-tab-openai.png.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.openai_server import OpenAIServer
from tests.integration.test_locust_webui import (
    ARTIFACTS,
    BROWSER_ARGS,
    CHROMIUM,
    LOCUSTFILE,
    VIEWPORT,
    _free_port,
    _number,
    _row,
    assert_no_horizontal_overflow,
    playwright_api,
    web_ui,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),  # the session's vLLM server may start here (~30-60 s)
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium"),
]

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = """\
agents: {plan_execute: 1}
input_tokens: 24
think_time_s: {min: 0.2, max: 0.5}
mode: synthetic
step_max_tokens: {planner: 8, worker: 24, synthesizer: 8}
"""


@pytest.fixture
def locust_ui(guarded_openai_server: OpenAIServer, tmp_path: Path) -> Iterator[str]:
    """Locust's web UI on 127.0.0.1 running 3 users of the OpenAI target against the
    server (with its key), for at most 60 s; yields the UI's URL."""
    key = guarded_openai_server.api_key
    assert key
    workload = tmp_path / "workload.yaml"
    workload.write_text(WORKLOAD)
    web_port = _free_port()
    log = tmp_path / "locust.log"
    command = [
        *(sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)),
        *("--web-host", "127.0.0.1", "--web-port", str(web_port)),
        *("--host", guarded_openai_server.url, "--target", "openai", "--token", key),
        *("--workload", str(workload), "-u", "3", "-r", "3"),
        *("--autostart", "--run-time", "60s", "--autoquit", "1", "--agentic-export-calls"),
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            start_new_session=True,
        )
    yield from web_ui(proc, web_port, log)


def test_agentic_tabs_show_the_openai_targets_figures(locust_ui: str) -> None:
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=BROWSER_ARGS
        )
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(30_000)
            page.goto(locust_ui)
            page.get_by_role("tab", name="Agentic", exact=True).click()
            page.get_by_role("cell", name="All agents", exact=True).wait_for()

            deadline = time.monotonic() + 45
            first = _row(page, "All agents")
            while _number(first["Tasks"]) < 2 and time.monotonic() < deadline:
                page.wait_for_timeout(1000)
                first = _row(page, "All agents")
            assert _number(first["Tasks"]) >= 2, f"no task completed: {first}"
            assert _number(first["Failed"]) == 0, first
            assert _number(first["LLM calls/task"]) == 5, first  # plan_execute's 5 calls
            assert _number(first["Token amp. mean"]) > 1, first
            assert _number(first["Tasks/s"]) > 0 and _number(first["Output tok/s"]) > 0, first
            # vLLM's prefix cache serves each program's repeated system prompt again.
            assert 0 < _number(first["Prefix hit %"]) < 100, first
            assert _number(first["Call TPOT p50 (ms)"]) > 0, first
            page.wait_for_timeout(4000)
            second = _row(page, "All agents")
            assert _number(second["Tasks"]) > _number(first["Tasks"]), (first, second)
            assert _number(second["Failed"]) == 0, second
            charts = page.frame_locator("#agentic-charts iframe")
            charts.locator("#chart-tasks path.series").first.wait_for(state="attached")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "agentic-tab-openai.png"), full_page=True)
            assert_no_horizontal_overflow(page)

            # The steps of the program, from the calls the users made themselves.
            page.get_by_role("tab", name="Agentic steps", exact=True).click()
            page.locator("table tbody tr", has_text="synthesizer").first.wait_for()
            worker = _row(page, "worker")
            assert worker["Agent"] == "plan_execute" and _number(worker["Runs"]) >= 2, worker
            assert _number(worker["Elapsed p50 (ms)"]) > 0, worker
            assert _number(worker["Engine TTFT p50 (ms)"]) > 0, worker  # client-side TTFT

            page.get_by_role("tab", name="Agentic summary", exact=True).click()
            page.get_by_role("cell", name="Token amplification", exact=True).wait_for()
            failures = page.locator("tr", has_text="Failures by status").inner_text()
            assert failures.split()[-1] == "none", failures
        finally:
            browser.close()
