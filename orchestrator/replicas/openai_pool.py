"""`OpenAIPool`: existing OpenAI-compatible servers as the replicas (`backend: openai`).

Each configured endpoint is one replica, routed by the same policies as Ray-hosted
ones. The endpoints are called from the orchestrator process itself (an HTTP call is
already asynchronous I/O; a Ray actor in between would add a hop to every call, see
benchmarks/README.md "OpenAI endpoints: in process or through a Ray actor"). Load
statistics are scraped from each server's `/metrics` every `stats_period_s` and health
from `/health` every `health_period_s`, in the background, so routing reads only local
state. A call that finds its endpoint unreachable marks it unhealthy at once (the
executor retries the call elsewhere); it is healthy again when `/health` answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator

import aiohttp

from orchestrator.config import ReplicasConfig
from orchestrator.domain import (
    CallDelta,
    CallRequest,
    CallResult,
    ClusterStatus,
    EngineStats,
    ErrorCode,
    ReplicaState,
)
from orchestrator.replicas.engine import EngineError
from orchestrator.replicas.openai_engine import OpenAIEndpoint, make_session, served_model
from orchestrator.replicas.views import replica_status, replica_view
from orchestrator.routing import ReplicaView

log = logging.getLogger(__name__)


class EndpointStartError(Exception):
    """An endpoint that cannot serve as a replica, said in one line."""


class _Endpoint:
    """The pool's mutable record of one endpoint; only the pool touches it."""

    def __init__(self, endpoint: OpenAIEndpoint) -> None:
        self.endpoint = endpoint
        self.state = ReplicaState.STARTING
        self.in_flight = 0
        self.last_error = ""
        self.stats: EngineStats | None = None
        self.max_model_len = 0


