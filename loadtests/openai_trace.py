"""Trace replay against an OpenAI-compatible server: `--trace FILE --target openai`.

The gRPC target's replay (loadtests.trace_user: the same parsed trace, arrival times,
round-robin shares and prompts whose shared `hash_ids` blocks share token ids), with each
line sent as one streaming `/v1/completions` request (token-id prompt, max_tokens =
output_length, ignore_eos) instead of a `Generate` call. Each call fires one Locust
request event (request_type "generate", name "trace") and records a one-call TaskSample
(agent "trace"); a failed call's status is its cause (loadtests.openai_http.CAUSES).
Token ids are drawn below `--trace-vocab`: set it to the model's vocabulary size or less.
"""

from __future__ import annotations

import locust

# isort: split
import itertools
import logging
import time
from typing import Any

import gevent
from gevent.pool import Group
from locust import User, constant, task

from loadtests.metrics import TaskSample
from loadtests.openai_http import CallFailure, OpenAIClient, StreamFold, completions_body
from loadtests.openai_user import COMPLETIONS, OpenAIOptions, TargetError, served_model
from loadtests.state import state_of
from loadtests.trace_user import AGENT, TraceConfig, _share, trace_of
from loadtests.user import fire_sample_events
from orchestrator.domain import CallResult, Sampling
from orchestrator.workload.traces import TraceRequest, prompt_tokens

_ = locust  # imported first for its gevent monkey-patching
log = logging.getLogger("inflection.loadtests")


class OpenAITraceReplayer:
    """Sends one user's share of the trace; each call in its own greenlet."""

    def __init__(self, environment: Any, host: str | None, config: TraceConfig) -> None:
        self.environment = environment
        self.config = config
        self.stats = state_of(environment).stats
        self.options = OpenAIOptions.of(environment, host)
        self.clients = [
            OpenAIClient(e, token=self.options.token, concurrency=config.max_outstanding)
            for e in self.options.endpoints
        ]
        self._turn = itertools.cycle(self.clients)  # several servers: each call the next
        self.calls = Group()
        self.model: str | None = None

    def close(self) -> None:
        self.calls.kill(block=True, timeout=5)
        for client in self.clients:
            client.close()

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
        """One streaming completion, timed and recorded; never raises."""
        sent = time.perf_counter()
        fold = StreamFold("trace", sent)
        result: CallResult | None = None
        status, error = "OK", None
        try:
            if self.model is None:
                self.model = served_model(self.options)[0]
            body = completions_body(
                self.model,
                prompt_tokens(request, self.config.vocab_size),
                Sampling(max_tokens=request.output_length, ignore_eos=True),
            )
            result = next(self._turn).stream_call(COMPLETIONS, body, fold)
        except (CallFailure, TargetError) as exc:
            status, error = exc.cause, str(exc)
        now = time.perf_counter()
        sample = trace_sample(request, result, status, fold.first_token_at, sent, now)
        self.stats.add(sample)
        fire: Any = self.environment.events.request.fire
        fire_sample_events(fire, "generate", AGENT, sample, now - sent, status, error)
        return sample


def trace_sample(
    request: TraceRequest,
    result: CallResult | None,
    status: str,
    first: float | None,
    sent: float,
    now: float,
) -> TaskSample:
    """A trace call as a one-call task (as loadtests.trace_user records it)."""
    usage = result.usage if result is not None else None
    ok = status == "OK"
    return TaskSample(
        completed_at=time.time(),
        agent=AGENT,
        ok=ok,
        status=status,
        llm_calls=1 if usage is not None else 0,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        cached_tokens=usage.cached_prompt_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        user_input_tokens=(usage.prompt_tokens if usage else 0) or request.input_length,
        final_output_tokens=usage.output_tokens if usage else 0,
        token_amplification=1.0 if ok else 0.0,
        task_ttft=None if first is None or not ok else first - sent,
        task_latency=now - sent,
        call_tpots=(result.timings.tpot,)
        if result is not None and result.timings.tpot is not None
        else (),
    )


class OpenAITraceUser(User):
    """Open-loop trace replay against an OpenAI-compatible server; -u 1 replays it all."""

    wait_time = constant(0)

    def on_start(self) -> None:
        config = trace_of(self.environment)
        self.index, self.users = _share(self.environment, config.next_slot())
        self.replayer = OpenAITraceReplayer(self.environment, self.host, config)
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
