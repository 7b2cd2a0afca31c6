"""The workload mix: which agent programs tasks run, and how long their inputs are."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkloadConfig(_Strict):
    mix: dict[str, float] = Field(
        default_factory=lambda: {"plan_execute": 1.0},
        description="Agent program -> weight; tasks pick a program in these proportions.",
    )
    input_tokens_mean: float = Field(
        default=64, ge=1, description="Mean user-input length in tokens (log-normal)."
    )
    input_tokens_sigma: float = Field(
        default=0.5, ge=0, description="Log-space spread of the input length; 0: fixed."
    )
    programs: tuple[str, ...] = Field(
        default=(), description="YAML program files or folders beside the built-ins."
    )
