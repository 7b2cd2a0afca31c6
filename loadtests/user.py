"""Locust users that run agent tasks over gRPC: `AgentUser` (closed loop, think time) and
`OpenLoopUser` (tasks arrive at a rate, loadtests.arrivals), over a shared `TaskRunner`.

Per docs/reference.md: locust is imported before anything that may import ssl, gRPC
runs its synchronous stubs on gevent (`init_gevent`), and each user makes its own channel
in `on_start`, after any fork. Each task fires one Locust request event, so Locust's own
RPS and "Aggregated" row count tasks and nothing else:

- request_type "task", name = agent: response_time = request sent -> stream ended (ms),
  response_length = the task's output tokens; a failure's message starts with the gRPC
  status name ("DEADLINE_EXCEEDED: ...").

and records a `TaskSample` in the environment's `AgenticStats` for the agentic figures
(task TTFT, per-call TPOT, ...: the Agentic tabs; per-step timings in the Agentic steps
tab when calls are kept). TTFT and per-step entries are not fired as requests: Locust adds
every request entry into its total, so they made its RPS several times the task rate (18
while 3 tasks/s ran).
"""

from __future__ import annotations

import locust

# isort: split
import random
import re
import time
from typing import Any, Protocol

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, constant, task

from loadtests.arrivals import Dispatcher, parse_arrival_process
from loadtests.metrics import AgenticStats, TaskRecorder, TaskSample
from loadtests.state import state_of
from orchestrator.api.v1 import inflection_pb2 as pb
from orchestrator.api.v1 import inflection_pb2_grpc as pb_grpc
from orchestrator.client import open_channel as sdk_open_channel
from orchestrator.client import sync_trailers, task_request, token_from, trailer_usage
from orchestrator.protocol import auth_metadata
from orchestrator.workload.mix import input_text

grpc_gevent.init_gevent()

_IDS = re.compile(r"\b(task|call|tool)-[0-9a-f]+\b")
_ = locust  # imported first for its gevent monkey-patching


class TaskFailed(Exception):
    """A task that ended with a gRPC error; the message starts with the status name."""


def fire_sample_events(
    fire: Any,
    request_type: str,
    name: str,
    sample: TaskSample,
    elapsed_s: float,
    status: str,
    error: str | None,
) -> None:
    """The one Locust request event of a finished task or call: its latency entry, a
    failure named `STATUS: details` when it failed. Its TTFT is in the sample only."""
    fire(
        request_type=request_type,
        name=name,
        response_time=elapsed_s * 1000,
        response_length=sample.output_tokens,
        exception=TaskFailed(f"{status}: {error}") if error is not None else None,
        context={},
    )


def grpc_target(host: str | None) -> str:
    """`--host` as a gRPC target: host:port, tolerating a grpc:// or http:// prefix."""
    if not host:
        raise ValueError("--host is required: the orchestrator's host:port, e.g. 127.0.0.1:50051")
    for prefix in ("grpc://", "http://", "dns:///"):
        if host.startswith(prefix):
            host = host[len(prefix) :]
    return host.rstrip("/")


def tls_of(environment: Any) -> tuple[bool, str | None]:
    """(--tls, --tls-ca) of the run."""
    options = environment.parsed_options
    ca: str | None = getattr(options, "tls_ca", None) or None
    return bool(getattr(options, "tls", False)) or ca is not None, ca


def open_channel(target: str, tls: bool = False, ca_file: str | None = None) -> grpc.Channel:
    """A channel to `target`: plaintext, or TLS with the system roots or `ca_file`'s (the
    SDK's channel, so the load generator and the SDK connect alike)."""
    return sdk_open_channel(target, tls, ca_file)


def token_of(environment: Any) -> str | None:
    options = environment.parsed_options
    token: str | None = getattr(options, "token", None) if options is not None else None
    # `inflection load` passes it as INFLECTION_TOKEN, not on Locust's command line.
    return token_from(token)


