"""`TraceUser`: replay a Mooncake trace (orchestrator.workload.traces) open loop with
the `Generate` RPC.

    locust -f loadtests/locustfile.py --headless -u 1 -t 2m --host 127.0.0.1:50051 \\
        --trace loadtests/data/sample_trace.jsonl --trace-speedup 4

Each trace line becomes one `Generate` call sent at the line's timestamp (divided by
`--trace-speedup`), whether or not earlier calls have finished: prompt_token_ids built
so that lines sharing `hash_ids` share prompt prefixes, max_tokens = output_length with
ignore_eos. With -u N the lines are dealt round-robin to N users, so the trace is
replayed once in total; a user idles once its share is sent and answered. Distributed, a
worker knows only its own index (not how users are spread), so run one user per worker
(-u = the number of workers, given to the workers as well): worker i then replays lines
i, i + N, ...; several users per worker deal correctly only with --expect-workers set.

Each call fires one Locust request event (request_type "generate", name "trace": request
sent -> stream ended, length = output tokens; failures start with the gRPC status name),
so Locust's RPS is the call rate, and records a `TaskSample` (agent "trace", one llm call,
its TTFT, cached tokens from the final chunk's call record) in the run's AgenticStats, so
the agentic figures, TTFT and prefix hit rate included, cover trace runs too.

Importing this module registers the `--trace*` options; the locustfile picks `TraceUser`
when `--trace` is given. The trace is parsed once per process at init (`install`), so a
malformed line ends the run before load with one line naming the file and line numbers.
"""

from __future__ import annotations

import locust

# isort: split
import itertools
import logging
import time
from typing import Any

import gevent
import grpc
from gevent.pool import Group
from locust import User, constant, task
from locust import events as locust_events
from locust.runners import WorkerRunner

from loadtests.metrics import CallUsageLike, TaskSample
from loadtests.state import state_of
from loadtests.user import (
    fire_sample_events,
    grpc_target,
    open_channel,
    tls_of,
    token_of,
)
from orchestrator.api.v1 import inflection_pb2 as pb
from orchestrator.api.v1 import inflection_pb2_grpc as pb_grpc
from orchestrator.client import generate_request
from orchestrator.protocol import auth_metadata
from orchestrator.workload.traces import (
    DEFAULT_VOCAB,
    TraceError,
    TraceRequest,
    arrival_offsets,
    load_mooncake_trace,
    prompt_tokens,
)

_ = locust  # imported first for its gevent monkey-patching
events: Any = locust_events
log = logging.getLogger("inflection.loadtests")

AGENT = "trace"  # the TaskSample agent and Locust request name of trace calls
CALL_TIMEOUT_S = 600.0  # backs the server: a hung stream still ends


def _options(parser: Any) -> None:
    parser.add_argument("--trace", default="", help="Replay this Mooncake JSONL trace.")
    parser.add_argument(
        "--trace-speedup", type=float, default=1.0, help="Replay the trace N times faster."
    )
    parser.add_argument(
        "--trace-vocab",
        type=int,
        default=DEFAULT_VOCAB,
        help="Token ids of trace prompts are drawn below this (the model's vocabulary).",
    )
    parser.add_argument(
        "--trace-max-outstanding", type=int, default=1000, help="Trace calls in flight bound."
    )


events.init_command_line_parser.add_listener(_options)


class TraceConfig:
    """The parsed trace and its replay options, kept on the environment."""

    def __init__(
        self,
        requests: list[TraceRequest],
        speedup: float = 1.0,
        vocab_size: int = DEFAULT_VOCAB,
        max_outstanding: int = 1000,
    ) -> None:
        self.requests = requests
        self.offsets = arrival_offsets(requests, speedup)  # validates speedup
        if vocab_size < 2:
            raise ValueError(f"--trace-vocab must be at least 2, got {vocab_size}")
        self.vocab_size = vocab_size
        self.max_outstanding = max(1, max_outstanding)
        self._slots = itertools.count()  # per process: the next user's share

    def next_slot(self) -> int:
        return next(self._slots)


def install(environment: Any) -> TraceConfig | None:
    """Parse `--trace` (if given) onto `environment.agentic.trace`. Raises TraceError or
    ValueError with a one-line message; the locustfile turns it into its exit line."""
    options = environment.parsed_options
    path = str(getattr(options, "trace", "") or "") if options is not None else ""
    if not path:
        return None
    config = TraceConfig(
        load_mooncake_trace(path),
        float(getattr(options, "trace_speedup", 1.0)),
        int(getattr(options, "trace_vocab", DEFAULT_VOCAB)),
        int(getattr(options, "trace_max_outstanding", 1000)),
    )
    state_of(environment).trace = config
    return config


def trace_of(environment: Any) -> TraceConfig:
    config: TraceConfig | None = state_of(environment).trace
    if config is None:
        config = install(environment)
    if config is None:
        raise TraceError("TraceUser needs --trace PATH")
    return config


def _share(environment: Any, slot: int) -> tuple[int, int]:
    """(this user's index among all users, total users) for round-robin dealing."""
    options = environment.parsed_options
    users = max(1, int(getattr(options, "num_users", 1) or 1))
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        workers = max(1, int(getattr(options, "expect_workers", 1) or 1))
        return (slot * workers + max(0, runner.worker_index)) % users, users
    return slot % users, users


