"""The roofline step-time model of one replica (docs/simulation.md, "Step time").

`PerfModel` turns the shape of one engine step (decode contexts, prefill chunks) into
seconds, and a GPU/model/parallelism/precision choice into KV-cache capacity. It is pure
arithmetic over the catalog figures and one family's fitted efficiency constants, so every
number the simulator prints traces back to these equations.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.blocks import BLOCK_TOKENS as BLOCK_TOKENS
from orchestrator.sim.catalog import GIB, FamilyFit, GpuSpec, ModelSpec


class SimConfigError(ValueError):
    """A configuration the simulated GPU cannot run; the message shows the numbers."""


class WeightFormat(enum.Enum):
    BF16 = "bf16"
    FP8 = "fp8"  # W8A8 FP8
    INT8 = "int8"  # W8A8 INT8
    W4A16 = "w4a16"  # 4-bit weights, BF16 compute (AWQ/GPTQ style)

    @property
    def bytes(self) -> float:
        return {"bf16": 2.0, "fp8": 1.0, "int8": 1.0, "w4a16": 0.5}[self.value]


class KvFormat(enum.Enum):
    BF16 = "bf16"
    FP8 = "fp8"

    @property
    def bytes(self) -> float:
        return 2.0 if self is KvFormat.BF16 else 1.0


@dataclass(slots=True, frozen=True)
class SpecDecode:
    """Speculative decoding: k draft tokens per step, each accepted with probability alpha."""

    k: int
    alpha: float
    # Cost of one draft step as a fraction of the target's weight-read time (an EAGLE-style
    # head or a small draft model reads a small fraction of the target's bytes).
    draft_cost: float = 0.05

    @property
    def tokens_per_step(self) -> float:
        """Expected tokens a sequence gains per step: (1 - alpha^(k+1)) / (1 - alpha)."""
        if self.alpha >= 1.0:
            return float(self.k + 1)
        return (1.0 - self.alpha ** (self.k + 1)) / (1.0 - self.alpha)


@dataclass(slots=True, frozen=True)
class Hardware:
    """What one replica runs on and how."""

    gpu: GpuSpec
    model: ModelSpec
    family: FamilyFit
    tp: int = 1
    weights: WeightFormat = WeightFormat.BF16
    kv: KvFormat = KvFormat.BF16
    gpu_memory_utilization: float = 0.9
    # vLLM 0.6's multi-step scheduling: CPU work is paid once per this many decode steps.
    num_scheduler_steps: int = 1
    spec: SpecDecode | None = None


@dataclass(slots=True, frozen=True)
class StepCost:
    """One step's time and its parts, seconds."""

    compute: float  # GEMM + attention FLOPs over achieved FLOP/s
    memory: float  # weight + KV bytes over achieved bandwidth
    tp: float  # all-reduces
    cpu: float  # scheduler and launch overhead
    total: float

    @property
    def gpu_busy(self) -> float:
        """Seconds the GPUs are working (for the power model)."""
        return max(self.compute, self.memory) + self.tp


# Activation reserve and fixed overhead per GPU (docs/simulation.md, after BLIS
# kv_capacity.go).
_ACTIVATION_GIB_DENSE = 5.5
_ACTIVATION_GIB_MOE = 8.0


