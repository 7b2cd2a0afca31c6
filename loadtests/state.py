"""`AgenticState`: everything the agentic extension keeps for one Locust environment, as
one typed object on `environment.agentic` (`state_of`).

Pure apart from typing: no locust, gevent or grpc import, so the web UI, the users, the
locustfile and the tests share it in any process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loadtests.metrics import AgenticStats, SweepResult
from loadtests.workload import Workload, default_workload
from orchestrator.workload.slo import SloConfig
from orchestrator.workload.sweep import SweepPlan

if TYPE_CHECKING:
    from loadtests.arrivals import Dispatcher
    from loadtests.trace_user import TraceConfig


@dataclass(slots=True, eq=False)
class AgenticState:
    """One run's agentic state on one Locust process (master, worker or local)."""

    stats: AgenticStats = field(default_factory=AgenticStats)  # the samples and figures
    workload: Workload = field(default_factory=default_workload)  # --workload
    slo: SloConfig | None = None  # --slo: goodput's bounds
    checked: bool = False  # the target answered and serves every agent of the workload
    sweep_plan: SweepPlan | None = None  # --sweep start=...: the in-run sweep
    sweep: SweepResult | None = None  # the in-run sweep's result, once it has run
    rate: float | None = None  # open loop: the run's total arrival rate, tasks/s
    dispatchers: set[Dispatcher] = field(default_factory=set)  # this process's open loop
    trace: TraceConfig | None = None  # --trace: the parsed trace and its replay options
    live_writer: Any = None  # the greenlet writing --agentic-live


def state_of(environment: Any) -> AgenticState:
    """The environment's AgenticState, made (with defaults) on first use."""
    state = getattr(environment, "agentic", None)
    if not isinstance(state, AgenticState):
        state = AgenticState()
        environment.agentic = state
    return state
