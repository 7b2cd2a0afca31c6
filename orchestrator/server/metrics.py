"""Prometheus metrics: `/metrics` on `server.metrics_port` (README "Metrics").

`Metrics` is the executor's `Observer` (tasks and calls as they end, routing decisions)
and, at each scrape, reads the replicas' status and admission's queue into gauges. It
keeps its own registry, so nothing else in the process (Ray, vLLM, a test's second
server) can clash with its names. Names follow Prometheus' conventions: an `inflection_`
prefix, base units (`_seconds`, ratios 0..1), `_total` on counters.
"""

from __future__ import annotations

import hmac
import logging
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from orchestrator.domain import CallResult, ClusterStatus, ReplicaState, TaskUsage
from orchestrator.executor.observer import TaskOutcome

log = logging.getLogger(__name__)

# Seconds: from a 10 ms call to a 10-minute agent task.
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Seconds per output token: 1 ms (a fast GPU) to 1 s (a CPU engine under load).
_TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# Token amplification (tokens processed per user-input token) and calls per task.
_AMPLIFICATION_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_CALLS_BUCKETS = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89)


class Metrics:
    """The orchestrator's metrics in a registry of its own (module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.tasks = Counter(
            "inflection_tasks",
            "Tasks ended, by agent program and outcome (ok, cancelled, or the failure's "
            "status: resource_exhausted is admission refusing it).",
            ["agent", "outcome"],
            registry=r,
        )
        self.task_latency = Histogram(
            "inflection_task_latency_seconds",
            "Completed tasks: accepted -> completed.",
            ["agent"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.task_ttft = Histogram(
            "inflection_task_ttft_seconds",
            "Completed tasks: accepted -> first answer token.",
            ["agent"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.task_amplification = Histogram(
            "inflection_task_token_amplification",
            "Completed tasks: tokens processed by every call / the user's input tokens.",
            ["agent"],
            buckets=_AMPLIFICATION_BUCKETS,
            registry=r,
        )
        self.task_calls = Histogram(
            "inflection_task_llm_calls",
            "Completed tasks: LLM calls per task.",
            ["agent"],
            buckets=_CALLS_BUCKETS,
            registry=r,
        )
        self.task_tokens = Counter(
            "inflection_task_tokens",
            "Tokens of every task that ended (failed ones' partial usage included), by "
            "kind: prompt, cached (of prompt), output.",
            ["agent", "kind"],
            registry=r,
        )
        self.calls = Counter(
            "inflection_calls",
            "LLM calls ended, by replica and outcome.",
            ["replica", "outcome"],
            registry=r,
        )
        self.routed = Counter(
            "inflection_routing_decisions",
            "Calls (and retries) the router sent to each replica.",
            ["replica"],
            registry=r,
        )
        self.call_ttft = Histogram(
            "inflection_call_ttft_seconds",
            "Completed calls: engine arrival -> first output token.",
            ["replica"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.call_tpot = Histogram(
            "inflection_call_tpot_seconds",
            "Completed calls of 2+ output tokens: time per output token after the first.",
            ["replica"],
            buckets=_TPOT_BUCKETS,
            registry=r,
        )
        self.call_queue = Histogram(
            "inflection_call_queue_seconds",
            "Completed calls: engine arrival -> first scheduled.",
            ["replica"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        replica = ["replica"]
        self.replica_up = Gauge(
            "inflection_replica_healthy",
            "1 while the replica serves calls, else 0.",
            replica,
            registry=r,
        )
        self.replica_waiting = Gauge(
            "inflection_replica_waiting_requests",
            "Requests in the engine's waiting queue.",
            replica,
            registry=r,
        )
        self.replica_running = Gauge(
            "inflection_replica_running_requests",
            "Requests the engine is running.",
            replica,
            registry=r,
        )
        self.replica_in_flight = Gauge(
            "inflection_replica_in_flight_calls",
            "Calls the orchestrator has outstanding on the replica.",
            replica,
            registry=r,
        )
        self.replica_kv = Gauge(
            "inflection_replica_kv_usage_ratio",
            "Share of the engine's KV cache in use, 0..1.",
            replica,
            registry=r,
        )
        self.replica_hits = Gauge(
            "inflection_replica_prefix_hit_ratio",
            "The engine's prefix-cache hit rate over prompt tokens so far, 0..1.",
            replica,
            registry=r,
        )
        self.replica_replacements = Gauge(
            "inflection_replica_replacements",
            "Times the pool replaced the replica's dead actor since it started (a count "
            "kept by the pool, so exported as a gauge that only grows).",
            replica,
            registry=r,
        )
        self.admission_queued = Gauge(
            "inflection_admission_queued_tasks",
            "Tasks waiting for admission.",
            registry=r,
        )
        self.admission_refused = Gauge(
            "inflection_admission_refused_tasks",
            "Tasks admission refused since the server started (RESOURCE_EXHAUSTED; a count "
            "kept by admission, so a gauge that only grows).",
            registry=r,
        )
        self.admission_wait_limit = Gauge(
            "inflection_admission_wait_limit_seconds",
            "How long a task may wait for admission while tasks arrive faster than they leave "
            "(+Inf: no limit).",
            registry=r,
        )

    # ---- the executor's Observer ----

    def task_ended(self, agent: str, outcome: TaskOutcome, usage: TaskUsage | None) -> None:
        self.tasks.labels(agent, outcome.value).inc()
        if usage is not None:
            self.task_tokens.labels(agent, "prompt").inc(usage.prompt_tokens_total)
            self.task_tokens.labels(agent, "cached").inc(usage.cached_tokens_total)
            self.task_tokens.labels(agent, "output").inc(usage.output_tokens_total)
        if outcome is not TaskOutcome.OK or usage is None:
            return
        self.task_latency.labels(agent).observe(usage.task_latency)
        if usage.task_ttft > 0:
            self.task_ttft.labels(agent).observe(usage.task_ttft)
        self.task_amplification.labels(agent).observe(usage.token_amplification)
        self.task_calls.labels(agent).observe(usage.llm_calls)

    def call_routed(self, replica: str) -> None:
        self.routed.labels(replica).inc()

    def call_ended(self, replica: str, result: CallResult | None, outcome: TaskOutcome) -> None:
        self.calls.labels(replica, outcome.value).inc()
        if result is None:
            return
        timings = result.timings
        self.call_ttft.labels(replica).observe(timings.ttft)
        self.call_queue.labels(replica).observe(timings.queue_time)
        if timings.tpot is not None:
            self.call_tpot.labels(replica).observe(timings.tpot)

    # ---- at each scrape ----

    def read_status(self, status: ClusterStatus) -> None:
        """The replicas' gauges from a fresh ClusterStatus."""
        for replica in status.replicas:
            name = replica.name
            self.replica_up.labels(name).set(1 if replica.state is ReplicaState.READY else 0)
            self.replica_waiting.labels(name).set(replica.waiting_requests)
            self.replica_running.labels(name).set(replica.running_requests)
            self.replica_in_flight.labels(name).set(replica.in_flight_calls)
            self.replica_kv.labels(name).set(replica.kv_usage)
            self.replica_hits.labels(name).set(replica.prefix_hit_rate)
            self.replica_replacements.labels(name).set(replica.replacements)

    def read_admission(self, queued: int, refused: int, wait_limit_s: float) -> None:
        self.admission_queued.set(queued)
        self.admission_refused.set(refused)
        self.admission_wait_limit.set(wait_limit_s)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


async def serve_metrics(
    metrics: Metrics,
    refresh: Callable[[], Awaitable[None]],
    host: str,
    port: int,
    *,
    auth_token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[web.AppRunner, int]:
    """Serve GET /metrics on host:port; `refresh` updates the scrape-time gauges first;
    with `auth_token`, a scrape without `Authorization: Bearer TOKEN` gets 401. Returns
    the runner (cleanup() stops it) and the bound port (port 0: ephemeral)."""
    expected = f"Bearer {auth_token}".encode() if auth_token is not None else None

    async def handle(request: web.Request) -> web.Response:
        if expected is not None:
            sent = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(sent, expected):
                return web.Response(
                    status=401,
                    text="send the server's token: Authorization: Bearer TOKEN\n",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        try:
            await refresh()
        except Exception:  # a scrape still answers with what it has
            log.warning("metrics: reading the replicas' status failed", exc_info=True)
        return web.Response(
            body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=False, ssl_context=ssl_context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)
