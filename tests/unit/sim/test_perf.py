"""The roofline model: KV capacity as docs/simulation.md defines it, configurations that cannot
run rejected with their numbers, and step times that move the way the hardware does."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.config import SimEngineConfig
from orchestrator.sim.build import build_replica
from orchestrator.sim.catalog import GIB, load_catalog
from orchestrator.sim.perf import (
    BLOCK_TOKENS,
    Hardware,
    KvFormat,
    PerfModel,
    SimConfigError,
    SpecDecode,
    WeightFormat,
)

CATALOG = load_catalog()
BYTES = {"bf16": 2.0, "fp8": 1.0}


def perf(
    gpu: str = "h100",
    model: str = "llama-3.1-8b",
    tp: int = 1,
    weights: str = "bf16",
    kv: str = "bf16",
    spec: SpecDecode | None = None,
) -> PerfModel:
    return PerfModel(
        Hardware(
            gpu=CATALOG.gpu(gpu),
            model=CATALOG.model(model),
            family=CATALOG.family("vllm"),
            tp=tp,
            weights=WeightFormat(weights),
            kv=KvFormat(kv),
            spec=spec,
        )
    )


def documented_kv_tokens(gpu: str, model: str, tp: int, weights: str, kv: str) -> float:
    """docs/simulation.md: KV blocks per GPU = floor((gmu*M - W/t - A - O) / (16*kv_tok/t)),
    kv_tok = 2*L*kv*d_h*b_kv; gmu = 0.9; A = 5.5 GiB dense / 8 GiB MoE; O = 0.15 GiB at
    t=1, 0.6 GiB at t>1. W: the weights, with the embedding and LM head in BF16."""
    g, m = CATALOG.gpu(gpu), CATALOG.model(model)
    embeddings = 2 * m.vocab * m.hidden
    w = (m.params_total - embeddings) * BYTES[weights] + embeddings * 2.0
    kv_tok = 2 * m.layers * m.kv_heads * m.head_dim * BYTES[kv]
    activation = (8.0 if m.experts else 5.5) * GIB
    overhead = (0.15 if tp == 1 else 0.6) * GIB
    free = 0.9 * g.memory_gib * GIB - w / tp - activation - overhead
    return math.floor(free / (16 * kv_tok / tp)) * 16


@pytest.mark.parametrize(
    ("gpu", "model", "tp", "weights", "kv"),
    [
        ("h100", "llama-3.1-8b", 1, "bf16", "bf16"),
        ("h100", "llama-3.1-70b", 4, "bf16", "bf16"),
        ("h100", "llama-3.1-70b", 8, "bf16", "bf16"),
        ("h200", "qwen3-32b", 1, "fp8", "bf16"),
        ("h200", "qwen3-32b", 1, "fp8", "fp8"),
        ("h100", "mixtral-8x7b", 2, "bf16", "bf16"),
        ("h100", "qwen3-30b-a3b", 1, "bf16", "bf16"),
    ],
)
def test_kv_capacity_follows_the_documented_formula(
    gpu: str, model: str, tp: int, weights: str, kv: str
) -> None:
    tokens = perf(gpu, model, tp, weights, kv).kv_blocks() * BLOCK_TOKENS
    expected = documented_kv_tokens(gpu, model, tp, weights, kv)
    assert tokens == pytest.approx(expected, rel=0.03)


def test_kv_capacity_grows_with_tp_and_fp8() -> None:
    assert (
        perf(model="llama-3.1-70b", tp=8).kv_blocks()
        > perf(model="llama-3.1-70b", tp=4).kv_blocks()
    )
    # An FP8 KV cache holds about twice the tokens in the same memory.
    bf16 = perf(gpu="h200", model="qwen3-32b", weights="fp8").kv_blocks()
    fp8 = perf(gpu="h200", model="qwen3-32b", weights="fp8", kv="fp8").kv_blocks()
    assert fp8 == pytest.approx(2 * bf16, rel=0.001)


def test_a_model_that_does_not_fit_is_rejected_with_the_numbers() -> None:
    model = perf(model="llama-3.1-70b", tp=1)
    with pytest.raises(SimConfigError) as failed:
        model.kv_blocks()
    message = str(failed.value)
    weights_gib = 70.6e9 * 2 / GIB
    assert "llama-3.1-70b" in message and "h100" in message and "tp=1" in message
    assert f"{weights_gib:.1f} GiB" in message
    assert f"{0.9 * 80:.1f} GiB usable" in message
    assert "5.5 GiB" in message


def test_build_replica_rejects_a_kv_cache_smaller_than_one_sequence() -> None:
    config = SimEngineConfig(model="llama-3.1-70b", tensor_parallel_size=2, max_model_len=16384)
    with pytest.raises(SimConfigError) as failed:
        build_replica(config)
    message = str(failed.value)
    blocks = perf(model="llama-3.1-70b", tp=2).kv_blocks()
    assert f"holds {blocks * 16} tokens ({blocks} blocks of 16" in message
    assert "max_model_len 16384" in message
    assert "320 KiB per token" in message  # 2 * 80 layers * 8 heads * 128 * 2 bytes


def test_build_replica_accepts_the_same_model_with_a_shorter_context() -> None:
    config = SimEngineConfig(model="llama-3.1-70b", tensor_parallel_size=2, max_model_len=512)
    scheduler = build_replica(config)
    assert scheduler.kv.num_blocks == perf(model="llama-3.1-70b", tp=2).kv_blocks()


def test_build_replica_rejects_unchunked_prefill_with_a_budget_below_the_context() -> None:
    config = SimEngineConfig(
        enable_chunked_prefill=False, max_num_batched_tokens=8192, max_model_len=16384
    )
    with pytest.raises(SimConfigError, match=r"\(8192\) is smaller than max_model_len \(16384\)"):
        build_replica(config)
    config = config.model_copy(update={"max_num_batched_tokens": 16384})
    assert build_replica(config).config.max_num_batched_tokens == 16384


def test_a_decode_step_costs_what_the_documented_equations_say() -> None:
    """Llama-3.1-8B on one H100, 8 sequences decoding over 1000 tokens each."""
    model = perf()
    m, g, f = CATALOG.model("llama-3.1-8b"), CATALOG.gpu("h100"), CATALOG.family("vllm")
    n = m.params_total - 2 * m.vocab * m.hidden
    b_w = n * 2 + m.vocab * m.hidden * 2
    kv_read = 2 * m.layers * m.kv_heads * m.head_dim * 2 * 8000
    memory = b_w / (g.hbm_tbps * 1e12 * f.eta_w) + kv_read / (g.hbm_tbps * 1e12 * f.eta_kv)
    cpu = f.c_step_ms * 1e-3 + f.c_req_us * 1e-6 * 8
    cost = model.step(8, 8000)
    assert cost.memory == pytest.approx(memory, rel=1e-9)
    assert cost.compute < cost.memory  # decode is memory-bound
    assert cost.total == pytest.approx(memory + cpu, rel=1e-9)


@given(
    n=st.integers(1, 512),
    context=st.integers(1, 8192),
    prefill=st.integers(0, 4096),
)
def test_step_time_grows_with_batch_size(n: int, context: int, prefill: int) -> None:
    model = perf()
    chunks = [(prefill, 0)] if prefill else []
    smaller = model.step_time(n, n * context, chunks)
    assert model.step_time(n + 1, (n + 1) * context, chunks) > smaller
    assert model.step_time(n, n * context, [*chunks, (64, context)]) > smaller


@given(n=st.integers(1, 512), context=st.integers(1, 8192), extra=st.integers(1, 8192))
def test_step_time_grows_with_context(n: int, context: int, extra: int) -> None:
    model = perf()
    assert model.step_time(n, n * (context + extra)) > model.step_time(n, n * context)
    assert model.step_time(0, 0, [(512, context + extra)]) > model.step_time(0, 0, [(512, context)])


@pytest.mark.parametrize(
    ("n_decode", "context", "prefills"),
    [(1, 1000, ()), (64, 64 * 2000, ()), (0, 0, ((8192, 0),)), (32, 32 * 4000, ((2048, 4096),))],
)
def test_tensor_parallelism_cuts_compute_and_memory_time(
    n_decode: int, context: int, prefills: tuple[tuple[int, int], ...]
) -> None:
    costs = [perf(model="llama-3.1-70b", tp=t).step(n_decode, context, prefills) for t in (2, 4, 8)]
    for wider, narrower in zip(costs[1:], costs[:-1], strict=False):
        assert wider.compute == pytest.approx(narrower.compute / 2)
        assert wider.memory == pytest.approx(narrower.memory / 2)
        assert wider.tp > 0
    assert perf().step(n_decode, context, prefills).tp == 0  # no all-reduce at tp=1


def test_fp8_weights_cut_memory_time() -> None:
    bf16 = perf(weights="bf16").step(16, 16 * 1000)
    fp8 = perf(weights="fp8").step(16, 16 * 1000)
    # The non-embedding weights are read at one byte instead of two (the LM head and the
    # KV cache stay BF16).
    m, g, f = CATALOG.model("llama-3.1-8b"), CATALOG.gpu("h100"), CATALOG.family("vllm")
    n = m.params_total - 2 * m.vocab * m.hidden
    saved = n * 1.0 / (g.hbm_tbps * 1e12 * f.eta_w)
    assert fp8.memory == pytest.approx(bf16.memory - saved, rel=1e-9)
    assert fp8.total < bf16.total
    # FP8 GEMMs also run at the FP8 tensor rate: a long prefill gets faster.
    assert perf(weights="fp8").step(0, 0, [(8192, 0)]).compute < (
        perf(weights="bf16").step(0, 0, [(8192, 0)]).compute
    )


def test_moe_reads_only_the_experts_a_step_touches() -> None:
    model = perf(model="mixtral-8x7b", tp=2)
    one = model.step(1, 100).memory
    many = model.step(256, 256 * 100).memory
    dense_equivalent = perf(model="mixtral-8x7b", tp=2).weight_bytes / 2
    assert one < many  # more tokens, more experts
    # One token touches 2 of 8 experts per layer: well under the full weights.
    assert one * 3.35e12 * 0.78 < 0.5 * dense_equivalent


@pytest.mark.parametrize(
    ("k", "alpha", "expected"),
    [(3, 0.7, (1 - 0.7**4) / 0.3), (5, 0.8, (1 - 0.8**6) / 0.2), (4, 0.0, 1.0), (4, 1.0, 5.0)],
)
def test_speculative_decoding_tokens_per_step(k: int, alpha: float, expected: float) -> None:
    spec = SpecDecode(k=k, alpha=alpha)
    assert spec.tokens_per_step == pytest.approx(expected)
    assert perf(spec=spec).tokens_per_decode_step == pytest.approx(expected)


def test_speculative_decoding_makes_a_decode_step_dearer_but_a_token_cheaper() -> None:
    plain = perf()
    spec = perf(spec=SpecDecode(k=3, alpha=0.7))
    assert spec.step_time(8, 8000) > plain.step_time(8, 8000)
    per_token = spec.step_time(8, 8000) / spec.tokens_per_decode_step
    assert per_token < plain.step_time(8, 8000)
