"""Scenarios on one shared deployment of three simulated replicas in real time (its own
Ray cluster unless the session has one): a replica killed under load, the replica
streaming an answer killed mid-stream, a client cancelling one task and 1,000 tasks at
once, and a deadline expiring mid-run. Each scenario leaves the pool at full size and
idle for the next."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator.client import (
    AnswerDelta,
    CallRecord,
    Client,
    DeadlineExceeded,
    ReplicaState,
    StepFinished,
    StepStarted,
    TaskCompleted,
)
from tests.integration.test_deadlines_sim import sim_deployment
from tests.reliability.conftest import Figures
from tests.reliability.drills import kill, kill_under_load, states, wait_for

REPO = Path(__file__).resolve().parents[2]
REPLICAS = 3
FULL_SIZE_WITHIN_S = 60.0
DRAINED_WITHIN_MS = 200.0
POLL_INTERVAL_S = 0.010  # how often the cancellation scenarios read the cluster status
SETTLED_S = 3.0  # a storm whose counts stand still this long is as started as it gets


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    replicas = {
        "count": REPLICAS,
        "health_period_s": 0.5,
        "restart_backoff_initial_s": 1.0,
        "sim": {"time_scale": 1.0},
    }
    with sim_deployment(replicas) as running:
        yield running


def back_to_full_size(client: Client, within_s: float = FULL_SIZE_WITHIN_S) -> None:
    wait_for(
        lambda: all(s is ReplicaState.READY for s in states(client).values()),
        within_s,
        f"{REPLICAS} of {REPLICAS} replicas READY",
    )


def test_a_replica_killed_under_load_loses_no_task(cluster: Any, figures: Figures) -> None:
    scenario = "replica killed under load"
    with Client(cluster.address, timeout=120) as client:
        drill = kill_under_load(
            client, cluster.config.ray.namespace, "replica-1", full_size_within_s=120
        )
    figures.record(scenario, "tasks run (8 at a time)", drill.tasks)
    figures.record(scenario, "tasks lost", drill.lost, "", "= 0")
    figures.record(scenario, "calls retried", sum(r.usage.retried_calls for r in drill.results))
    figures.record(scenario, "back to full size", drill.replaced_s, "s", "< 60")
    assert drill.lost == 0, drill.errors
    assert all(r.usage.llm_calls == 5 for r in drill.results)
    assert drill.replaced_s < FULL_SIZE_WITHIN_S


def test_the_answer_streaming_replica_killed_the_client_gets_it_once(
    cluster: Any, figures: Figures
) -> None:
    scenario = "answer-streaming replica killed"
    answer_tokens = 400  # seconds of streaming at simulated real time
    with Client(cluster.address, timeout=120) as client:
        back_to_full_size(client)
        answer_replica = victim = ""
        deltas: list[AnswerDelta] = []
        results = []
        for event in client.run_task(
            "plan_execute",
            "Plan a failover drill.",
            step_max_tokens={"planner": 8, "worker": 8, "synthesizer": answer_tokens},
        ):
            if isinstance(event, StepStarted) and event.step == "synthesizer":
                answer_replica = event.replica
            if isinstance(event, AnswerDelta):
                deltas.append(event)
                if not victim and len(deltas) >= 3:  # mid-stream: some text is out
                    victim = answer_replica
                    kill(victim, cluster.config.ray.namespace)
            if isinstance(event, TaskCompleted):
                results.append(event.result)
        back_to_full_size(client)
    streamed = sum(len(d.token_ids) for d in deltas)
    text = "".join(d.text for d in deltas)
    figures.record(scenario, "answers received", len(results), "", "= 1")
    figures.record(scenario, "duplicated tokens", max(0, streamed - answer_tokens), "", "= 0")
    figures.record(scenario, "missing tokens", max(0, answer_tokens - streamed), "", "= 0")
    assert victim, "the answer never streamed"
    [result] = results
    figures.record(scenario, "answer calls retried", result.usage.retried_calls, "", ">= 1")
    assert streamed == answer_tokens
    assert text == result.answer  # every token once, in order
    [answer] = [c for c in result.calls if c.step == "synthesizer"]
    assert answer.replica != victim and answer.usage.output_tokens == answer_tokens
    assert result.usage.retried_calls >= 1


@dataclass(slots=True, frozen=True)
class Poll:
    sent: float  # time.monotonic() of the request
    received: float
    in_flight_calls: int  # summed over the replicas (the orchestrator's count)
    engine_requests: int  # summed unfinished (waiting + running) engine requests
    not_ready: tuple[str, ...]  # replicas not READY in this reply


@dataclass
class StatusPoller:
    """GetClusterStatus every POLL_INTERVAL_S on a channel of its own, in a thread."""

    address: str
    polls: list[Poll] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> StatusPoller:
        self._thread = threading.Thread(target=self._run, name="status-poller", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=60)

    def _run(self) -> None:
        with Client(self.address, timeout=60) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                status = client.cluster_status()
                received = time.monotonic()
                self.polls.append(
                    Poll(
                        sent,
                        received,
                        sum(r.in_flight_calls for r in status.replicas),
                        sum(r.unfinished_requests for r in status.replicas),
                        tuple(r.name for r in status.replicas if r.state is not ReplicaState.READY),
                    )
                )
                self._stop.wait(POLL_INTERVAL_S)

    def idle_after(self, since: float, timeout: float) -> Poll:
        """The first reply requested after `since` showing nothing in flight."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for poll in self.polls[-200:]:
                if poll.sent >= since and poll.in_flight_calls == poll.engine_requests == 0:
                    return poll
            time.sleep(POLL_INTERVAL_S)
        raise AssertionError(f"still in flight {timeout} s after the cancel: {self.polls[-1]}")


