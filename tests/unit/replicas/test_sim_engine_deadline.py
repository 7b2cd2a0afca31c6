"""A simulated call's deadline bounds each wait for the engine, never its consumer: a
consumer suspended between deltas when the deadline passes (the replica actor handing a
delta to Ray) gets DEADLINE_EXCEEDED, and is not itself cancelled (issue 10, item 14)."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.config import SimEngineConfig
from orchestrator.domain import CallRequest, ErrorCode, Sampling
from orchestrator.replicas.engine import EngineError
from orchestrator.replicas.sim_engine import SimEngine


async def test_deadline_passing_while_the_consumer_is_busy_fails_the_call() -> None:
    engine = SimEngine(SimEngineConfig(time_scale=1.0))
    await engine.start()
    try:
        request = CallRequest(
            "slow-reader",
            tuple(range(1000, 1256)),
            Sampling(max_tokens=10_000, ignore_eos=True),
            deadline_s=0.1,
        )
        deltas = 0
        with pytest.raises(EngineError) as failed:
            async with asyncio.timeout(5):
                async for _ in engine.generate(request):
                    deltas += 1
                    await asyncio.sleep(0.03)  # the consumer is busy elsewhere
        assert failed.value.code is ErrorCode.DEADLINE_EXCEEDED
        assert deltas > 0
        assert engine.stats().unfinished_requests == 0
    finally:
        await engine.shutdown()
