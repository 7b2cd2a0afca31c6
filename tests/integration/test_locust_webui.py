"""The Agentic tab of the Locust web UI in a real headless Chromium, during a real run:
an orchestrator on the sim backend, Locust with the web UI driving it, Playwright (for
Python) driving the system Chromium. A user would notice: the tab shows token
amplification and tasks/s, the figures move while the run goes on, the CSV downloads with
one row per agent, and the live charts draw, readable in a 1280 px window: axis titles,
the rolling window stated, tables that scroll inside their box instead of widening the page,
and a link that opens the charts on their own. `report.html` is checked the same way.

Screenshots are kept in build/test-artifacts/ (agentic-tab.png, agentic-charts.png,
agentic-report.png) for a person to judge.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
VENV_BIN = Path(sys.executable).parent
LOCUSTFILE = REPO / "loadtests" / "locustfile.py"
ARTIFACTS = REPO / "build" / "test-artifacts"
CHARTS = ("tasks", "output", "latency", "amplification")  # the ids of /agentic's charts
VIEWPORT = {"width": 1280, "height": 900}  # a common laptop window
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs /usr/bin/chromium (apt-get install -y chromium); Playwright's own "
        "browser download is not used",
    ),
]

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="needs playwright for Python (pip install '.[dev]')"
)

# The real locustfile plus the web-UI extension, for as long as the locustfile does not
# install it itself (installing twice is a no-op, so this stays correct afterwards).
_WRAPPED_LOCUSTFILE = """
from loadtests.locustfile import *  # noqa: F403 (the user classes Locust looks for)
from locust import events
from loadtests import webui

events.init.add_listener(lambda environment, **_: webui.install(environment))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def web_ui(proc: subprocess.Popen[Any], web_port: int, log: Path) -> Iterator[str]:
    """Wait (30 s at most) for the web UI of the Locust process `proc`, yield its URL,
    and stop Locust after; fail with the end of its log if it exits or never listens."""
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"locust exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", web_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail(f"locust's web UI did not come up:\n{log.read_text()[-3000:]}")
        yield f"http://127.0.0.1:{web_port}"
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    """SIGTERM to the process group, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


@pytest.fixture
def orchestrator(tmp_path: Path) -> Iterator[str]:
    """`inflection serve` on one sim replica; yields its host:port."""
    port = _free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            replicas: {{count: 1, num_cpus: 0.5, backend: sim}}
            ray: {{address: local, num_cpus: 2}}
            server: {{port: {port}}}
            """
        )
    )
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "inflection"), "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
            cwd=tmp_path,
            start_new_session=True,
        )
    try:
        address = _wait_for_serving(proc, deadline=time.monotonic() + 90)
        if address is None:
            _stop(proc)
            pytest.fail(f"inflection serve did not start; its log:\n{log.read_text()[-3000:]}")
        yield address
    finally:
        _stop(proc)


def _wait_for_serving(proc: subprocess.Popen[str], deadline: float) -> str | None:
    """The address from the `inflection: serving on` line; stdout is drained afterwards so
    the server never blocks on a full pipe."""
    found: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("inflection: serving on") and not found:
                found.append(line.split()[-1])
                ready.set()
        ready.set()  # the process ended

    threading.Thread(target=read, daemon=True).start()
    ready.wait(timeout=max(0.0, deadline - time.monotonic()))
    return found[0] if found else None


@pytest.fixture
def locust_ui(tmp_path: Path, orchestrator: str) -> Iterator[str]:
    """Locust with its web UI on 127.0.0.1 running 4 users against the orchestrator;
    yields the UI's URL."""
    if "webui.install" in LOCUSTFILE.read_text():
        locustfile = LOCUSTFILE
    else:
        locustfile = tmp_path / "agentic_locustfile.py"
        locustfile.write_text(_WRAPPED_LOCUSTFILE)
    web_port = _free_port()
    log = tmp_path / "locust.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                str(VENV_BIN / "locust"),
                "-f",
                str(locustfile),
                "--web-host",
                "127.0.0.1",
                "--web-port",
                str(web_port),
                "--host",
                orchestrator,
                "-u",
                "4",
                "-r",
                "4",
                "--autostart",
                "--run-time",
                "90s",
                "--autoquit",
                "1",
                "--agentic-export-calls",  # the call records behind the Agentic steps tab
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
    yield from web_ui(proc, web_port, log)


