"""Config -> vLLM AsyncEngineArgs keywords (pure; vLLM is not imported), and the load
figures the live engine (the session's shared vLLM CPU replica) reports for routing."""

from __future__ import annotations

import time

import pytest

from orchestrator.config import SchedulingPolicy, VllmEngineConfig
from orchestrator.domain import CallRequest, EngineStats, Sampling
from orchestrator.replicas.vllm_engine import engine_args


def test_defaults_map_through() -> None:
    args = engine_args(VllmEngineConfig(), "/models/tiny")
    assert args == {
        "model": "/models/tiny",
        "dtype": "bfloat16",
        "tensor_parallel_size": 1,
        "max_model_len": 16384,
        "max_num_seqs": 64,
        "enable_prefix_caching": True,
        "kv_cache_dtype": "auto",
        "gpu_memory_utilization": 0.9,
        "enforce_eager": True,
        "scheduling_policy": "fcfs",
        "seed": 0,
        "disable_log_stats": False,
    }


def test_every_set_field_reaches_the_engine() -> None:
    config = VllmEngineConfig(
        model="ignored-here",
        dtype="float16",
        max_model_len=8192,
        max_num_seqs=128,
        max_num_batched_tokens=4096,
        enable_prefix_caching=False,
        speculative_config={"method": "ngram", "num_speculative_tokens": 3},
        quantization="fp8",
        kv_cache_dtype="fp8",
        gpu_memory_utilization=0.8,
        enforce_eager=False,
        scheduling_policy=SchedulingPolicy.PRIORITY,
        seed=7,
    )
    args = engine_args(config, "meta-llama/Llama-3.1-8B")
    assert args["model"] == "meta-llama/Llama-3.1-8B"
    assert args["dtype"] == "float16"
    assert args["max_model_len"] == 8192
    assert args["max_num_seqs"] == 128
    assert args["max_num_batched_tokens"] == 4096
    assert args["enable_prefix_caching"] is False
    assert args["speculative_config"] == {"method": "ngram", "num_speculative_tokens": 3}
    assert args["quantization"] == "fp8"
    assert args["kv_cache_dtype"] == "fp8"
    assert args["gpu_memory_utilization"] == 0.8
    assert args["enforce_eager"] is False
    assert args["scheduling_policy"] == "priority"
    assert args["seed"] == 7


def test_unset_optional_fields_are_left_to_vllm_defaults() -> None:
    args = engine_args(VllmEngineConfig(), "m")
    for key in ("max_num_batched_tokens", "speculative_config", "quantization"):
        assert key not in args
    assert "distributed_executor_backend" not in args


def test_tensor_parallel_uses_the_ray_executor() -> None:
    args = engine_args(VllmEngineConfig(tensor_parallel_size=4), "m")
    assert args["tensor_parallel_size"] == 4
    assert args["distributed_executor_backend"] == "ray"


def test_extra_args_pass_through() -> None:
    config = VllmEngineConfig(extra_args={"max_logprobs": 5, "block_size": 32})
    args = engine_args(config, "m")
    assert args["max_logprobs"] == 5
    assert args["block_size"] == 32
    assert args["model"] == "m"


def test_speculative_config_is_copied_not_shared() -> None:
    config = VllmEngineConfig(speculative_config={"num_speculative_tokens": 2})
    engine_args(config, "m")["speculative_config"]["num_speculative_tokens"] = 9
    assert config.speculative_config == {"num_speculative_tokens": 2}


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
