"""Build a simulated replica (its `PerfModel` and `Scheduler`) from a `SimEngineConfig`,
rejecting configurations the simulated GPU could not run, with the numbers that show why."""

from __future__ import annotations

from orchestrator.config import SchedulingPolicy, SimEngineConfig
from orchestrator.sim.catalog import Catalog, CatalogError, load_catalog
from orchestrator.sim.perf import (
    BLOCK_TOKENS,
    Hardware,
    KvFormat,
    PerfModel,
    SimConfigError,
    SpecDecode,
    WeightFormat,
)
from orchestrator.sim.scheduler import Scheduler, SchedulerConfig


def weight_format(value: str) -> WeightFormat:
    try:
        return WeightFormat(value.lower())
    except ValueError:
        known = ", ".join(w.value for w in WeightFormat)
        raise SimConfigError(f"weights: unknown format {value!r}; known: {known}") from None


def kv_format(value: str) -> KvFormat:
    v = value.lower()
    if v in ("auto", "bfloat16"):
        v = "bf16"
    try:
        return KvFormat(v)
    except ValueError:
        known = ", ".join(k.value for k in KvFormat)
        raise SimConfigError(f"kv_cache_dtype: unknown format {value!r}; known: {known}") from None


def hardware(config: SimEngineConfig, catalog: Catalog | None = None) -> Hardware:
    """The replica's hardware; raises CatalogError for unknown names."""
    catalog = catalog or load_catalog(config.catalogs)
    spec = config.speculative
    return Hardware(
        gpu=catalog.gpu(config.gpu),
        model=catalog.model(config.model),
        family=catalog.family(config.family),
        tp=config.tensor_parallel_size,
        weights=weight_format(config.weights),
        kv=kv_format(config.kv_cache_dtype),
        gpu_memory_utilization=config.gpu_memory_utilization,
        num_scheduler_steps=config.num_scheduler_steps,
        spec=SpecDecode(spec.k, spec.alpha, spec.draft_cost) if spec else None,
    )


def scheduler_config(config: SimEngineConfig) -> SchedulerConfig:
    return SchedulerConfig(
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=config.max_num_batched_tokens,
        max_model_len=config.max_model_len,
        chunked_prefill=config.enable_chunked_prefill,
        prefix_caching=config.enable_prefix_caching,
        priority=config.scheduling_policy is SchedulingPolicy.PRIORITY,
    )


def build_replica(config: SimEngineConfig, catalog: Catalog | None = None) -> Scheduler:
    """A ready scheduler (with its perf model and KV cache) for one simulated replica.

    Raises CatalogError (unknown names) or SimConfigError (the model does not fit, or
    its KV cache cannot hold one sequence of max_model_len tokens)."""
    perf = PerfModel(hardware(config, catalog))
    blocks = perf.kv_blocks()
    capacity = blocks * BLOCK_TOKENS
    if capacity < config.max_model_len:
        hw = perf.hw
        raise SimConfigError(
            f"the KV cache of {hw.model.name} on {hw.gpu.name} at tp={hw.tp} holds "
            f"{capacity} tokens ({blocks} blocks of {BLOCK_TOKENS}, "
            f"{perf.kv_bytes_per_token / 1024:.0f} KiB per token), less than one sequence "
            f"of max_model_len {config.max_model_len}; lower max_model_len, use an fp8 KV "
            f"cache, a larger tp or a bigger GPU"
        )
    if not config.enable_chunked_prefill and config.max_num_batched_tokens < config.max_model_len:
        # vLLM refuses this too: a longer prompt could never be scheduled.
        raise SimConfigError(
            f"max_num_batched_tokens ({config.max_num_batched_tokens}) is smaller than "
            f"max_model_len ({config.max_model_len}) with chunked prefill off: longer "
            f"prompts could never be scheduled; raise max_num_batched_tokens, lower "
            f"max_model_len or enable chunked prefill"
        )
    if config.max_num_batched_tokens < BLOCK_TOKENS:
        raise SimConfigError("max_num_batched_tokens must be at least one KV block (16)")
    return Scheduler(perf, scheduler_config(config), blocks)


__all__ = ["CatalogError", "SimConfigError", "build_replica", "hardware", "scheduler_config"]
