"""Every built-in agent pattern, end to end over gRPC on vLLM's CPU build: its measured
token amplification matches the expectation computed from the program.

Synthetic mode makes a task's token counts a function of its seed, so each pattern runs
a fixed set of seeds (range(n)); n is large enough that the sample mean of the noisiest
patterns (loops with drawn iteration counts, heavy-tailed tool outputs) has a standard
error around 5%."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from transformers import AutoTokenizer

from agents import BUILTIN_PROGRAMS
from orchestrator.client import AsyncClient, TaskResult
from orchestrator.domain import TaskSpec
from orchestrator.executor.estimate import dry_run, expect
from orchestrator.executor.interpreter import Encoder, Interpreter

pytestmark = pytest.mark.slow

INPUT = "Find out why our agent fleet needs twice the GPUs we planned, and fix it."
TASKS = {
    "chat": 8,
    "react": 96,
    "plan_execute": 4,
    "map_reduce": 16,
    "self_consistency": 8,
    "tree_of_thoughts": 8,
    "reflexion": 96,
    "multi_agent_debate": 8,
    "coding_agent": 48,
}


def test_every_builtin_pattern_is_covered() -> None:
    assert set(TASKS) == set(BUILTIN_PROGRAMS)


@pytest.fixture(scope="module")
def encoder(live_server):  # type: ignore[no-untyped-def]
    tokenizer = AutoTokenizer.from_pretrained(live_server.model_dir)
    return Encoder(
        lambda text: list(tokenizer.encode(text, add_special_tokens=False)),
        tokenizer.bos_token_id,
    )


async def _run_all(address: str, agent: str, n: int) -> list[TaskResult]:
    gate = asyncio.Semaphore(16)
    async with AsyncClient(address, timeout=600) as client:

        async def one(seed: int) -> TaskResult:
            async with gate:
                return await client.run(agent, INPUT, seed=seed)

        return list(await asyncio.gather(*(one(seed) for seed in range(n))))


@pytest.mark.parametrize("agent", sorted(TASKS))
def test_pattern_amplification_matches_the_expectation(live_server, encoder, agent) -> None:  # type: ignore[no-untyped-def]
    interpreter = Interpreter(BUILTIN_PROGRAMS[agent], encoder)
    spec = TaskSpec(agent=agent, input=INPUT)
    results = asyncio.run(_run_all(live_server.address, agent, TASKS[agent]))

    # Exact, task by task: the engine's counts equal the program's synthetic shape.
    for seed, result in enumerate(results):
        shape = dry_run(interpreter, spec, seed)
        usage = result.usage
        assert usage.llm_calls == shape.llm_calls, (agent, seed)
        assert usage.tool_calls == shape.tool_calls, (agent, seed)
        assert usage.prompt_tokens_total == shape.prompt_tokens, (agent, seed)
        assert usage.output_tokens_total == shape.output_tokens, (agent, seed)

    # On average: within 10% of the Monte Carlo expectation (other seeds).
    expected = expect(interpreter, spec, samples=2000, seed=100_000)
    measured = float(np.mean([r.usage.token_amplification for r in results]))
    assert measured == pytest.approx(expected.token_amplification, rel=0.10), (
        agent,
        measured,
        expected.token_amplification,
    )
    calls = float(np.mean([r.usage.llm_calls for r in results]))
    assert calls == pytest.approx(expected.llm_calls, rel=0.10)
