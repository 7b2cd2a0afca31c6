"""SIGTERM under load: `inflection serve` (a process of its own, three simulated replicas,
its own private Ray cluster) runs a steady load of plan_execute tasks, 8 at a time, and
gets SIGTERM in the middle of it. Every task in flight at the signal completes, every
task started after it is refused UNAVAILABLE with a retry hint (none hangs, none gets
another error), the health turns NOT_SERVING, and the command exits 0 leaving no process
it started behind.

The load holds new starts from just before the signal until the health reads
NOT_SERVING (10 to 20 ms in the first runs): a task sent in that moment could land on
either side of the server's switch, and the drill wants each task on one side. The tasks
left then all start at once, as the arrivals a client keeps sending would, while the tasks in flight
still hold the server up (a task takes about 4 s at time_scale 20)."""

from __future__ import annotations

import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from grpc_health.v1 import health_pb2

from orchestrator.client import Client, InflectionError
from tests.integration.test_drain import TIME_SCALE
from tests.integration.test_serve_lifecycle import (
    START_TIMEOUT_S,
    _descendants,
    _free_port,
    inflection,
)
from tests.reliability.conftest import Figures
from tests.reliability.drills import health_of, wait_for

SCENARIO = "SIGTERM under load"
TASKS = 24
CONCURRENCY = 8
DRAIN_TIMEOUT_S = 30.0  # far longer than a task: every task in flight should finish
QUIET_S = 0.5  # no task started for this long before the signal: none is still in transit


@dataclass(slots=True, frozen=True)
class Outcome:
    task: int  # its index in the load
    after_signal: bool  # started once the server was draining
    code: str  # "OK" or the status name of the error it got
    retry_after_s: float | None  # the error's retry hint
    details: str  # the error's details ("" when OK)
    finished: float  # time.monotonic() when the client had its reply