@dataclass(slots=True, frozen=True)
class Storm:
    tasks: int
    running: int  # tasks with a call of the awaited step running when cancelled
    queued: int  # tasks not admitted then (the replicas were saturated)
    in_flight_at_cancel: int  # calls in flight on the replicas then
    drained_s: float  # the cancel -> the first status reply showing nothing in flight
    finished: int  # tasks that completed before the cancel reached them
    max_status_s: float  # the slowest GetClusterStatus from the start to the drain
    max_status_draining_s: float  # the slowest from the cancel to the drain
    not_ready: tuple[str, ...]  # replicas seen not READY meanwhile (or a second after)


class Child:
    """The storm client's process, its output lines collected as they come."""

    def __init__(self, address: str, tasks: int, step: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.storm_client", address, str(tasks), step],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        self.lines.extend(iter(self.proc.stdout.readline, ""))

    def last(self, word: str) -> list[str] | None:
        """The words of the last line starting with `word`."""
        found = [line.split() for line in self.lines if line.startswith(word + " ")]
        return found[-1] if found else None

    def counts(self) -> tuple[int, int, int]:
        """Tasks running a call of the step, accepted (admitted), refused, so far."""
        words = self.last("running")
        return (int(words[1]), int(words[2]), int(words[3])) if words else (0, 0, 0)

    def wait_line(self, word: str, timeout: float) -> list[str]:
        wait_for(lambda: self.last(word) or self.proc.poll() is not None, timeout, word)
        words = self.last(word)
        assert words, f"the storm client exited ({self.proc.returncode}) before '{word}'"
        return words

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._reader.join(timeout=10)


def settled(child: Child, tasks: int, timeout: float = 90.0) -> int:
    """Wait until every task runs a call of the child's step, or some do and the child's
    counts stood still for SETTLED_S (admission and the replicas' bounds hold the rest
    back); how many tasks were not admitted then."""
    last, since = None, time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        counts = child.counts()
        running, accepted, refused = counts
        if running == tasks:
            return 0
        if counts != last:
            last, since = counts, time.monotonic()
        elif running and time.monotonic() - since >= SETTLED_S:
            return tasks - accepted - refused
        time.sleep(0.05)
    raise AssertionError(f"after {timeout} s: (running, accepted, refused) {child.counts()}")


def cancel_storm(cluster: Any, tasks: int, step: str) -> Storm:
    """Start `tasks` tasks from a client process, wait until each has a call of `step`
    running (or waits for admission), cancel them all at once, and time how long until
    nothing is in flight on the replicas."""
    with StatusPoller(cluster.address) as poller:
        opened = time.monotonic()
        child = Child(cluster.address, tasks, step)
        try:
            queued = settled(child, tasks)
            in_flight = poller.polls[-1].in_flight_calls
            assert child.proc.stdin is not None
            child.proc.stdin.write("cancel\n")
            child.proc.stdin.flush()
            _, cancelled_at, running = child.wait_line("cancelled", 60)
            cancelled = float(cancelled_at)
            idle = poller.idle_after(cancelled, timeout=120)
            finished = int(child.wait_line("done", 120)[1])
            assert child.proc.wait(timeout=60) == 0
        finally:
            child.close()
        time.sleep(1.0)  # a replica the storm made miss its health checks shows by now
    window = [p for p in poller.polls if p.sent >= opened]
    draining = [p for p in window if cancelled <= p.sent <= idle.sent]
    return Storm(
        tasks=tasks,
        running=int(running),
        queued=queued,
        in_flight_at_cancel=in_flight,
        drained_s=idle.received - cancelled,
        finished=finished,
        max_status_s=max(p.received - p.sent for p in window),
        max_status_draining_s=max(p.received - p.sent for p in draining),
        not_ready=tuple(sorted({name for p in window for name in p.not_ready})),
    )


def test_a_cancelled_task_leaves_nothing_in_flight(cluster: Any, figures: Figures) -> None:
    scenario = "client cancels a task"
    with Client(cluster.address, timeout=60) as client:
        back_to_full_size(client)
    storm = cancel_storm(cluster, 1, "worker")
    drained_ms = storm.drained_s * 1000
    figures.record(scenario, "calls in flight at the cancel", storm.in_flight_at_cancel)
    figures.record(scenario, "cancel -> nothing in flight", drained_ms, "ms", "< 200")
    assert storm.running == 1 and storm.in_flight_at_cancel >= 1 and storm.finished == 0
    assert drained_ms < DRAINED_WITHIN_MS


STORM = "client cancels 1,000 tasks at once"


@pytest.fixture(scope="module")
def storm(cluster: Any, figures: Figures) -> Storm:
    """1,000 tasks started at once from one client and cancelled at once (run once for
    the two tests below)."""
    with Client(cluster.address, timeout=60) as client:
        back_to_full_size(client)
    storm = cancel_storm(cluster, 1000, "planner")
    figures.record(STORM, "tasks with a call running at the cancel", storm.running)
    figures.record(STORM, "tasks not admitted yet then", storm.queued)
    figures.record(STORM, "calls in flight at the cancel", storm.in_flight_at_cancel)
    figures.record(STORM, "tasks that completed before the cancel", storm.finished)
    figures.record(STORM, "cancel -> nothing in flight", storm.drained_s * 1000, "ms", "< 200")
    figures.record(STORM, "slowest GetClusterStatus, whole storm", storm.max_status_s * 1000, "ms")
    figures.record(
        STORM, "slowest GetClusterStatus, draining", storm.max_status_draining_s * 1000, "ms"
    )
    figures.record(STORM, "replicas marked unhealthy", len(storm.not_ready), "", "= 0")
    return storm


def test_1000_tasks_cancelled_at_once_all_end_and_no_replica_is_marked_unhealthy(
    storm: Storm,
) -> None:
    # Every stream ended (the client said `done`); under default admission the tasks
    # admitted first may complete while the rest wait, before the cancel reaches them.
    assert storm.running > 0
    assert not storm.not_ready


@pytest.mark.xfail(
    # Not strict: it passes when admission leaves few calls running at the cancel.
    strict=False,
    reason="issue 13: with 1,000 calls in flight, 0.35 to 0.98 s to nothing in flight on "
    "a loaded 2-core machine (bound 200 ms; 75 to 238 ms with the 49 to 417 calls "
    "admission lets run): the pool lets go of every call within 80 ms of the cancel, the "
    "rest is three simulated replicas ending their aborted calls, one Ray reply each, "
    "before their counts show 0 (README, Reliability)",
)
def test_1000_tasks_cancelled_at_once_leave_nothing_in_flight_within_200_ms(
    storm: Storm,
) -> None:
    assert storm.drained_s * 1000 < DRAINED_WITHIN_MS


@dataclass(slots=True, frozen=True)
class Expired:
    error: DeadlineExceeded
    overshoot_s: float  # the deadline -> the status reached the client
    started: tuple[StepStarted, ...]
    finished: tuple[StepFinished, ...]
    answer_tokens: int  # answer tokens the client received before the status

    @property
    def aborted(self) -> int:
        return len(self.started) - len(self.finished)

    def finished_sum(self, tokens: Callable[[CallRecord], int]) -> int:
        return sum(tokens(f.call) for f in self.finished if f.call is not None)


def expire(address: str, deadline_s: float, step_max_tokens: dict[str, int]) -> Expired:
    """Run a task whose deadline passes while it runs, watching its events."""
    started: list[StepStarted] = []
    finished: list[StepFinished] = []
    answer_tokens = 0
    with Client(address, timeout=60) as client:
        back_to_full_size(client)
        begun = time.monotonic()
        with pytest.raises(DeadlineExceeded) as failed:
            for event in client.run_task(
                "plan_execute",
                "Plan a launch.",
                deadline_s=deadline_s,
                step_max_tokens=step_max_tokens,
            ):
                if isinstance(event, StepStarted):
                    started.append(event)
                if isinstance(event, StepFinished):
                    finished.append(event)
                if isinstance(event, AnswerDelta):
                    answer_tokens += len(event.token_ids)
        overshoot_s = time.monotonic() - begun - deadline_s
    return Expired(failed.value, overshoot_s, tuple(started), tuple(finished), answer_tokens)


def test_a_deadline_mid_run_reports_the_partial_usage(cluster: Any, figures: Figures) -> None:
    """Once while the workers run (their calls are aborted: counted with their prompt
    tokens; the orchestrator never sees a worker's tokens before its result, so an
    aborted worker's output reads 0) and once while the answer streams (the aborted
    answer call's streamed tokens are counted)."""
    scenario = "deadline expires mid-run"
    in_workers = expire(cluster.address, 1.5, {"planner": 16, "worker": 400, "synthesizer": 8})
    in_answer = expire(cluster.address, 1.5, {"planner": 8, "worker": 8, "synthesizer": 400})
    for phase, expired in (("in the workers", in_workers), ("in the answer", in_answer)):
        usage = expired.error.usage
        assert usage is not None, f"no partial usage on DEADLINE_EXCEEDED {phase}"
        code = expired.error.code.name
        figures.record(scenario, f"{phase}: status", code, "", "DEADLINE_EXCEEDED")
        figures.record(scenario, f"{phase}: status after the deadline", expired.overshoot_s, "s")
        figures.record(scenario, f"{phase}: calls counted", usage.llm_calls, "", "= issued")
        figures.record(scenario, f"{phase}: of which aborted", expired.aborted, "", ">= 1")
        figures.record(scenario, f"{phase}: prompt tokens", usage.prompt_tokens_total, "", "> 0")
        figures.record(scenario, f"{phase}: output tokens", usage.output_tokens_total, "", "> 0")
        assert code == "DEADLINE_EXCEEDED"
        assert usage.llm_calls == len(expired.started) and expired.aborted >= 1
        assert usage.prompt_tokens_total > usage.user_input_tokens > 0
        assert usage.output_tokens_total > 0
    # The aborted calls' own share: the workers' prompts, the answer's streamed tokens.
    usage = in_workers.error.usage
    assert usage is not None
    aborted_prompts = usage.prompt_tokens_total - in_workers.finished_sum(
        lambda c: c.usage.prompt_tokens
    )
    figures.record(
        scenario, "in the workers: prompt tokens of aborted calls", aborted_prompts, "", "> 0"
    )
    assert aborted_prompts > 0
    usage = in_answer.error.usage
    assert usage is not None
    aborted_output = usage.output_tokens_total - in_answer.finished_sum(
        lambda c: c.usage.output_tokens
    )
    figures.record(
        scenario,
        "in the answer: output tokens of the aborted answer",
        aborted_output,
        "",
        ">= received",
    )
    assert aborted_output >= in_answer.answer_tokens > 0
