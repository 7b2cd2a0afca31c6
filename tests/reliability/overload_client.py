"""An open-loop load in a process of its own for the overload scenario: tasks arrive at
RATE a second (Poisson) for SECONDS, whatever happens to the ones before, as users
of a service do; its work does not compete with the in-process server for the GIL.

    python -m tests.reliability.overload_client ADDRESS RATE SECONDS [CONCURRENCY]

With CONCURRENCY, it is a closed loop instead: that many tasks always in flight, a new
one as each ends, a refused one after the retry-after hint (up to 1 s): the probe that
finds the capacity. It prints one JSON line: the
tasks offered, completed, refused (RESOURCE_EXHAUSTED, and how many carried a
retry-after hint), failed otherwise, the completed tasks' latencies (p50, p99) and
their throughput in the steady state (completions from WARMUP_S to the last arrival)."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import numpy as np
import orjson

from orchestrator.client import AsyncClient, InflectionError

AGENT = "plan_execute"
MAX_TOKENS = 128
WARMUP_S = 3.0


async def main(address: str, rate: float, seconds: float, concurrency: int | None) -> None:
    latencies: list[float] = []
    ends: list[float] = []  # completions, seconds from the start
    refused = hinted = failed = offered = 0
    errors: dict[str, int] = {}
    started = time.monotonic()
    last_done = started

    async def one(client: AsyncClient, i: int) -> float:
        """One task; the retry-after hint it was refused with, else 0."""
        nonlocal refused, hinted, failed, last_done
        t0 = time.monotonic()
        try:
            await client.run(AGENT, f"Overload {i}.", max_tokens=MAX_TOKENS)
        except InflectionError as exc:
            if exc.code.name == "RESOURCE_EXHAUSTED":
                refused += 1
                hinted += exc.retry_after_s is not None and exc.retry_after_s > 0
                return exc.retry_after_s or 0.0
            failed += 1
            errors[exc.code.name] = errors.get(exc.code.name, 0) + 1
            return 0.0
        now = time.monotonic()
        latencies.append(now - t0)
        ends.append(now - started)
        last_done = max(last_done, now)
        return 0.0

    async with AsyncClient(address, timeout=300) as client:
        tasks: list[asyncio.Task[Any]] = []
        if concurrency is None:
            rng = np.random.default_rng(7)
            at = started
            while at - started < seconds:
                at += float(rng.exponential(1.0 / rate))
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                tasks.append(asyncio.create_task(one(client, offered)))
                offered += 1
        else:

            async def loop(k: int) -> None:
                nonlocal offered
                while time.monotonic() - started < seconds:
                    offered += 1
                    # A refused client waits as told (up to a second), as a good one does.
                    await asyncio.sleep(min(await one(client, offered), 1.0))

            tasks = [asyncio.create_task(loop(k)) for k in range(concurrency)]
        await asyncio.gather(*tasks)
    # Throughput in the steady state: completions from WARMUP_S to the end of arrivals.
    steady = sum(WARMUP_S <= end <= seconds for end in ends) / (seconds - WARMUP_S)
    p50, p99 = np.percentile(latencies, (50, 99)).tolist() if latencies else (0.0, 0.0)
    summary = {
        "offered": offered,
        "completed": len(latencies),
        "refused": refused,
        "refused_with_hint": hinted,
        "failed": failed,
        "errors": errors,
        "p50_s": p50,
        "p99_s": p99,
        "throughput": steady,
        "drained_s": last_done - started,
    }
    print(orjson.dumps(summary).decode(), flush=True)


if __name__ == "__main__":
    concurrency = int(sys.argv[4]) if len(sys.argv) > 4 else None
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), concurrency))
