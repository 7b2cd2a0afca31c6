"""One fast-forward run's configuration (`inflection simulate --config FILE`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.config import (
    AdmissionConfig,
    LimitsConfig,
    RoutingConfig,
    SimEngineConfig,
    load_yaml_model,
)
from orchestrator.workload.arrivals import ArrivalConfig
from orchestrator.workload.mix import WorkloadConfig
from orchestrator.workload.slo import SloConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimulationConfig(_Strict):
    """One fast-forward run (`inflection simulate --config FILE`)."""

    replicas: int = Field(default=8, ge=1, le=4096, description="Simulated replicas.")
    engine: SimEngineConfig = Field(
        default_factory=SimEngineConfig, description="Every replica's simulated engine."
    )
    routing: RoutingConfig = Field(
        default_factory=RoutingConfig, description="Routing policy and call priority."
    )
    limits: LimitsConfig = Field(
        default_factory=LimitsConfig,
        description="The deployment's limits; the per-task ones (calls in flight, "
        "retries) apply here as they do live.",
    )
    admission: AdmissionConfig = Field(
        default_factory=AdmissionConfig,
        description="Task admission under saturation, as the deployment does it.",
    )
    workload: WorkloadConfig = Field(default_factory=WorkloadConfig)
    arrival: ArrivalConfig = Field(default_factory=ArrivalConfig)
    duration_s: float = Field(
        default=300.0, gt=0, description="Simulated seconds of arrivals (then drain)."
    )
    max_tasks: int | None = Field(default=None, ge=1, description="Stop arrivals after N.")
    warmup_s: float = Field(
        default=0.0, ge=0, description="Tasks arriving before this are not measured."
    )
    sample_interval_s: float = Field(
        default=1.0, gt=0, description="Timeline resolution, simulated seconds."
    )
    dispatch_overhead_s: float = Field(
        default=0.0005,
        ge=0,
        description="Orchestrator time per call before it reaches the replica.",
    )
    slo: SloConfig = Field(default_factory=SloConfig)
    seed: int = Field(default=0, description="Seed of arrivals, inputs and programs.")


def load_simulation_config(path: Path) -> SimulationConfig:
    return load_yaml_model(path, SimulationConfig)


# A warm-up that would swallow every arrival becomes this fraction of the run: the rule
# `inflection plan` uses for its trials (there capped at 20 s).
WARMUP_FRACTION = 0.25


def fit_warmup(warmup_s: float, duration_s: float) -> tuple[float, str | None]:
    """The warm-up to use for `duration_s` seconds of arrivals, and a warning when the
    asked one covered the whole run (it is then scaled down to WARMUP_FRACTION of it)."""
    if warmup_s < duration_s:
        return warmup_s, None
    fitted = duration_s * WARMUP_FRACTION
    return fitted, (
        f"warmup_s {warmup_s:g} s covers all {duration_s:g} s of arrivals; "
        f"measuring after {fitted:g} s instead (a quarter of the run, as `plan` does)"
    )
