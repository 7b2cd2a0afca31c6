"""The workload mix a load test draws tasks from: agents and their weights, input
lengths, think time, mode and deadline, read from a YAML file.

    agents: {plan_execute: 3, react: 1}      # relative weights
    input_tokens: {mean: 64, sigma: 0.5}     # lognormal with this mean; or a fixed int
    think_time_s: {min: 0.5, max: 2.0}       # closed loop: uniform pause between tasks
    mode: synthetic                          # synthetic | live
    deadline_s: 60                           # optional per-task budget
    max_tokens: 256                          # optional cap on every call's output
    step_max_tokens: {planner: 128}          # optional output tokens of a named step

Pure apart from reading the file: no locust or grpc import.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.domain import Mode
from orchestrator.workload.mix import InputLength, choose_agent


class WorkloadError(ValueError):
    """A workload file that cannot be used; the message is one line naming file and field."""


class ThinkTime(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min: float = Field(default=0.0, ge=0, description="Shortest pause, seconds.")
    max: float = Field(default=0.0, ge=0, description="Longest pause, seconds.")

    @model_validator(mode="after")
    def _ordered(self) -> ThinkTime:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class Workload(BaseModel):
    """A validated workload mix."""

    model_config = ConfigDict(extra="forbid")

    agents: dict[str, Annotated[float, Field(gt=0)]] = Field(
        min_length=1, description="Agent program name -> relative weight (> 0)."
    )
    input_tokens: InputLength | Annotated[int, Field(ge=1)] = Field(
        default=32, description="Fixed input length in tokens, or {mean, sigma, min, max}."
    )
    think_time_s: ThinkTime = Field(
        default_factory=ThinkTime, description="Closed loop: uniform pause between tasks."
    )
    mode: Mode = Field(default=Mode.SYNTHETIC, description="synthetic | live.")
    deadline_s: float | None = Field(default=None, gt=0, description="Per-task budget, s.")
    max_tokens: int | None = Field(default=None, ge=1, description="Cap on each call's output.")
    step_max_tokens: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="Output tokens per call of a named step."
    )

    def check_agents(self, known: list[str] | set[str] | tuple[str, ...]) -> None:
        """Raise WorkloadError naming every agent of the mix the server does not have."""
        unknown = sorted(set(self.agents) - set(known))
        if unknown:
            raise WorkloadError(
                f"unknown agent{'s' if len(unknown) > 1 else ''} in the workload: "
                f"{', '.join(unknown)}; the server has: {', '.join(sorted(known)) or '(none)'}"
            )

    def choose_agent(self, rng: random.Random) -> str:
        return choose_agent(self.agents, rng)

    def draw_input_tokens(self, rng: random.Random) -> int:
        if isinstance(self.input_tokens, int):
            return self.input_tokens
        return self.input_tokens.draw(rng)

    def draw_think_time(self, rng: random.Random) -> float:
        return rng.uniform(self.think_time_s.min, self.think_time_s.max)


def load_workload(path: str | Path) -> Workload:
    """Read and validate a workload file; errors are one line naming the file and field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise WorkloadError(f"{path}: cannot read the workload file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise WorkloadError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise WorkloadError(f"{path}: expected a mapping with an 'agents' key")
    try:
        return Workload.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise WorkloadError(f"{path}: {field}: {first['msg']}{more}") from None


def default_workload() -> Workload:
    """Used when no --workload is given: the plan_execute agent alone."""
    return Workload(agents={"plan_execute": 1.0})


def sample_trace_path() -> Path:
    """The small generated Mooncake trace shipped with the package (loadtests/data), for
    `--trace` (orchestrator.workload.traces)."""
    return Path(__file__).resolve().parent / "data" / "sample_trace.jsonl"
