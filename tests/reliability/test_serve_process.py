"""`inflection serve` as an operator runs it (a process of its own, simulated replicas,
a config file, its own private Ray cluster): SIGTERM during start-up ends it cleanly,
and a second server on a port in use is refused while the first keeps serving."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from orchestrator.client import Client, InflectionError
from tests.integration.test_serve_lifecycle import (
    INFLECTION,
    REPO,
    START_TIMEOUT_S,
    _config,
    _env,
    _free_port,
    _ray_started,
    inflection,
)
from tests.reliability.conftest import Figures


def test_sigterm_during_start_up_exits_cleanly(tmp_path: Path, figures: Figures) -> None:
    scenario = "SIGTERM during start-up"
    config = _config(tmp_path, _free_port())
    with inflection("serve", "--config", str(config)) as serve:
        serve.wait_for(lambda: serve.line("inflection: starting", "err"), 120, "starting line")
        serve.wait_for(_ray_started(serve), START_TIMEOUT_S, "Ray processes")
        assert not serve.line("serving on"), "started too fast to test start-up"
        signalled = time.monotonic()
        code = serve.stop(signal.SIGTERM)
        exit_s = time.monotonic() - signalled
    left = serve.leftovers()
    tracebacks = sum("Traceback" in line for line in serve.err)
    figures.record(scenario, "exit code", code, "", "= 0")
    figures.record(scenario, "SIGTERM -> exit", exit_s, "s")
    figures.record(scenario, "processes it started, left running", len(left), "", "= 0")
    figures.record(scenario, "tracebacks on stderr", tracebacks, "", "= 0")
    assert code == 0, serve.text()
    assert serve.started, "no process was started before the signal"
    assert not left and not tracebacks, serve.text()
    assert not serve.line("serving on")


def test_a_second_server_on_a_used_port_is_refused(tmp_path: Path, figures: Figures) -> None:
    scenario = "second server on a used port"
    port = _free_port()
    config = _config(tmp_path, port)
    with inflection("serve", "--config", str(config)) as first:
        first.wait_for(lambda: first.line("inflection: serving on"), START_TIMEOUT_S, "serving")
        started = time.monotonic()
        second = subprocess.run(
            [INFLECTION, "serve", "--config", str(config)],
            cwd=REPO,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        refused_s = time.monotonic() - started
        with Client(f"127.0.0.1:{port}", timeout=60) as client:
            try:
                after = client.run("plan_execute", "Still there?", max_tokens=4).usage.llm_calls
                outcome = "OK"
            except InflectionError as error:
                after, outcome = 0, error.code.name
        figures.record(scenario, "second server's exit code", second.returncode, "", "!= 0")
        figures.record(scenario, "second server refused after", refused_s, "s")
        figures.record(scenario, "lines it printed", len(second.stderr.splitlines()), "", "= 1")
        figures.record(scenario, "a task on the first server after it", outcome, "", "OK")
        assert second.returncode != 0
        assert second.stderr == f"inflection: port 127.0.0.1:{port} is in use\n", second.stderr
        assert not second.stdout
        assert outcome == "OK" and after == 5
        assert first.stop(signal.SIGTERM) == 0, first.text()
    assert not first.leftovers(), first.text()