def _row(page: Any, agent: str) -> dict[str, str]:
    """One row of the Agentic tab's table, as {column title: cell text}."""
    titles = [t.strip() for t in page.locator("table thead th").all_inner_texts()]
    cells = page.locator("table tbody tr", has_text=agent).first.locator("td")
    return dict(zip(titles, [c.strip() for c in cells.all_inner_texts()], strict=True))


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def test_agentic_tab_live_figures_csv_and_charts(locust_ui: str, tmp_path: Path) -> None:
    from loadtests.webui import csv_header

    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=BROWSER_ARGS
        )
        try:
            page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
            page.set_default_timeout(30_000)
            page.goto(locust_ui)
            page.get_by_role("tab", name="Agentic", exact=True).click()
            page.get_by_role("cell", name="All agents", exact=True).wait_for()

            # Figures appear: wait for completed tasks, then read them twice, 4 s apart.
            deadline = time.monotonic() + 45
            first = _row(page, "All agents")
            while _number(first["Tasks"]) < 1 and time.monotonic() < deadline:
                page.wait_for_timeout(1000)
                first = _row(page, "All agents")
            assert _number(first["Tasks"]) >= 1, f"no task completed: {first}"
            assert _number(first["Token amp. mean"]) > 1, first
            assert _number(first["Tasks/s"]) > 0, first
            page.wait_for_timeout(4000)
            second = _row(page, "All agents")
            assert _number(second["Tasks"]) > _number(first["Tasks"]), (first, second)
            agents = page.locator("table tbody tr").count() - 1
            assert agents >= 1, "no per-agent row"
            # Locust's header RPS is the task rate (it read 6x that when TTFT and steps were
            # fired as requests); both are rates over a few seconds, so only roughly equal.
            rps = _number(
                page.locator("header").get_by_text("RPS").locator("..").inner_text().split()[-1]
            )
            assert 0 < rps <= 2 * _number(second["Tasks/s"]) + 1, (rps, second["Tasks/s"])

            # The live charts under the tab draw a line per series.
            charts = page.frame_locator("#agentic-charts iframe")
            for chart in CHARTS:
                # "attached": a flat line (the sim's amplification) has no height to be seen.
                charts.locator(f"#chart-{chart} path.series").first.wait_for(state="attached")
            page.wait_for_timeout(2500)  # one more chart poll for the screenshot
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "agentic-tab.png"), full_page=True)
            # The wide per-agent table scrolls in its box; the page itself does not widen.
            assert_no_horizontal_overflow(page)
            assert_readable_charts(charts)
            opener = page.locator("#agentic-charts a", has_text="Live charts")
            assert opener.get_attribute("href") == "./agentic"

            # The summary tab lists the run's figures, and links the live charts.
            page.get_by_role("tab", name="Agentic summary", exact=True).click()
            page.get_by_role("cell", name="Token amplification", exact=True).wait_for()
            page.get_by_role("cell", name="Failures by status", exact=True).wait_for()
            live = page.locator("tr", has_text="Live charts").locator("a")
            live.wait_for()
            assert live.get_attribute("href") == "./agentic"
            assert_no_horizontal_overflow(page)

            # The per-step figures (no longer Locust requests) are in the Agentic steps tab.
            page.get_by_role("tab", name="Agentic steps", exact=True).click()
            worker = page.locator("table tbody tr", has_text="worker").first
            worker.wait_for()
            steps = _row(page, "worker")
            assert steps["Agent"] == "plan_execute" and _number(steps["Runs"]) >= 3, steps
            assert _number(steps["Elapsed p50 (ms)"]) > 0, steps
            assert_no_horizontal_overflow(page)

            # The CSV downloads from the Download Data tab.
            page.get_by_role("tab", name="Download Data").click()
            with page.expect_download() as download_info:
                page.get_by_text("Download agentic statistics CSV").click()
            saved = tmp_path / "agentic.csv"
            download_info.value.save_as(saved)
            rows = list(csv.reader(io.StringIO(saved.read_text())))
            assert rows[0] == csv_header()
            assert rows[1][0] == "All agents"
            assert len(rows) >= 1 + 1 + agents
            by_column = dict(zip(rows[0], rows[1], strict=True))
            assert int(by_column["tasks"]) >= _number(second["Tasks"])
            assert float(by_column["token_amplification_mean"]) > 1

            # The charts page on its own: every chart has a drawn path.
            charts_page = browser.new_page(viewport=VIEWPORT)
            charts_page.goto(f"{locust_ui}/agentic")
            for chart in CHARTS:
                path = charts_page.locator(f"#chart-{chart} path.series").first
                path.wait_for(state="attached")
                drawn = path.get_attribute("d") or ""
                assert drawn.startswith("M") and " L" in drawn, (chart, drawn)
            assert_readable_charts(charts_page)
            assert "trailing 10 s" in charts_page.locator("#about").inner_text()
            assert_no_horizontal_overflow(charts_page)
            charts_page.screenshot(path=str(ARTIFACTS / "agentic-charts.png"), full_page=True)
        finally:
            browser.close()


