"""Config -> vLLM AsyncEngineArgs keywords (pure; vLLM is not imported). The load figures
the live engine reports for routing: tests/integration/test_vllm_engine_stats.py."""

from __future__ import annotations

from orchestrator.config import SchedulingPolicy, VllmEngineConfig
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
