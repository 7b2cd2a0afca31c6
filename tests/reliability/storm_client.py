"""A client in a process of its own for the cancellation scenarios, so that its work
(up to thousands of streams) does not compete with the in-process server for the GIL.

    python -m tests.reliability.storm_client ADDRESS TASKS STEP

It starts TASKS plan_execute tasks at once on one channel and prints `running K A R`
whenever one of its counts changes (at most every 0.1 s): K tasks with a call of step
STEP started, A tasks accepted (admitted; TaskAccepted seen), R refused or failed. On a
line on stdin it cancels every stream at once and prints `cancelled T K` (T: the
time.monotonic() just before the first cancel, comparable across processes on Linux),
then `done F R` once every stream ended (F: tasks that finished before the cancel
reached them, R: refused or failed)."""

from __future__ import annotations

import asyncio
import sys
import time

from orchestrator.client import AsyncClient, InflectionError, StepStarted, TaskAccepted

STEP_MAX_TOKENS = {"planner": 256, "worker": 256, "synthesizer": 256}


async def main(address: str, tasks: int, step: str) -> None:
    running = accepted = finished = refused = 0

    async def one(client: AsyncClient, i: int) -> None:
        nonlocal running, accepted, finished, refused
        seen = False
        try:
            async for event in client.run_task(
                "plan_execute", f"Storm {i}.", step_max_tokens=STEP_MAX_TOKENS
            ):
                if isinstance(event, TaskAccepted):
                    accepted += 1
                if not seen and isinstance(event, StepStarted) and event.step == step:
                    seen = True
                    running += 1
        except InflectionError:
            refused += 1
            return
        finished += 1

    async def report() -> None:
        shown = None
        while True:
            if (running, accepted, refused) != shown:
                shown = (running, accepted, refused)
                print(f"running {running} {accepted} {refused}", flush=True)
            await asyncio.sleep(0.1)

    async with AsyncClient(address) as client:
        consumers = [asyncio.create_task(one(client, i)) for i in range(tasks)]
        reporter = asyncio.create_task(report())
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        cancelled = time.monotonic()
        for consumer in consumers:
            consumer.cancel()
        reporter.cancel()
        print(f"cancelled {cancelled!r} {running}", flush=True)
        await asyncio.gather(*consumers, reporter, return_exceptions=True)
        print(f"done {finished} {refused}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
