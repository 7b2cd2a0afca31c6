"""ATLAS-style call priority: a task's attained service along its critical path, and the
level its next call gets from it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.routing import PriorityPolicy, PrioritySettings, TaskService
from orchestrator.routing.priority import call_priority

ATLAS = PrioritySettings(
    policy=PriorityPolicy.PROGRAM_AWARE,
    quantum_s=0.5,
    levels=8,
    urgent_slack_s=1.0,
    starvation_ratio=4.0,
)
FCFS = PrioritySettings(policy=PriorityPolicy.FCFS)


def level(attained: float, settings: PrioritySettings = ATLAS) -> int:
    """The level of a task that has never waited and has no deadline."""
    return call_priority(attained, age_s=attained, slack_s=None, settings=settings)


# ---- attained service along the critical path ------------------------------------------


def test_parallel_siblings_add_once() -> None:
    task = TaskService(started=0.0)
    task.finished("plan", (), 1.0)
    for i in range(6):
        task.finished(f"branch{i}", ("plan",), 2.0)
    assert task.attained == pytest.approx(3.0)


def test_a_chain_adds_up() -> None:
    task = TaskService(started=0.0)
    task.finished("a", (), 1.0)
    task.finished("b", ("a",), 0.5)
    task.finished("c", ("b",), 0.25)
    task.finished("d", ("c",), 2.0)
    assert task.attained == pytest.approx(3.75)


def test_a_join_follows_its_longest_branch() -> None:
    task = TaskService(started=0.0)
    task.finished("plan", (), 1.0)
    task.finished("short", ("plan",), 0.5)
    task.finished("long", ("plan",), 3.0)
    task.finished("join", ("short", "long"), 0.5)
    assert task.attained == pytest.approx(4.5)


def test_a_tool_passes_the_max_of_its_dependencies_through() -> None:
    task = TaskService(started=0.0)
    task.finished("plan", (), 1.0)
    task.finished("b1", ("plan",), 1.0)
    task.finished("b2", ("plan",), 1.5)
    task.finished("search", ("b1", "b2"), 0.0)  # a tool: no engine time
    assert task.attained == pytest.approx(2.5)  # the tool itself adds nothing
    task.finished("answer", ("search",), 1.0)
    assert task.attained == pytest.approx(3.5)


def test_a_chain_of_tools_adds_nothing() -> None:
    task = TaskService(started=0.0)
    task.finished("a", (), 1.0)
    task.finished("t1", ("a",), 0.0)
    task.finished("t2", ("t1",), 0.0)
    task.finished("b", ("t2",), 1.0)
    assert task.attained == pytest.approx(2.0)


def test_attained_is_the_longest_path_not_the_latest_call() -> None:
    task = TaskService(started=0.0)
    task.finished("long", (), 4.0)
    task.finished("short", (), 0.5)  # a later, independent call
    assert task.attained == pytest.approx(4.0)


def test_negative_service_counts_as_zero_and_unknown_dependencies_as_nothing() -> None:
    task = TaskService(started=0.0)
    task.finished("a", (), 1.0)
    task.finished("b", ("a",), -5.0)
    task.finished("c", ("b",), 1.0)
    assert task.attained == pytest.approx(2.0)
    task.finished("d", ("never-seen",), 0.75)
    assert task.attained == pytest.approx(2.0)


# ---- levels ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attained", "expected"),
    [
        (0.0, 0),
        (0.49, 0),
        (0.5, 1),
        (0.99, 1),
        (1.0, 2),
        (1.99, 2),
        (2.0, 3),
        (4.0, 4),
        (8.0, 5),
        (16.0, 6),
        (31.9, 6),
        (32.0, 7),
        (64.0, 7),
        (1e6, 7),
    ],
)
def test_levels_double_and_cap_at_levels_minus_one(attained: float, expected: int) -> None:
    assert level(attained) == expected


@pytest.mark.parametrize(
    ("quantum", "levels", "attained", "expected"),
    [
        (2.0, 8, 1.9, 0),
        (2.0, 8, 2.0, 1),
        (2.0, 8, 4.0, 2),
        (0.1, 3, 0.1, 1),
        (0.1, 3, 0.2, 2),
        (0.1, 3, 100.0, 2),
        (0.5, 1, 100.0, 0),
    ],
)
def test_levels_follow_the_configured_quantum_and_count(
    quantum: float, levels: int, attained: float, expected: int
) -> None:
    settings = PrioritySettings(PriorityPolicy.PROGRAM_AWARE, quantum_s=quantum, levels=levels)
    assert level(attained, settings) == expected


@given(
    st.floats(0.0, 1e4, allow_nan=False),
    st.floats(0.0, 1e4, allow_nan=False),
)
def test_less_attained_service_is_never_served_later(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert level(low) <= level(high)
    assert 0 <= level(high) <= ATLAS.levels - 1


def test_a_short_task_overtakes_a_long_one() -> None:
    # Same moment, neither waiting long: 0.75 s attained (level 1) against 6 s (level 4).
    short, long = TaskService(started=5.0), TaskService(started=0.0)
    short.finished("a", (), 0.75)
    long.finished("a", (), 3.0)
    long.finished("b", ("a",), 3.0)
    assert (short.priority(ATLAS, now=6.0), long.priority(ATLAS, now=6.0)) == (1, 4)


def test_a_new_task_comes_first() -> None:
    fresh, busy = TaskService(started=0.0), TaskService(started=0.0)
    busy.finished("a", (), 1.0)
    assert fresh.priority(ATLAS, now=1.0) == 0
    assert busy.priority(ATLAS, now=1.0) > 0


# ---- FCFS, deadlines, starvation -------------------------------------------------------


@pytest.mark.parametrize("now", [0.0, 5.0, 9.5, 50.0, 1e4])
def test_fcfs_is_always_zero(now: float) -> None:
    task = TaskService(started=0.0, deadline=10.0)
    task.finished("a", (), 8.0)
    assert task.priority(FCFS, now) == 0
    assert task.priority(PrioritySettings(), now) == 0  # FCFS is the default


@pytest.mark.parametrize(
    ("now", "expected"),
    [(8.0, 5), (8.99, 5), (9.0, 5), (9.01, -1), (9.5, -1), (10.0, -1), (12.0, -1)],
)
def test_a_task_near_its_deadline_goes_first(now: float, expected: int) -> None:
    task = TaskService(started=0.0, deadline=10.0)
    task.finished("a", (), 8.0)  # level 5
    assert task.priority(ATLAS, now) == expected


def test_no_deadline_is_never_urgent() -> None:
    task = TaskService(started=0.0)
    task.finished("a", (), 8.0)
    assert task.priority(ATLAS, now=8.0) == 5
    assert task.priority(ATLAS, now=1e6) == 0  # starving, not urgent


def test_the_urgent_slack_is_configurable() -> None:
    task = TaskService(started=0.0, deadline=10.0)
    task.finished("a", (), 2.0)
    relaxed = PrioritySettings(PriorityPolicy.PROGRAM_AWARE, urgent_slack_s=5.0)
    assert task.priority(ATLAS, now=6.0) == 3
    assert task.priority(relaxed, now=6.0) == -1


@pytest.mark.parametrize(("now", "expected"), [(4.0, 4), (15.0, 4), (20.0, 4), (20.01, 0)])
def test_a_task_that_waited_too_long_returns_to_level_zero(now: float, expected: int) -> None:
    # 4 s attained: it starves once it has waited (age - attained) more than 4 x 4 s.
    task = TaskService(started=0.0)
    task.finished("a", (), 4.0)
    assert task.priority(ATLAS, now) == expected


def test_starvation_follows_the_configured_ratio() -> None:
    task = TaskService(started=0.0)
    task.finished("a", (), 4.0)
    patient = PrioritySettings(PriorityPolicy.PROGRAM_AWARE, starvation_ratio=10.0)
    assert task.priority(ATLAS, now=30.0) == 0
    assert task.priority(patient, now=30.0) == 4


def test_a_starving_task_ties_a_fresh_one_but_an_urgent_task_beats_both() -> None:
    fresh = TaskService(started=99.0)
    starving = TaskService(started=0.0)
    starving.finished("a", (), 4.0)
    urgent = TaskService(started=90.0, deadline=100.5)
    urgent.finished("a", (), 8.0)
    now = 100.0
    assert fresh.priority(ATLAS, now) == starving.priority(ATLAS, now) == 0
    assert urgent.priority(ATLAS, now) == -1
