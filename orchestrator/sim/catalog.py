"""GPU, model and engine-family catalogs as data (data/catalog.yaml), with provenance.

Users extend or override entries with YAML files of the same shape. Lookups of unknown
names raise `CatalogError` listing the known ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.config import describe_validation_error

GIB = 1024**3

T = TypeVar("T")


class CatalogError(ValueError):
    """An unknown name or a malformed catalog file; the message says what is known."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GpuSpec(_Entry):
    """One GPU's datasheet figures (dense, no sparsity)."""

    name: str = Field(description="Catalog key, e.g. 'h100'.")
    full_name: str = Field(description="Marketing name.")
    memory_gib: float = Field(gt=0, description="HBM capacity, GiB.")
    hbm_tbps: float = Field(gt=0, description="HBM bandwidth, TB/s.")
    bf16_tflops: float = Field(gt=0, description="Dense BF16 tensor TFLOP/s.")
    fp8_tflops: float = Field(gt=0, description="Dense FP8 (or INT8) tensor TFLOP/s.")
    fp4_tflops: float | None = Field(default=None, description="Dense FP4 TFLOP/s, if any.")
    link_gbps: float = Field(gt=0, description="GPU-to-GPU link bandwidth, GB/s per direction.")
    tdp_w: float = Field(gt=0, description="Board power at full load, W.")
    idle_w: float = Field(ge=0, description="Board power when idle, W.")
    measured_hbm_tbps: float | None = Field(default=None, description="Measured ceiling.")
    measured_bf16_tflops: float | None = Field(default=None, description="Measured ceiling.")
    source: str = Field(description="Where the figures come from.")


