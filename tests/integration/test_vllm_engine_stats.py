"""The load figures the live engine (the session's shared vLLM CPU replica) reports for
routing: scheduler counts, the prefix cache and the KV cache."""

from __future__ import annotations

import time

import pytest

from orchestrator.domain import CallRequest, EngineStats, Sampling


@pytest.mark.slow
def test_the_live_engine_reports_its_scheduler_and_prefix_cache(live_server) -> None:  # type: ignore[no-untyped-def]
    import ray

    # The shared replica's actor (ReplicaPool names it; the session joined its namespace).
    actor = ray.get_actor("inflection-replica-0", namespace="inflection")

    def stats() -> EngineStats:
        result: EngineStats = ray.get(actor.stats.remote(), timeout=30)
        return result

    # 400 tokens no other test sends (the tiny model's vocabulary is 512).
    prompt = tuple(3 + (i * 7) % 500 for i in range(400))
    assert len(prompt) + 4 <= live_server.max_model_len
    before = stats()
    block = before.kv_block_tokens
    assert block == 128  # vLLM's CPU build
    assert before.kv_capacity_blocks > 0
    for n in range(2):
        request = CallRequest(
            call_id=f"stats-{time.monotonic_ns()}-{n}",
            prompt_token_ids=prompt,
            sampling=Sampling(max_tokens=4, ignore_eos=True),
        )
        result = ray.get(actor.generate.remote(request), timeout=120)
        assert result.usage.output_tokens == 4
    # The second call reuses the first one's full blocks; at most len - 1 tokens can
    # hit (the last one is recomputed to sample from it).
    hits = (len(prompt) - 1) // block * block
    assert result.usage.cached_prompt_tokens == hits

    # Scheduler stats reach the engine's logger after each step's outputs: poll briefly.
    deadline = time.monotonic() + 2.0
    after = stats()
    while after.prefix_hits - before.prefix_hits < hits and time.monotonic() < deadline:
        time.sleep(0.05)
        after = stats()
    # Per-step deltas summed: both prompts looked up once each, the second one hit.
    assert after.prefix_queries - before.prefix_queries == 2 * len(prompt)
    assert after.prefix_hits - before.prefix_hits == hits
    assert after.prefix_queries >= after.prefix_hits > 0
    assert 0.0 < after.prefix_hit_rate <= 1.0
    assert 0.0 <= after.kv_usage <= 1.0
    assert after.waiting_requests == after.running_requests == 0  # both calls finished
    assert after.kv_block_tokens == block
    assert after.kv_capacity_blocks == before.kv_capacity_blocks
    assert after.evicted_blocks == 0  # vLLM does not report evictions