class TaskRunner:
    """Runs tasks of a workload over one channel; shared by a user's greenlets."""

    def __init__(self, environment: Any, host: str | None) -> None:
        self.environment = environment
        self.workload = state_of(environment).workload
        self.stats = state_of(environment).stats
        self.metadata = auth_metadata(token_of(environment))
        self.channel = open_channel(grpc_target(host), *tls_of(environment))
        self.stub: Any = pb_grpc.OrchestratorStub(self.channel)  # type: ignore[no-untyped-call]
        self.rng = random.Random()
        self._calls: set[Any] = set()  # streams in flight, cancelled on close

    def close(self) -> None:
        for call in list(self._calls):
            call.cancel()
        self.channel.close()

    def request(self, agent: str) -> pb.TaskRequest:
        w = self.workload
        return task_request(
            agent,
            input_text(self.rng, w.draw_input_tokens(self.rng)),
            mode=w.mode,
            max_tokens=w.max_tokens,
            step_max_tokens=w.step_max_tokens,
            deadline_s=w.deadline_s,
        )

    def run_one(self, agent: str | None = None) -> TaskSample:
        """Run one task to its end, firing the Locust events; a greenlet kill cancels the
        stream (the server aborts the task's calls) and records nothing."""
        agent = agent or self.workload.choose_agent(self.rng)
        request = self.request(agent)
        # The gRPC deadline backs the server's own one, so a hung stream still ends.
        timeout = self.workload.deadline_s + 10.0 if self.workload.deadline_s else None
        recorder = TaskRecorder(agent, time.perf_counter())
        call = self.stub.RunTask(request, metadata=self.metadata, timeout=timeout)
        self._calls.add(call)
        fire: Any = self.environment.events.request.fire
        try:
            for event in call:
                recorder.on_event(event, time.perf_counter())
            status = "OK" if recorder.result is not None else "UNKNOWN"
            usage = recorder.result.usage if recorder.result is not None else None
            error = None if recorder.result is not None else "stream ended before completed"
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            status = code.name
            usage = trailer_usage(sync_trailers(exc))
            # Ids vary per task; without them Locust groups failures by cause.
            error = _IDS.sub(r"\1-*", exc.details() or "")
        finally:
            call.cancel()  # no-op after a clean end; aborts the task on a greenlet kill
            self._calls.discard(call)
        now = time.perf_counter()
        sample = recorder.sample(now, time.time(), status, usage)
        self.stats.add(sample)
        fire_sample_events(fire, "task", agent, sample, (now - recorder.sent_at), status, error)
        return sample


class Runner(Protocol):
    """What a user needs of its target's task runner (`TaskRunner` here,
    loadtests.openai_user.OpenAIRunner for the OpenAI target)."""

    rng: random.Random
    stats: AgenticStats

    def run_one(self, agent: str | None = None) -> TaskSample: ...

    def close(self) -> None: ...


class AgentUser(User):
    """Closed loop: each user runs one task at a time, pausing the workload's think time
    between tasks. A target's closed-loop user overrides `make_runner`."""

    def make_runner(self) -> Runner:
        return TaskRunner(self.environment, self.host)

    def wait_time(self) -> float:
        return state_of(self.environment).workload.draw_think_time(self._runner.rng)

    def on_start(self) -> None:
        self._runner = self.make_runner()

    def on_stop(self) -> None:
        self._runner.close()

    @task
    def run_task(self) -> None:
        self._runner.run_one()


RATE_MESSAGE = "agentic_rate"  # master -> workers: the new total arrival rate (tasks/s)


def open_loop_users(environment: Any) -> int:
    """How many OpenLoopUsers share the total rate: the master's -u (the locustfile
    forwards it to workers as agentic_open_loop_users)."""
    options = environment.parsed_options
    users = getattr(options, "agentic_open_loop_users", None) or getattr(options, "num_users", None)
    return max(1, int(users or 1))


def set_total_rate(environment: Any, rate: float) -> None:
    """Set the run's total arrival rate; every dispatcher on this process takes its share
    from its next arrival on (a sweep changes the rate mid-run)."""
    state_of(environment).rate = rate
    for dispatcher in list(state_of(environment).dispatchers):
        dispatcher.set_rate(rate / open_loop_users(environment))


class OpenLoopUser(User):
    """Open loop: one dispatcher starting tasks at (total rate) / -u per second, each in
    its own greenlet, whether or not earlier tasks have completed. A target's open-loop
    user overrides `make_runner`."""

    wait_time = constant(0)

    def make_runner(self) -> Runner:
        return TaskRunner(self.environment, self.host)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        total = state_of(self.environment).rate or float(getattr(options, "arrival_rate", 0.0))
        process = parse_arrival_process(
            str(getattr(options, "arrival_process", "poisson")),
            total / open_loop_users(self.environment),
            float(getattr(options, "arrival_cv", 1.0)),
        )
        self._runner = self.make_runner()
        self.dispatcher = Dispatcher(
            process,
            self._runner.run_one,
            max_outstanding=int(getattr(options, "max_outstanding", 1000)),
            on_drop=self._runner.stats.add_dropped,
        )
        state_of(self.environment).dispatchers.add(self.dispatcher)

    def on_stop(self) -> None:
        state_of(self.environment).dispatchers.discard(self.dispatcher)
        self.dispatcher.stop()
        self._runner.close()

    @task
    def dispatch(self) -> None:
        self.dispatcher.run()
