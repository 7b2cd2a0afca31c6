"""`ReplicaActor`: a Ray async actor hosting one engine.

Unary calls return the whole `CallResult` (with usage and engine-side timings) in one
Ray reply: streaming every token through Ray costs more than the engine producing it
(docs/reference.md), so only the final answer of a task streams, through `generate_stream`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from orchestrator.config import Backend, ReplicasConfig
from orchestrator.domain import (
    CallDelta,
    CallRequest,
    CallResult,
    CallTimings,
    CallUsage,
    EngineStats,
    FinishReason,
)
from orchestrator.replicas.engine import Engine

# Longest a streamed delta waits to be coalesced with the next ones.
STREAM_INTERVAL_S = 0.02
# How many ids of calls aborted before they reached this actor are remembered (Ray does
# not promise an async actor runs a caller's calls in the order they were sent, so a
# batch of aborts may overtake a call). Most are of calls that had already ended and
# never come; the oldest are forgotten first.
MAX_EARLY_ABORTS = 65_536


def aborted_before_start(call: CallRequest) -> CallResult:
    """The result of a call aborted before it reached the engine: nothing generated."""
    return CallResult(
        call_id=call.call_id,
        token_ids=(),
        text="",
        finish_reason=FinishReason.ABORT,
        usage=CallUsage(prompt_tokens=0, cached_prompt_tokens=0, output_tokens=0),
        timings=CallTimings(queue_time=0.0, ttft=0.0, tpot=None, itl=(), e2e=0.0),
    )


@dataclass(slots=True, frozen=True)
class ReplicaInfo:
    """What a replica reports once its engine is up."""

    name: str
    engine: str
    model: str
    node: str  # Ray node id
    max_model_len: int


class ReplicaActor:
    """Wrapped with `ray.remote` by the pool (which sets resources and placement)."""

    def __init__(self, name: str, config: ReplicasConfig, model: str) -> None:
        self._name = name
        self._config = config
        # vLLM: the model path or id; sim: the display name of the simulated model.
        self._model = model
        self._engine: Engine | None = None
        self._running: set[str] = set()  # ids of the calls the engine serves now
        # Ids aborted while not running here (insertion-ordered, bounded).
        self._early_aborts: dict[str, None] = {}

    async def start(self) -> ReplicaInfo:
        import ray

        engine: Engine
        if self._config.backend is Backend.SIM:
            from orchestrator.replicas.sim_engine import SimEngine

            engine = SimEngine(self._config.sim)
        else:
            engine = await self._vllm_engine()
        await engine.start()
        self._engine = engine
        return ReplicaInfo(
            name=self._name,
            engine=engine.name,
            model=self._model,
            node=ray.get_runtime_context().get_node_id(),
            max_model_len=engine.max_model_len,
        )

    async def _vllm_engine(self) -> Engine:
        from orchestrator.replicas.vllm_engine import VllmEngine

        config = self._config.engine
        # The config decides, not whatever the Ray worker inherited.
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(config.cpu_kvcache_space_gib)
        if config.model is None:
            # The tiny model is generated per node, so replicas on other machines of a
            # Ray cluster find it too (idempotent; a built copy is reused).
            from pathlib import Path

            from orchestrator.replicas.tiny_model import build_tiny_model

            await asyncio.to_thread(build_tiny_model, Path(self._model))
        return VllmEngine(config, self._model)

    def _require(self) -> Engine:
        if self._engine is None:
            raise RuntimeError(f"replica {self._name} has not started")
        return self._engine

    def _begin(self, call: CallRequest) -> bool:
        """Mark a call running; False when its abort arrived first."""
        if call.call_id in self._early_aborts:
            del self._early_aborts[call.call_id]
            return False
        self._running.add(call.call_id)
        return True

    async def generate(self, call: CallRequest) -> CallResult:
        engine = self._require()
        if not self._begin(call):
            return aborted_before_start(call)
        try:
            async for item in engine.generate(call, stream=False):
                if isinstance(item, CallResult):
                    return item
        finally:
            self._running.discard(call.call_id)
        raise RuntimeError(f"engine ended call {call.call_id} without a result")

    async def generate_stream(self, call: CallRequest) -> AsyncIterator[CallDelta | CallResult]:
        """Deltas coalesced to at most one per STREAM_INTERVAL_S (the first one goes out
        at once, so TTFT is untouched), then the result. Each Ray stream item costs far
        more CPU than a token; a client watching text gains nothing from 1 ms spacing."""
        engine = self._require()
        if not self._begin(call):
            yield aborted_before_start(call)
            return
        ids: list[int] = []
        texts: list[str] = []
        sent_at: float | None = None
        try:
            async for item in engine.generate(call):
                if isinstance(item, CallResult):
                    if ids:
                        yield CallDelta(tuple(ids), "".join(texts))
                    yield item
                    return
                ids.extend(item.token_ids)
                texts.append(item.text)
                now = time.monotonic()
                if sent_at is None or now - sent_at >= STREAM_INTERVAL_S:
                    yield CallDelta(tuple(ids), "".join(texts))
                    ids.clear()
                    texts.clear()
                    sent_at = now
        finally:
            self._running.discard(call.call_id)

    async def abort(self, call_id: str) -> None:
        await self.abort_many([call_id])

    async def abort_many(self, call_ids: list[str]) -> None:
        """Abort a batch of calls (the pool sends a replica's aborts this way): the
        running ones in one engine abort, each ending with finish reason ABORT; the
        others are remembered, so a call arriving after its abort never runs."""
        engine = self._require()
        running = [c for c in call_ids if c in self._running]
        if len(running) < len(call_ids):
            early = self._early_aborts
            for call_id in call_ids:
                if call_id not in self._running:
                    early[call_id] = None
            while len(early) > MAX_EARLY_ABORTS:
                del early[next(iter(early))]
        if running:
            await engine.abort_many(running)

    async def stats(self) -> EngineStats:
        return self._require().stats()

    async def ping(self) -> str:
        """Liveness: answers as soon as the actor's event loop runs, engine or not, so a
        slow stats read is never mistaken for a dead replica."""
        return self._name

    async def shutdown(self) -> None:
        if self._engine is not None:
            await self._engine.shutdown()
            self._engine = None
