"""What a fast-forward simulation records (over time, against its SLO, per agent), for
its JSON and HTML reports."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.report import RunSummary


@dataclass(slots=True, frozen=True)
class Percentiles:
    p50: float
    p90: float
    p99: float


@dataclass(slots=True, frozen=True)
class Sample:
    """One sampling interval of a simulation (all times in simulated seconds)."""

    t: float  # end of the interval
    interval: float  # its length
    tasks_completed: int  # tasks that finished in the interval
    output_tokens: int  # output tokens produced in the interval (all replicas)
    prompt_tokens: int  # prompt tokens of calls that finished in the interval
    # Of the tasks that finished in the interval; None when none did.
    task_latency: Percentiles | None
    task_ttft: Percentiles | None
    # Per replica, in `Timeline.replicas` order, at the end of the interval:
    kv_usage: tuple[float, ...]  # fraction of KV blocks referenced (0..1)
    queue_depth: tuple[int, ...]  # calls waiting in the replica's scheduler
    running: tuple[int, ...]  # calls running in the replica's scheduler


@dataclass(slots=True, frozen=True)
class Timeline:
    replicas: tuple[str, ...]
    samples: tuple[Sample, ...]


@dataclass(slots=True, frozen=True)
class AgentBreakdown:
    """The measured tasks of one agent program in a mixed workload."""

    agent: str
    summary: RunSummary  # of this agent's measured tasks, over the run's measured span
    goodput_tasks_per_s: float  # of them, those within every per-task SLO bound, per s
