"""Open-loop arrival processes: rates and burstiness, and the dispatcher's bound."""

from __future__ import annotations

import random
import statistics

import pytest

from loadtests.arrivals import Dispatcher, parse_arrival_process
from orchestrator.workload.arrivals import ArrivalProcess, Gaps


@pytest.mark.parametrize(
    ("kind", "cv"),
    [(ArrivalProcess.POISSON, 1.0), (ArrivalProcess.GAMMA, 2.0), (ArrivalProcess.GAMMA, 0.5)],
)
def test_gaps_have_the_asked_rate_and_cv(kind: ArrivalProcess, cv: float) -> None:
    process = Gaps(rate=10.0, process=kind, cv=cv)
    rng = random.Random(7)
    gaps = [process.gap(rng) for _ in range(40_000)]
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(0.1, rel=0.03)
    assert statistics.pstdev(gaps) / mean == pytest.approx(cv, rel=0.05)


def test_schedule_counts_arrivals_in_a_window() -> None:
    times = Gaps(rate=50.0).schedule(random.Random(1), 0.0, 100.0)
    assert len(times) == pytest.approx(5000, rel=0.05)
    assert times == sorted(times) and times[0] > 0 and times[-1] < 100
    constant = Gaps(rate=4.0, process=ArrivalProcess.CONSTANT).schedule(random.Random(1), 0.0, 2.0)
    assert constant == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75])


@pytest.mark.parametrize(
    ("kind", "rate", "cv", "message"),
    [
        ("uniform", 1.0, 1.0, "--arrival-process: 'uniform' is not one of poisson, gamma"),
        ("poisson", 0.0, 1.0, "arrival rate must be a positive number"),
        ("gamma", 1.0, 0.0, "gamma arrivals need a positive cv"),
    ],
)
def test_bad_options_are_clear(kind: str, rate: float, cv: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_arrival_process(kind, rate, cv)


def test_dispatcher_drops_arrivals_beyond_the_outstanding_bound() -> None:
    import gevent

    drops: list[int] = []

    def slow_task() -> None:
        gevent.sleep(10)

    dispatcher = Dispatcher(
        Gaps(rate=200.0, process=ArrivalProcess.CONSTANT),
        slow_task,
        max_outstanding=5,
        on_drop=lambda: drops.append(1),
    )
    dispatcher.run(duration=0.2)
    try:
        assert dispatcher.started == 5
        assert dispatcher.dropped == len(drops) >= 30
        # Arrival times are absolute: about rate * duration arrivals in all.
        assert dispatcher.started + dispatcher.dropped == pytest.approx(40, abs=2)
    finally:
        dispatcher.stop()
    assert len(dispatcher.tasks) == 0


def test_set_rate_keeps_the_process_kind() -> None:
    dispatcher = Dispatcher(Gaps(2.0, ArrivalProcess.GAMMA, 3.0), lambda: None)
    dispatcher.set_rate(8.0)
    assert dispatcher.process == Gaps(8.0, ArrivalProcess.GAMMA, 3.0)
