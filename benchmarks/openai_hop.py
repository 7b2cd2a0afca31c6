"""Where should an OpenAI endpoint replica live: in the orchestrator process, or in a Ray
actor that makes the HTTP call for it? (README "Existing OpenAI-compatible servers as
replicas").

The same call (`OpenAIEndpoint.generate`, whole result) to one running server, made
(a) directly from this asyncio process and (b) through an async Ray actor that makes
the identical HTTP call, in alternating rounds: sequential calls (latency per call) and
`--concurrency` calls at a time (calls/s). Prints both sides and their ratio.

    python -m vllm.entrypoints.openai.api_server --model DIR --port 8011 ... &
    python -m benchmarks.openai_hop --url http://127.0.0.1:8011 --calls 200
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from orchestrator.domain import CallRequest, CallResult, Sampling
from orchestrator.replicas.openai_engine import OpenAIEndpoint, make_session

DIRECT = "in process"
ACTOR = "Ray actor"


class EndpointActor:
    """An async Ray actor that owns one endpoint and makes the HTTP call for the caller."""

    def __init__(self, url: str, model: str) -> None:
        self._url = url
        self._model = model
        self._endpoint: OpenAIEndpoint | None = None

    async def _get(self) -> OpenAIEndpoint:
        if self._endpoint is None:
            session = make_session()
            self._endpoint = OpenAIEndpoint(self._url, session)
            self._endpoint.model = self._model
        return self._endpoint

    async def call(self, request: CallRequest) -> CallResult:
        return await _whole(await self._get(), request)


async def _whole(endpoint: OpenAIEndpoint, request: CallRequest) -> CallResult:
    async for item in endpoint.generate(request, stream=False):
        if isinstance(item, CallResult):
            return item
    raise RuntimeError("no result")


def _request(index: int, prompt_tokens: int, max_tokens: int) -> CallRequest:
    # The same prompt every time: the prefix cache serves it, so the server's own work
    # is small and the hop is what differs.
    prompt = tuple(1 + (i % 250) for i in range(prompt_tokens))
    return CallRequest(
        f"hop-{index}", prompt, Sampling(max_tokens=max_tokens, ignore_eos=True, seed=index)
    )


async def _sequential(
    one: Callable[[CallRequest], Awaitable[CallResult]], n: int, args: Any
) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await one(_request(i, args.prompt_tokens, args.max_tokens))
        out.append(time.perf_counter() - t0)
    return out


async def _concurrent(
    one: Callable[[CallRequest], Awaitable[CallResult]], n: int, args: Any
) -> float:
    gate = asyncio.Semaphore(args.concurrency)

    async def run(i: int) -> None:
        async with gate:
            await one(_request(i, args.prompt_tokens, args.max_tokens))

    t0 = time.perf_counter()
    await asyncio.gather(*(run(i) for i in range(n)))
    return n / (time.perf_counter() - t0)


async def main(args: argparse.Namespace) -> None:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    session = make_session()
    try:
        direct = OpenAIEndpoint(args.url, session)
        models = await direct.models()
        direct.model = models[0].id
        remote_cls: Any = ray.remote(EndpointActor)
        actor: Any = remote_cls.options(max_concurrency=10_000).remote(args.url, direct.model)

        async def via_direct(request: CallRequest) -> CallResult:
            return await _whole(direct, request)

        async def via_actor(request: CallRequest) -> CallResult:
            result: CallResult = await actor.call.remote(request)
            return result

        sides = {DIRECT: via_direct, ACTOR: via_actor}
        for one in sides.values():  # warm-up: connections, the actor, the prefix cache
            await _sequential(one, 10, args)
        latencies: dict[str, list[float]] = {side: [] for side in sides}
        rates: dict[str, list[float]] = {side: [] for side in sides}
        per_round = max(args.calls // args.rounds, 1)
        for _ in range(args.rounds):
            for side, one in sides.items():
                latencies[side] += await _sequential(one, per_round, args)
                rates[side].append(await _concurrent(one, per_round, args))
        print(
            f"{args.rounds} alternating rounds of {per_round} calls per side; prompt "
            f"{args.prompt_tokens} tokens, {args.max_tokens} output tokens; "
            f"concurrency {args.concurrency}"
        )
        print(f"{'':28}{DIRECT:>12}{ACTOR:>12}{'ratio':>8}")
        rows = {
            "sequential p50 (ms)": {s: statistics.median(v) * 1e3 for s, v in latencies.items()},
            "sequential mean (ms)": {s: statistics.fmean(v) * 1e3 for s, v in latencies.items()},
            "concurrent (calls/s)": {s: statistics.median(v) for s, v in rates.items()},
        }
        for label, row in rows.items():
            a, b = row[DIRECT], row[ACTOR]
            print(f"{label:28}{a:12.2f}{b:12.2f}{b / a:8.2f}")
    finally:
        await session.close()
        ray.shutdown()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="base URL of a running server")
    parser.add_argument("--calls", type=int, default=200, help="calls per side, all rounds")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=8)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