class ShareReplayer:
    """Sends one user's share of the trace, each line in its own greenlet at its offset,
    so the arrival times hold whatever the server's latency; a target's replayer
    implements `send` (and closes its connections after `close`'s kill)."""

    def __init__(self, environment: Any, config: TraceConfig) -> None:
        self.environment = environment
        self.config = config
        self.stats = state_of(environment).stats
        self.calls = Group()

    def close(self) -> None:
        self.calls.kill(block=True, timeout=5)

    def replay(self, index: int, users: int) -> None:
        """Send lines index, index + users, ... at their offsets; return once all ended."""
        begin = time.monotonic()
        for i in range(index, len(self.config.requests), users):
            delay = begin + self.config.offsets[i] - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            if len(self.calls) >= self.config.max_outstanding:
                self.stats.add_dropped()
            else:
                self.calls.spawn(self.send, self.config.requests[i])
        self.calls.join()

    def send(self, request: TraceRequest) -> TaskSample:
        """One line's call, timed, recorded and fired as a Locust event; never raises."""
        raise NotImplementedError

    def record(
        self, sample: TaskSample, status: str, error: str | None, latency: float
    ) -> TaskSample:
        """Add a sent line's sample to the run's stats and fire its Locust event."""
        self.stats.add(sample)
        fire: Any = self.environment.events.request.fire
        fire_sample_events(fire, "generate", AGENT, sample, latency, status, error)
        return sample


class TraceReplayer(ShareReplayer):
    """Sends one user's share of the trace over one gRPC channel (`Generate` calls)."""

    def __init__(self, environment: Any, host: str | None, config: TraceConfig) -> None:
        super().__init__(environment, config)
        self.metadata = auth_metadata(token_of(environment))
        self.channel = open_channel(grpc_target(host), *tls_of(environment))
        self.stub: Any = pb_grpc.OrchestratorStub(self.channel)  # type: ignore[no-untyped-call]
        self._streams: set[Any] = set()

    def close(self) -> None:
        super().close()
        for stream in list(self._streams):
            stream.cancel()
        self.channel.close()

    def send(self, request: TraceRequest) -> TaskSample:
        """One Generate call, timed and recorded; a greenlet kill cancels the stream."""
        message = generate_request(
            prompt_tokens(request, self.config.vocab_size),
            max_tokens=request.output_length,
            ignore_eos=True,
        )
        sent = time.perf_counter()
        first: float | None = None
        record: pb.CallRecord | None = None
        error: str | None = None
        status = "OK"
        stream = self.stub.Generate(message, metadata=self.metadata, timeout=CALL_TIMEOUT_S)
        self._streams.add(stream)
        try:
            for chunk in stream:
                if first is None and (chunk.token_ids or chunk.text):
                    first = time.perf_counter()
                if chunk.HasField("call"):
                    record = chunk.call
            if record is None:
                status, error = "UNKNOWN", "stream ended before the call record"
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            status, error = code.name, exc.details() or ""
        finally:
            stream.cancel()  # no-op after a clean end; aborts the call on a greenlet kill
            self._streams.discard(stream)
        now = time.perf_counter()
        timings = record.timings if record is not None else None
        sample = trace_sample(
            request,
            status,
            record.usage if record is not None else None,
            timings.tpot if timings is not None and timings.HasField("tpot") else None,
            None if first is None else first - sent,
            now - sent,
        )
        return self.record(sample, status, error, now - sent)


def trace_sample(
    request: TraceRequest,
    status: str,
    usage: CallUsageLike | None,
    tpot: float | None,
    ttft: float | None,
    latency: float,
) -> TaskSample:
    """A trace call as a one-call task (`usage` None: no call record came back):
    amplification 1 by definition (nothing fans out). Both targets' replays record it."""
    ok = status == "OK"
    prompt = usage.prompt_tokens if usage is not None else 0
    output = usage.output_tokens if usage is not None else 0
    return TaskSample(
        completed_at=time.time(),
        agent=AGENT,
        ok=ok,
        status=status,
        llm_calls=1 if usage is not None else 0,
        prompt_tokens=prompt,
        cached_tokens=usage.cached_prompt_tokens if usage is not None else 0,
        output_tokens=output,
        user_input_tokens=prompt or request.input_length,
        final_output_tokens=output,
        token_amplification=1.0 if ok else 0.0,
        task_ttft=ttft,
        task_latency=latency,
        call_tpots=() if tpot is None else (tpot,),
    )


class TraceUser(User):
    """Open-loop trace replay (see the module docstring); -u 1 replays the whole trace.
    A target's trace user overrides `make_replayer`."""

    wait_time = constant(0)

    def make_replayer(self, config: TraceConfig) -> ShareReplayer:
        return TraceReplayer(self.environment, self.host, config)

    def on_start(self) -> None:
        config = trace_of(self.environment)
        self.index, self.users = _share(self.environment, config.next_slot())
        self.replayer = self.make_replayer(config)
        self.done = False

    def on_stop(self) -> None:
        self.replayer.close()

    @task
    def replay(self) -> None:
        if self.done:
            gevent.sleep(1.0)  # the share is sent and answered: idle until the run ends
            return
        self.replayer.replay(self.index, self.users)
        self.done = True
        log.info("trace share %d/%d replayed", self.index + 1, self.users)