class ModelSpec(_Entry):
    """A transformer's shape: what the step-time model and the KV capacity need."""

    name: str = Field(description="Catalog key, e.g. 'llama-3.1-8b'.")
    hf_id: str = Field(description="Hugging Face id of the model this describes.")
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    q_heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    ffn: int = Field(gt=0, description="FFN width (per expert for MoE models).")
    vocab: int = Field(gt=0)
    params_total: float = Field(gt=0, description="All parameters, embeddings included.")
    params_active: float | None = Field(
        default=None, description="Parameters used per token (MoE); None: all of them."
    )
    experts: int = Field(default=0, ge=0, description="Routed experts per layer; 0: dense.")
    experts_per_token: int = Field(default=0, ge=0, description="Top-k experts per token.")
    tied_embeddings: bool = Field(default=False, description="LM head shares the embedding.")
    source: str = Field(description="Where the figures come from.")

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def embedding_params(self) -> float:
        """Input embedding plus LM head."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def nonembedding_params(self) -> float:
        return self.params_total - self.embedding_params

    @property
    def active_nonembedding_params(self) -> float:
        """N of docs/simulation.md: non-embedding parameters each token multiplies."""
        active = self.params_active if self.params_active is not None else self.params_total
        return active - self.embedding_params

    @property
    def expert_params(self) -> float:
        """Parameters of one expert in one layer (gate, up and down projections)."""
        return 3.0 * self.hidden * self.ffn if self.is_moe else 0.0

    @property
    def shared_nonembedding_params(self) -> float:
        """Non-embedding parameters outside the routed experts (attention, norms, router)."""
        return self.nonembedding_params - self.expert_params * self.experts * self.layers


class FamilyFit(_Entry):
    """Efficiency constants of one engine family (docs/simulation.md step-time model)."""

    name: str = Field(description="Engine family, e.g. 'vllm'.")
    eta_w: float = Field(gt=0, le=1, description="Achieved fraction of HBM BW, weights.")
    eta_kv: float = Field(gt=0, le=1, description="Achieved fraction of HBM BW, KV reads.")
    eta_c: float = Field(gt=0, le=1, description="Achieved fraction of peak tensor FLOP/s.")
    eta_link: float = Field(gt=0, le=1, description="Achieved fraction of link bandwidth.")
    alpha_ar_us: float = Field(ge=0, description="All-reduce latency per call, us.")
    c_step_ms: float = Field(ge=0, description="CPU overhead per engine step, ms.")
    c_layer_us: float = Field(ge=0, description="Per-layer launch overhead per step, us.")
    c_req_us: float = Field(ge=0, description="CPU overhead per sequence in a step, us.")
    gemm_half_tokens: float = Field(
        default=0.0,
        ge=0,
        description="Tokens in a step at which GEMMs reach half of eta_c (small-M GEMMs "
        "leave tensor cores idle): eta = eta_c * T / (T + this); 0: no ramp.",
    )
    source: str = Field(description="How the constants were obtained.")


class Prices(_Entry):
    date: str = Field(description="When the prices were collected.")
    source: str
    usd_per_gpu_hour: dict[str, float] = Field(default_factory=dict)


@dataclass(slots=True)
class Catalog:
    """Every known GPU, model and engine family."""

    gpus: dict[str, GpuSpec] = field(default_factory=dict)
    models: dict[str, ModelSpec] = field(default_factory=dict)
    families: dict[str, FamilyFit] = field(default_factory=dict)
    prices: Prices | None = None

    def gpu(self, name: str) -> GpuSpec:
        return _lookup(self.gpus, name, "GPU")

    def model(self, name: str) -> ModelSpec:
        return _lookup(self.models, name, "model")

    def family(self, name: str) -> FamilyFit:
        return _lookup(self.families, name, "engine family")

    def price(self, gpu: str) -> float | None:
        if self.prices is None:
            return None
        return self.prices.usd_per_gpu_hour.get(gpu.lower())

    def merge(self, raw: Mapping[str, Any], origin: str) -> None:
        """Add or replace entries from one parsed YAML document."""
        unknown = set(raw) - {"gpus", "models", "families", "prices"}
        if unknown:
            raise CatalogError(
                f"{origin}: unknown section(s) {sorted(unknown)}; "
                "expected gpus, models, families, prices"
            )
        try:
            for key, entry in (raw.get("gpus") or {}).items():
                self.gpus[key.lower()] = GpuSpec.model_validate({**entry, "name": key.lower()})
            for key, entry in (raw.get("models") or {}).items():
                self.models[key.lower()] = ModelSpec.model_validate({**entry, "name": key.lower()})
            for key, entry in (raw.get("families") or {}).items():
                self.families[key.lower()] = FamilyFit.model_validate(
                    {**entry, "name": key.lower()}
                )
            if raw.get("prices") is not None:
                incoming = Prices.model_validate(raw["prices"])
                merged = dict(self.prices.usd_per_gpu_hour) if self.prices else {}
                merged.update({k.lower(): v for k, v in incoming.usd_per_gpu_hour.items()})
                self.prices = incoming.model_copy(update={"usd_per_gpu_hour": merged})
        except ValidationError as exc:
            raise CatalogError(f"{origin}: {describe_validation_error(exc)}") from exc
        except (AttributeError, TypeError) as exc:
            raise CatalogError(f"{origin}: each section must map names to entries") from exc


def _lookup(table: Mapping[str, T], name: str, what: str) -> T:
    entry = table.get(name.lower())
    if entry is None:
        raise CatalogError(f"unknown {what} {name!r}; known: {', '.join(sorted(table))}")
    return entry


def _read(path: Path) -> Mapping[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: expected a mapping with gpus/models/families/prices")
    return raw


def load_catalog(extra: Iterable[str | Path] = ()) -> Catalog:
    """The built-in catalog, then each extra YAML file in order (later entries win)."""
    catalog = Catalog()
    builtin = resources.files("orchestrator.sim").joinpath("data/catalog.yaml")
    catalog.merge(yaml.safe_load(builtin.read_text()), "built-in catalog")
    for path in extra:
        catalog.merge(_read(Path(path)), str(path))
    return catalog