class PerfModel:
    """Step time and KV capacity of one replica on `hw`."""

    def __init__(self, hw: Hardware) -> None:
        self.hw = hw
        m, g, f, t = hw.model, hw.gpu, hw.family, hw.tp
        self._t = t
        self._b_w = hw.weights.bytes
        # KV bytes per token for the whole replica (all layers, K and V).
        self.kv_bytes_per_token = 2.0 * m.layers * m.kv_heads * m.head_dim * hw.kv.bytes
        self._lm_head_bytes = m.vocab * m.hidden * 2.0 / t  # LM head stays BF16
        self._n_active = m.active_nonembedding_params
        self._dense_weight_bytes = self._n_active * self._b_w / t + self._lm_head_bytes
        self._bw = g.hbm_tbps * 1e12
        if hw.weights in (WeightFormat.FP8, WeightFormat.INT8):
            peak = g.fp8_tflops
        else:
            peak = g.bf16_tflops
        self._gemm_flops_s = peak * 1e12 * f.eta_c
        self._attn_flops_s = g.bf16_tflops * 1e12 * f.eta_c
        self._w_bw = self._bw * f.eta_w
        self._kv_bw = self._bw * f.eta_kv
        self._kv_read_per_token = self.kv_bytes_per_token / t
        self._attn_coef = 4.0 * m.layers * m.q_heads * m.head_dim / t
        self._lm_flops = 2.0 * m.vocab * m.hidden / t
        self._gemm_coef = 2.0 * self._n_active / t
        self._gemm_half = f.gemm_half_tokens
        if t > 1:
            link = g.link_gbps * 1e9 * f.eta_link
            self._ar_fixed = 2 * m.layers * f.alpha_ar_us * 1e-6
            self._ar_per_token = 2 * m.layers * (2.0 * (t - 1) / t) * m.hidden * 2.0 / link
        else:
            self._ar_fixed = 0.0
            self._ar_per_token = 0.0
        steps = hw.num_scheduler_steps
        self._cpu_fixed = (f.c_step_ms * 1e-3 + f.c_layer_us * 1e-6 * m.layers) / steps
        self._cpu_per_seq = f.c_req_us * 1e-6 / steps
        spec = hw.spec
        self.tokens_per_decode_step = spec.tokens_per_step if spec else 1.0
        self._decode_width = (spec.k + 1) if spec else 1
        self._draft_time = (
            spec.k * spec.draft_cost * self._dense_weight_bytes / self._w_bw if spec else 0.0
        )

    # ---- memory -------------------------------------------------------------------

    @property
    def weight_bytes(self) -> float:
        """All weights of the replica (embeddings and LM head in BF16)."""
        m = self.hw.model
        return m.nonembedding_params * self._b_w + m.embedding_params * 2.0

    def _weight_bytes_read(self, tokens: int) -> float:
        """Weight bytes one GPU reads in a step of `tokens` tokens."""
        m = self.hw.model
        if not m.is_moe or tokens <= 0:
            return self._dense_weight_bytes
        k, e = m.experts_per_token, m.experts
        touched = e * (1.0 - (1.0 - k / e) ** tokens)
        per_gpu = (
            (m.shared_nonembedding_params + m.layers * touched * m.expert_params)
            * self._b_w
            / self._t
        )
        return per_gpu + self._lm_head_bytes

    def memory_budget(self) -> tuple[float, float, float, float]:
        """Per GPU, bytes: usable (gmu * M), weights, activation reserve, fixed overhead."""
        hw = self.hw
        usable = hw.gpu_memory_utilization * hw.gpu.memory_gib * GIB
        weights = self.weight_bytes / hw.tp
        activation = (_ACTIVATION_GIB_MOE if hw.model.is_moe else _ACTIVATION_GIB_DENSE) * GIB
        overhead = (0.15 if hw.tp == 1 else 0.6) * GIB
        return usable, weights, activation, overhead

    def kv_blocks(self) -> int:
        """KV blocks of the replica: floor((gmu*M - W/t - A - O) / (16*kv_tok/t)).

        Raises SimConfigError, with the numbers, when the weights leave no room."""
        usable, weights, activation, overhead = self.memory_budget()
        free = usable - weights - activation - overhead
        hw = self.hw
        if free <= 0:
            raise SimConfigError(
                f"{hw.model.name} ({hw.weights.value} weights, "
                f"{self.weight_bytes / GIB:.1f} GiB) does not fit {hw.gpu.name} at tp={hw.tp}: "
                f"per GPU {weights / GIB:.1f} GiB of weights + {activation / GIB:.1f} GiB "
                f"activations + {overhead / GIB:.2f} GiB overhead > "
                f"{usable / GIB:.1f} GiB usable ({hw.gpu_memory_utilization:g} x "
                f"{hw.gpu.memory_gib:g} GiB); use a larger tp, quantized weights or a "
                f"bigger GPU"
            )
        return int(free // (BLOCK_TOKENS * self._kv_read_per_token))

    # ---- time -----------------------------------------------------------------------

    def step(
        self, n_decode: int, decode_context: int, prefills: Sequence[tuple[int, int]] = ()
    ) -> StepCost:
        """Cost of one step: `n_decode` sequences decoding over `decode_context` tokens of
        context in total, plus prefill chunks (new tokens n, already computed tokens p)."""
        width = self._decode_width
        tokens = n_decode * width
        kv_tokens = decode_context * width if width > 1 else decode_context
        attn = float(kv_tokens)
        for n, p in prefills:
            tokens += n
            kv_tokens += p + n
            attn += n * (p + n / 2.0)
        seqs = n_decode + len(prefills)
        if seqs == 0:
            return StepCost(0.0, 0.0, 0.0, 0.0, 0.0)
        gemm_rate = self._gemm_flops_s
        if self._gemm_half:
            gemm_rate *= tokens / (tokens + self._gemm_half)
        compute = (self._gemm_coef * tokens + self._lm_flops * seqs) / gemm_rate + (
            self._attn_coef * attn
        ) / self._attn_flops_s
        memory = (
            self._weight_bytes_read(tokens) / self._w_bw
            + self._kv_read_per_token * kv_tokens / self._kv_bw
        )
        if n_decode and self._draft_time:
            memory += self._draft_time
        tp = self._ar_fixed + self._ar_per_token * tokens if self._t > 1 else 0.0
        cpu = self._cpu_fixed + self._cpu_per_seq * seqs
        total = max(compute, memory) + tp + cpu
        return StepCost(compute, memory, tp, cpu, total)

    def step_time(
        self, n_decode: int, decode_context: int, prefills: Sequence[tuple[int, int]] = ()
    ) -> float:
        return self.step(n_decode, decode_context, prefills).total

    def power_w(self, utilization: float) -> float:
        """Board power of the replica's GPUs at a busy fraction `utilization` (0..1)."""
        g = self.hw.gpu
        u = min(1.0, max(0.0, utilization))
        return self.hw.tp * (g.idle_w + (g.tdp_w - g.idle_w) * u)


def blocks_for(tokens: int) -> int:
    return math.ceil(tokens / BLOCK_TOKENS)