class OpenAIPool:
    def __init__(self, config: ReplicasConfig, *, send_priority: bool = False) -> None:
        self._config = config
        self._openai = config.openai
        self._send_priority = send_priority
        self._session: aiohttp.ClientSession | None = None
        self._endpoints: dict[str, _Endpoint] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._model = self._openai.model or ""
        self._max_model_len = 0

    @property
    def model(self) -> str:
        """The served model (known once started when none is configured)."""
        return self._model

    @property
    def max_model_len(self) -> int:
        """The smallest context length the endpoints serve (each is read at start)."""
        return self._max_model_len

    def _api_key(self) -> str | None:
        env = self._openai.api_key_env
        if env is None:
            return None
        key = os.environ.get(env)
        if not key:
            raise EndpointStartError(
                f"replicas.openai.api_key_env names {env}, which is not set in the environment"
            )
        return key

    async def start(self) -> None:
        """Wait for every endpoint to answer /v1/models with the model (or fail in one
        line, EndpointStartError), then start the background scrapes."""
        api_key = self._api_key()
        self._session = make_session()
        for url in self._openai.endpoints:
            endpoint = OpenAIEndpoint(
                url,
                self._session,
                api_key=api_key,
                request_timeout_s=self._openai.request_timeout_s,
                send_priority=self._send_priority,
            )
            self._endpoints[endpoint.name] = _Endpoint(endpoint)
        try:
            await asyncio.gather(*(self._connect(e) for e in self._endpoints.values()))
        except BaseException:
            await self.shutdown()
            raise
        self._max_model_len = min(e.max_model_len for e in self._endpoints.values())
        for record in self._endpoints.values():
            record.state = ReplicaState.READY
        self._tasks = [
            asyncio.create_task(self._stats_loop(), name="openai-stats"),
            asyncio.create_task(self._health_loop(), name="openai-health"),
        ]

    async def _connect(self, record: _Endpoint) -> None:
        endpoint = record.endpoint
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._openai.start_timeout_s
        last = "no answer"
        while True:
            try:
                models = await endpoint.models(timeout_s=max(deadline - loop.time(), 0.1))
                break
            except EngineError as exc:
                if exc.code is not ErrorCode.UNAVAILABLE:
                    raise EndpointStartError(f"endpoint {endpoint.url}: {exc.message}") from None
                last = exc.message
            if loop.time() >= deadline:
                raise EndpointStartError(
                    f"endpoint {endpoint.url} did not answer /v1/models within "
                    f"{self._openai.start_timeout_s:g} s (replicas.openai.start_timeout_s): {last}"
                )
            await asyncio.sleep(min(0.5, max(deadline - loop.time(), 0.0)))
        chosen = served_model(models, self._model or None)
        if chosen is None:
            served = ", ".join(m.id for m in models) or "none"
            raise EndpointStartError(
                f"endpoint {endpoint.url} does not serve model {self._model!r} "
                f"(it serves: {served})"
            )
        if not self._model:
            self._model = chosen.id
        elif chosen.id != self._model:  # pragma: no cover - served_model matched it
            raise EndpointStartError(f"endpoint {endpoint.url} serves {chosen.id!r}")
        endpoint.model = self._model
        record.max_model_len = chosen.max_model_len or self._openai.max_model_len

    def views(self) -> list[ReplicaView]:
        """Routing's view of every endpoint, from local state only."""
        return [
            replica_view(name, r.state, r.in_flight, r.stats) for name, r in self._endpoints.items()
        ]

    def _record(self, replica_name: str) -> _Endpoint:
        record = self._endpoints.get(replica_name)
        if record is None:
            raise EngineError(ErrorCode.UNAVAILABLE, f"no endpoint named {replica_name}")
        return record

    async def call(self, replica_name: str, call: CallRequest) -> CallResult:
        """Run one call to completion on the named endpoint."""
        record = self._record(replica_name)
        record.in_flight += 1
        try:
            async with contextlib.aclosing(record.endpoint.generate(call, stream=False)) as items:
                async for item in items:
                    if isinstance(item, CallResult):
                        return item
            raise EngineError(ErrorCode.INTERNAL, "the call ended without a result")
        except EngineError as exc:
            self._failed(record, exc)
            raise
        finally:
            record.in_flight -= 1

    async def stream(
        self, replica_name: str, call: CallRequest
    ) -> AsyncGenerator[CallDelta | CallResult, None]:
        """Run one call on the named endpoint, yielding its deltas and then its result."""
        record = self._record(replica_name)
        record.in_flight += 1
        try:
            # Closed however this generator ends, so the HTTP stream (and the request in
            # the server) ends with it.
            async with contextlib.aclosing(record.endpoint.generate(call, stream=True)) as items:
                async for item in items:
                    yield item
        except EngineError as exc:
            self._failed(record, exc)
            raise
        finally:
            record.in_flight -= 1

    def _failed(self, record: _Endpoint, exc: EngineError) -> None:
        # An unreachable endpoint takes no more calls until /health answers again.
        if exc.code is ErrorCode.UNAVAILABLE and record.state is ReplicaState.READY:
            log.warning("endpoint %s marked unhealthy: %s", record.endpoint.name, exc.message)
            record.state = ReplicaState.UNHEALTHY
            record.last_error = exc.message

    async def status(self) -> ClusterStatus:
        """Status from the last scrape of each endpoint (at most stats_period_s old)."""
        out = tuple(
            replica_status(
                name,
                r.state,
                r.in_flight,
                r.last_error,
                r.stats,
                engine="openai",
                model=self._model,
                node=r.endpoint.url,
            )
            for name, r in self._endpoints.items()
        )
        return ClusterStatus(replicas=out, model=self._model, max_model_len=self.max_model_len)

    async def _scrape(self, record: _Endpoint) -> None:
        try:
            record.stats = await record.endpoint.stats(
                record.stats, timeout_s=max(self._config.stats_period_s, 2.0)
            )
        except EngineError as exc:
            # Health is /health's call; a failed scrape keeps the last numbers.
            log.debug("scrape of %s failed: %s", record.endpoint.name, exc.message)

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.gather(
                *(
                    self._scrape(r)
                    for r in self._endpoints.values()
                    if r.state is not ReplicaState.STOPPED
                )
            )
            await asyncio.sleep(self._config.stats_period_s)

    async def _check(self, record: _Endpoint) -> None:
        ok = await record.endpoint.healthy(timeout_s=max(self._config.health_period_s, 2.0))
        if ok and record.state is ReplicaState.UNHEALTHY:
            log.info("endpoint %s is healthy again", record.endpoint.name)
            record.state = ReplicaState.READY
            record.last_error = ""
        elif not ok and record.state is ReplicaState.READY:
            log.warning("endpoint %s failed its health check", record.endpoint.name)
            record.state = ReplicaState.UNHEALTHY
            record.last_error = "health check failed: /health did not answer 200"

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.health_period_s)
            await asyncio.gather(
                *(
                    self._check(r)
                    for r in self._endpoints.values()
                    if r.state is not ReplicaState.STOPPED
                )
            )

    async def shutdown(self) -> None:
        """Stop the background scrapes and close the HTTP session (the servers stay)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None
        for record in self._endpoints.values():
            record.state = ReplicaState.STOPPED
