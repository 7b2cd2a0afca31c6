"""What the executor tells an observer as tasks and calls end (Prometheus metrics, in
`orchestrator/server/metrics.py`). Plain data in, nothing back: an observer never
changes a task's course, and the executor runs without one."""

from __future__ import annotations

import enum
from typing import Protocol

from orchestrator.domain import CallResult, ErrorCode, TaskUsage


class TaskOutcome(enum.Enum):
    """How a task ended, as a metric label: OK, CANCELLED (its client went away) or the
    ErrorCode it failed with."""

    OK = "ok"
    CANCELLED = "cancelled"
    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"

    @classmethod
    def of(cls, code: ErrorCode) -> TaskOutcome:
        return cls(code.value)


class Observer(Protocol):
    """Called on the executor's event loop; must not block or raise."""

    def task_ended(self, agent: str, outcome: TaskOutcome, usage: TaskUsage | None) -> None:
        """A task ended; `usage` is its (partial, when it failed) usage, None when it
        ended before any call (refused by admission, say)."""

    def call_routed(self, replica: str) -> None:
        """The router sent a call (or a retry of one) to `replica`."""

    def call_ended(self, replica: str, result: CallResult | None, outcome: TaskOutcome) -> None:
        """A call on `replica` ended: `result` when it completed (outcome OK), else None."""
