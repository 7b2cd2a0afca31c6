"""Program-aware call priority, after Autellix's ATLAS.

A task's *attained service* is the engine time along its critical path so far: each
finished call's service is its engine time (arrival to last token) plus the largest
attained service among the actions it waited for, and the task's figure is the largest
over its finished calls. Sibling calls of a fan-out run in parallel, so they add once,
not once each: a wide task is charged for its depth, not its width.

Every new call of the task carries a priority from that figure, in levels that double
(least attained service first, so short tasks overtake long ones):

    level = 0                                       if attained < quantum
          = min(levels - 1, 1 + floor(log2(attained / quantum)))   otherwise

Two adjustments keep it fair:
- deadline slack: a task with a deadline and less than `urgent_slack_s` left goes to
  level -1, ahead of everything;
- anti-starvation: a task that has spent more than `starvation_ratio` times its attained
  service waiting (age - attained) returns to level 0.

vLLM serves the lowest value first (ties by arrival) when its scheduling policy is
"priority"; the simulated engine does the same. FCFS sends priority 0 for every call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from orchestrator.config import PriorityPolicy, PrioritySettings

__all__ = ["PriorityPolicy", "PrioritySettings", "TaskService", "call_priority"]


@dataclass(slots=True)
class TaskService:
    """One task's attained service along its critical path (see the module docstring)."""

    started: float  # when the task was accepted, on the caller's clock
    deadline: float | None = None  # absolute, same clock; None: no deadline
    attained: float = 0.0
    _path: dict[str, float] = field(default_factory=dict)

    def finished(self, action_id: str, after: Iterable[str], service_s: float) -> None:
        """An action ended after `service_s` of engine time (0 for tools)."""
        before = max((self._path.get(a, 0.0) for a in after), default=0.0)
        path = before + max(0.0, service_s)
        self._path[action_id] = path
        if path > self.attained:
            self.attained = path

    def priority(self, settings: PrioritySettings, now: float) -> int:
        if settings.policy is PriorityPolicy.FCFS:
            return 0
        return call_priority(
            self.attained,
            age_s=now - self.started,
            slack_s=None if self.deadline is None else self.deadline - now,
            settings=settings,
        )


def call_priority(
    attained_s: float, *, age_s: float, slack_s: float | None, settings: PrioritySettings
) -> int:
    """The ATLAS level of a task's next call (lower is served first)."""
    if slack_s is not None and slack_s < settings.urgent_slack_s:
        return -1
    quantum = settings.quantum_s
    if attained_s < quantum:
        return 0
    if age_s - attained_s > settings.starvation_ratio * attained_s:
        return 0
    return min(settings.levels - 1, 1 + math.floor(math.log2(attained_s / quantum)))
