"""The simulated engine's prefix cache against the real one: the same calls, sent one at
a time to vLLM's CPU build and replayed through the sim's `Scheduler`, report the same
cached prompt tokens per call.

vLLM 0.32's CPU build pages its KV cache in 128-token blocks (the CPU platform's default,
`vllm/platforms/cpu.py::check_and_update_config`, unless `block_size` is given), the sim
in 16-token blocks (vLLM's GPU default). 128 is a multiple of 16 and both cache exactly the
full blocks of computed tokens (prompt plus all but the last sampled token) and never
serve a prompt's last token from the cache, so the sim's hits rounded down to whole
128-token blocks are what a 128-token-block cache reports: that is the comparison. The
prompt lengths are chosen so that the last-token rules decide some calls' answers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from orchestrator.client import Client
from orchestrator.config import SimEngineConfig
from orchestrator.sim.build import build_replica
from orchestrator.sim.scheduler import Scheduler, SimRequest

pytestmark = pytest.mark.slow

VLLM_CPU_BLOCK_TOKENS = 128
VOCAB = 510  # the tiny test model's vocabulary
MAX_TOKENS = 8


@dataclass(frozen=True)
class Served:
    """One call as vLLM served it."""

    name: str
    prompt: tuple[int, ...]
    output: tuple[int, ...]
    cached: int  # cached_prompt_tokens vLLM reported


class Agent:
    """Sends calls to the live engine one at a time; prompts are built from fresh random
    tokens (nothing another test sent can match them) and earlier calls' outputs."""

    def __init__(self, client: Client, seed: int) -> None:
        self._client = client
        self._rng = random.Random(seed)
        self.calls: list[Served] = []

    def fresh(self, n: int) -> tuple[int, ...]:
        # Id 0 is BOS and 1 is EOS of the tiny model: keep the prompts plain text tokens.
        return tuple(self._rng.randrange(3, VOCAB) for _ in range(n))

    def send(self, name: str, prompt: tuple[int, ...]) -> Served:
        outputs = list(
            self._client.generate(list(prompt), max_tokens=MAX_TOKENS, ignore_eos=True, seed=7)
        )
        record = outputs[-1].call
        assert record is not None
        output = tuple(t for o in outputs for t in o.token_ids)
        assert len(output) == MAX_TOKENS
        assert record.usage.prompt_tokens == len(prompt)
        served = Served(name, prompt, output, record.usage.cached_prompt_tokens)
        self.calls.append(served)
        return served


def run_workload(agent: Agent) -> None:
    """A growing agent context, a fan-out of siblings under a shared parent, repeats."""
    step1 = agent.send("step1", agent.fresh(300))
    # Each step's prompt is the previous prompt, its output and a new instruction.
    step2 = agent.send("step2", step1.prompt + step1.output + agent.fresh(20))
    # step3's prompt plus output is exactly 384 = 3 blocks, but its last output token is
    # never computed: step4 finds only 2 of those blocks cached.
    step3 = agent.send("step3", step2.prompt + step2.output + agent.fresh(376 - 336))
    step4 = agent.send("step4", step3.prompt + step3.output + agent.fresh(40))
    # Siblings share step4's context and differ after it (each fills blocks of its own).
    parent = step4.prompt + step4.output
    for branch in range(3):
        agent.send(f"sibling{branch}", parent + agent.fresh(150 + 30 * branch))
    siblings = agent.calls[-3:]
    agent.send("join", parent + sum((s.output for s in siblings), ()) + agent.fresh(90))
    # Repeats: a whole cached prompt is served from the cache but for its last block.
    agent.send("repeat step1", step1.prompt)
    aligned = agent.send("aligned", agent.fresh(256))
    agent.send("repeat aligned", aligned.prompt)
    agent.send("repeat sibling1", siblings[1].prompt)


def sim_cached_tokens(calls: list[Served]) -> list[int]:
    """Replay the calls, one at a time, through a simulated replica with vLLM CPU's
    budgets (whole prompts per step) and a KV cache large enough never to evict."""
    scheduler: Scheduler = build_replica(
        SimEngineConfig(
            max_model_len=16384,
            max_num_seqs=64,
            max_num_batched_tokens=16384,
            enable_chunked_prefill=False,
        )
    )
    cached = []
    now = 0.0
    for i, call in enumerate(calls):
        request = SimRequest(f"c{i}", call.prompt, call.output, arrival=now)
        scheduler.add(request)
        while scheduler.has_work:
            result = scheduler.step(now)
            assert result is not None
            now = result.end
        assert request.cached_tokens is not None
        cached.append(request.cached_tokens)
    assert scheduler.kv.evictions == 0
    return cached


def whole_blocks(tokens: int, block: int) -> int:
    return tokens // block * block


def test_sim_and_vllm_agree_on_cached_prompt_tokens_per_call(live_server) -> None:  # type: ignore[no-untyped-def]
    with Client(live_server.address, timeout=120) as client:
        # Only a real engine makes this a cross-check (the default backend is the sim).
        assert {r.engine for r in client.cluster_status().replicas} == {"vllm"}
        agent = Agent(client, seed=0x51A1)
        run_workload(agent)
    sim = sim_cached_tokens(agent.calls)
    real = {c.name: c.cached for c in agent.calls}
    expected = {
        c.name: whole_blocks(s, VLLM_CPU_BLOCK_TOKENS)
        for c, s in zip(agent.calls, sim, strict=True)
    }
    assert real == expected, {c.name: (c.cached, s) for c, s in zip(agent.calls, sim, strict=True)}
    # The workload exercises the cache: every call after the first context hits it, and
    # the boundary cases land where the last-token rules put them.
    assert real["step1"] == 0 and real["aligned"] == 0
    assert real["step4"] == 256  # shares 384 tokens with step3, which computed 383
    assert real["repeat aligned"] == 128  # 256 tokens: the last one is recomputed
    assert all(real[f"sibling{b}"] == 384 for b in range(3)) and real["join"] == 384