class SteadyLoad:
    """TASKS tasks, at most CONCURRENCY in flight until `hold`; after `release` every
    task not started yet starts at once."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._state = threading.Condition()
        self._phase = "running"  # "running" -> "held" (around the signal) -> "draining"
        self.running: set[int] = set()  # started before the signal, not finished yet
        self.started = 0  # started before the signal
        self.done = 0  # finished (either side of the signal)
        self.last_start = time.monotonic()

    def one(self, i: int) -> Outcome:
        with self._state:
            self._state.wait_for(
                lambda: (
                    self._phase == "draining"
                    or (self._phase == "running" and len(self.running) < CONCURRENCY)
                )
            )
            after = self._phase == "draining"
            if not after:
                self.running.add(i)
                self.started += 1
                self.last_start = time.monotonic()
        try:
            self._client.run("plan_execute", f"Under load {i}.", max_tokens=10)
            outcome = Outcome(i, after, "OK", None, "", time.monotonic())
        except InflectionError as error:
            outcome = Outcome(
                i, after, error.code.name, error.retry_after_s, error.details, time.monotonic()
            )
        with self._state:
            self.running.discard(i)
            self.done += 1
            self._state.notify_all()
        return outcome

    def quiet_midway(self) -> bool:
        with self._state:
            return (
                self.done >= CONCURRENCY
                and len(self.running) == CONCURRENCY
                and time.monotonic() - self.last_start >= QUIET_S
            )

    def hold(self) -> frozenset[int]:
        """Stop starting tasks; the tasks in flight now."""
        with self._state:
            self._phase = "held"
            return frozenset(self.running)

    def release(self) -> None:
        with self._state:
            self._phase = "draining"
            self._state.notify_all()


def _serve_config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "serve.yaml"
    path.write_text(
        "ray: {address: local, num_cpus: 2}\n"
        "replicas: {count: 3, backend: sim, num_cpus: 0.5, "
        f"sim: {{time_scale: {TIME_SCALE}}}}}\n"
        f"server: {{host: 127.0.0.1, port: {port}, drain_timeout_s: {DRAIN_TIMEOUT_S}}}\n"
    )
    return path


def test_sigterm_under_load_finishes_the_tasks_in_flight_and_refuses_the_rest(
    tmp_path: Path, figures: Figures
) -> None:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    with (
        inflection("serve", "--config", str(_serve_config(tmp_path, port))) as serve,
        Client(address, timeout=60) as client,
        ThreadPoolExecutor(TASKS) as threads,
    ):
        serve.wait_for(lambda: serve.line("inflection: serving on"), START_TIMEOUT_S, "serving")
        load = SteadyLoad(client)
        futures = [threads.submit(load.one, i) for i in range(TASKS)]
        serve.wait_for(load.quiet_midway, 60, f"{CONCURRENCY} tasks done, {CONCURRENCY} in flight")
        serve.started |= _descendants(serve.proc.pid)
        in_flight = load.hold()
        started_before = load.started
        signalled = time.monotonic()
        serve.proc.send_signal(signal.SIGTERM)
        not_serving_s = wait_for(
            lambda: health_of(address) == health_pb2.HealthCheckResponse.NOT_SERVING,
            10,
            "NOT_SERVING",
        )
        load.release()
        outcomes: list[Outcome | None] = []
        for future in futures:
            try:
                outcomes.append(future.result(timeout=90))
            except TimeoutError:
                outcomes.append(None)  # hung
        code = serve.proc.wait(timeout=90)
        exit_s = time.monotonic() - signalled
    left = serve.leftovers()

    before = [o for o in outcomes if o is not None and not o.after_signal]
    after = [o for o in outcomes if o is not None and o.after_signal]
    hung = outcomes.count(None)
    in_flight_done = [o for o in before if o.task in in_flight]
    completed = sum(o.code == "OK" for o in in_flight_done)
    refused = [
        o
        for o in after
        if o.code == "UNAVAILABLE"
        and o.retry_after_s is not None
        and "the server is draining" in o.details
    ]
    otherwise = len(after) - len(refused)
    done_s = max((o.finished for o in in_flight_done), default=signalled) - signalled
    draining = re.search(r"inflection: draining (\d+) tasks in flight", "".join(serve.err))
    server_count = int(draining.group(1)) if draining else -1
    tracebacks = sum("Traceback" in line for line in serve.err)

    figures.record(
        SCENARIO, f"tasks started before the signal ({CONCURRENCY} at a time)", started_before
    )
    figures.record(
        SCENARIO, "tasks in flight at the signal", len(in_flight), "", f"= {CONCURRENCY}"
    )
    figures.record(
        SCENARIO, "the server's count of them (its drain line)", server_count, "", "<= in flight"
    )
    figures.record(SCENARIO, "of them, completed", completed, "", "= in flight")
    figures.record(SCENARIO, "tasks lost", len(in_flight) - completed, "", "= 0")
    figures.record(SCENARIO, "tasks started after the signal", TASKS - started_before)
    figures.record(
        SCENARIO, "of them, UNAVAILABLE with a retry hint", len(refused), "", "= started after"
    )
    hints = sorted({o.retry_after_s for o in refused if o.retry_after_s is not None})
    figures.record(SCENARIO, "the retry hint they carried", ", ".join(f"{h:g}" for h in hints), "s")
    figures.record(SCENARIO, "of them, another error or hung", otherwise + hung, "", "= 0")
    figures.record(SCENARIO, "SIGTERM -> health NOT_SERVING", not_serving_s, "s", "< 2 s")
    figures.record(SCENARIO, "SIGTERM -> last task in flight done", done_s, "s")
    figures.record(SCENARIO, "SIGTERM -> exit", exit_s, "s", "< 60 s")
    figures.record(SCENARIO, "exit code", code, "", "= 0")
    figures.record(SCENARIO, "processes it started, left running", len(left), "", "= 0")
    figures.record(SCENARIO, "tracebacks on stderr", tracebacks, "", "= 0")

    assert code == 0, serve.text()
    assert started_before < TASKS, "every task started before the signal: nothing to refuse"
    assert len(in_flight) == CONCURRENCY
    assert 1 <= server_count <= len(in_flight), serve.text()
    assert completed == len(in_flight), [o for o in in_flight_done if o.code != "OK"]
    assert all(o.code == "OK" for o in before)  # those done before the signal too
    assert len(after) + hung == TASKS - started_before
    assert len(refused) == TASKS - started_before, [o for o in after if o not in refused]
    assert hints == [1.0]
    assert not_serving_s < 2.0
    assert exit_s < 60.0
    assert not left and not tracebacks, serve.text()
