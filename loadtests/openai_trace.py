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
import time
from typing import Any

from loadtests.metrics import TaskSample
from loadtests.openai_http import CallFailure, OpenAIClient, StreamFold, completions_body
from loadtests.openai_user import COMPLETIONS, OpenAIOptions, TargetError, served_model
from loadtests.trace_user import ShareReplayer, TraceConfig, TraceUser, trace_sample
from orchestrator.domain import CallResult, Sampling
from orchestrator.workload.traces import TraceRequest, prompt_tokens

_ = locust  # imported first for its gevent monkey-patching


class OpenAITraceReplayer(ShareReplayer):
    """Sends one user's share of the trace as streaming completions (loadtests.trace_user's
    replay, this target's calls)."""

    def __init__(self, environment: Any, host: str | None, config: TraceConfig) -> None:
        super().__init__(environment, config)
        self.options = OpenAIOptions.of(environment, host)
        self.clients = [
            OpenAIClient(
                e,
                token=self.options.token,
                concurrency=config.max_outstanding,
                ca_file=self.options.tls_ca,
            )
            for e in self.options.endpoints
        ]
        self._turn = itertools.cycle(self.clients)  # several servers: each call the next
        self.model: str | None = None

    def close(self) -> None:
        super().close()
        for client in self.clients:
            client.close()

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
        first = fold.first_token_at
        sample = trace_sample(
            request,
            status,
            result.usage if result is not None else None,
            result.timings.tpot if result is not None else None,
            None if first is None or status != "OK" else first - sent,
            now - sent,
        )
        return self.record(sample, status, error, now - sent)


class OpenAITraceUser(TraceUser):
    """Open-loop trace replay against an OpenAI-compatible server; -u 1 replays it all."""

    def make_replayer(self, config: TraceConfig) -> ShareReplayer:
        return OpenAITraceReplayer(self.environment, self.host, config)
