"""Task-level service-level objectives (METRICS.md goodput) and their checks."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.report import RunSummary


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SloConfig(_Strict):
    """Task-level objectives (METRICS.md goodput): a task meets the SLO when its own
    TTFT and latency are within these bounds; the run meets it when the percentiles do."""

    task_ttft_p90: float | None = Field(default=None, gt=0, description="Seconds.")
    task_latency_p99: float | None = Field(default=None, gt=0, description="Seconds.")
    task_ttft_p99: float | None = Field(default=None, gt=0, description="Seconds.")
    task_latency_p90: float | None = Field(default=None, gt=0, description="Seconds.")


@dataclass(slots=True, frozen=True)
class SloCheck:
    """One task-level SLO bound against the run's measured percentile."""

    name: str  # the SloConfig field, e.g. "task_ttft_p90"
    bound_s: float
    value_s: float  # the percentile over the measured tasks

    @property
    def met(self) -> bool:
        return self.value_s <= self.bound_s

    @property
    def label(self) -> str:
        """'task TTFT p90' for 'task_ttft_p90'."""
        _, what, pct = self.name.split("_")
        return f"task {'TTFT' if what == 'ttft' else what} {pct}"


def slo_checks(slo: SloConfig, summary: RunSummary) -> tuple[SloCheck, ...]:
    """Each bound `slo` gives against the summary's percentile."""
    bounds = (
        ("task_ttft_p90", slo.task_ttft_p90, summary.task_ttft.p90),
        ("task_latency_p99", slo.task_latency_p99, summary.task_latency.p99),
        ("task_ttft_p99", slo.task_ttft_p99, summary.task_ttft.p99),
        ("task_latency_p90", slo.task_latency_p90, summary.task_latency.p90),
    )
    return tuple(SloCheck(name, bound, value) for name, bound, value in bounds if bound is not None)
