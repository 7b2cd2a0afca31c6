"""Open-loop load: tasks arrive by a Poisson or gamma process at a set rate, whether or
not earlier tasks have completed.

The gaps are `orchestrator.workload.arrivals.Gaps` (pure, from a seeded RNG).
`Dispatcher` is the greenlet that starts one task greenlet per arrival, bounded by
`max_outstanding`: an arrival that finds the bound reached is dropped and counted
(AgenticStats.dropped_tasks), so an overloaded server shows up as drops instead of
silently turning the test into a closed loop.
`loadtests.user.OpenLoopUser` runs one dispatcher over its own channel. Imports gevent
(without monkey-patching) but not locust, so the pure parts test in any process.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.pool import Group

from orchestrator.workload.arrivals import ArrivalProcess, Gaps

OPEN_LOOP = (ArrivalProcess.POISSON, ArrivalProcess.GAMMA, ArrivalProcess.CONSTANT)


def parse_arrival_process(kind: str, rate: float, cv: float = 1.0) -> Gaps:
    """From the command line; errors name the option."""
    process = next((p for p in OPEN_LOOP if p.value == kind), None)
    if process is None:
        known = ", ".join(p.value for p in OPEN_LOOP)
        raise ValueError(f"--arrival-process: {kind!r} is not one of {known}")
    try:
        return Gaps(rate, process, cv)
    except ValueError as exc:
        raise ValueError(f"--arrival-rate/--arrival-cv: {exc}") from None


class Dispatcher:
    """Starts `start_task()` in its own greenlet at each arrival; at most `max_outstanding`
    run at once, later arrivals are dropped and passed to `on_drop`."""

    def __init__(
        self,
        process: Gaps,
        start_task: Callable[[], Any],
        *,
        max_outstanding: int = 1000,
        on_drop: Callable[[], None] = lambda: None,
        rng: random.Random | None = None,
    ) -> None:
        self.process = process
        self.start_task = start_task
        self.max_outstanding = max_outstanding
        self.on_drop = on_drop
        self.rng = rng or random.Random()
        self.tasks = Group()
        self.started = 0
        self.dropped = 0

    def set_rate(self, rate: float) -> None:
        """Change the rate from the next arrival on (shapes and sweeps use this)."""
        self.process = Gaps(rate, self.process.process, self.process.cv)

    def run(self, duration: float | None = None) -> None:
        """Dispatch until killed (or for `duration` seconds). Arrival times are absolute,
        so time spent spawning does not slow the rate down."""
        begin = time.monotonic()
        next_at = begin + self.process.gap(self.rng)
        while duration is None or next_at < begin + duration:
            delay = next_at - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            if len(self.tasks) >= self.max_outstanding:
                self.dropped += 1
                self.on_drop()
            else:
                self.started += 1
                self.tasks.spawn(self._guarded)
            next_at += self.process.gap(self.rng)

    def _guarded(self) -> None:
        # The task already fired its failure event; one bad task must not end the run.
        with contextlib.suppress(Exception):
            self.start_task()

    def stop(self) -> None:
        """Kill the in-flight tasks (each cancels its stream)."""
        self.tasks.kill(block=True, timeout=5)