def assert_readable_charts(charts: Any) -> None:
    """Every chart states its window and has titled axes with round-number gridlines."""
    for chart in CHARTS:
        title = charts.locator(f"#chart-{chart}").locator("xpath=..").locator("h2").inner_text()
        assert "10 s rolling window" in title, title
        axis_titles = charts.locator(f"#chart-{chart} text.axis-title").all_text_contents()
        assert len(axis_titles) == 2 and axis_titles[0] == "run time (s)", (chart, axis_titles)
        assert axis_titles[1], chart
        assert charts.locator(f"#chart-{chart} line.gridline").count() >= 4, chart
    latency = charts.locator("#chart-latency text.axis-title").all_text_contents()
    assert latency[1] == "ms", latency


def assert_no_horizontal_overflow(page: Any) -> None:
    """Nothing, tables included, reaches past the window's right edge: a wide table
    scrolls inside its own box."""
    overflow = page.evaluate(
        """() => {
          const width = document.documentElement.clientWidth;
          const out = [];
          if (document.documentElement.scrollWidth > width) {
            out.push('page ' + document.documentElement.scrollWidth + ' > ' + width);
          }
          for (const table of document.querySelectorAll('table')) {
            const box = table.parentElement.getBoundingClientRect();
            if (box.right > width + 1) { out.push('table box right ' + box.right); }
          }
          return out;
        }"""
    )
    assert overflow == [], overflow


def test_report_html_fits_a_1280_px_window(tmp_path: Path) -> None:
    """report.html of a 3-agent run: its summary table fits or scrolls in its box, all
    latencies in ms, and the plots state the rolling window."""
    from loadtests.metrics import AgenticStats, TaskSample
    from loadtests.report import write_reports

    stats = AgenticStats()
    for i in range(180):
        stats.add(
            TaskSample(
                completed_at=1_000_000.0 + 2.0 * (i // 6),  # 6 every 2 s: 3 tasks/s
                agent=("plan_execute", "react", "multi_agent_debate")[i % 3],
                ok=i % 17 != 0,
                status="OK" if i % 17 else "UNAVAILABLE",
                llm_calls=5,
                prompt_tokens=1200,
                cached_tokens=400,
                output_tokens=250,
                user_input_tokens=64,
                final_output_tokens=20,
                token_amplification=12.5,
                task_ttft=0.8,
                task_latency=2.0,
                call_tpots=(0.007,),
            )
        )
    paths = write_reports(
        tmp_path, stats.snapshot(), title="inflection load", config={}, samples=stats.samples
    )
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=BROWSER_ARGS
        )
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(paths["html"].as_uri())
            headers = page.locator("table.summary th").all_inner_texts()
            assert any("(ms)" in h for h in headers) and not any("(s)" in h for h in headers)
            assert "10 s rolling window" in page.locator("#plot-throughput").inner_text()
            assert_no_horizontal_overflow(page)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "agentic-report.png"), full_page=True)
        finally:
            browser.close()
