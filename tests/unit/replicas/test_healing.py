"""The pure decisions of a self-healing pool (orchestrator/replicas/healing.py)."""

from __future__ import annotations

from orchestrator.domain import ReplicaState
from orchestrator.replicas.healing import (
    Backoff,
    Health,
    Probe,
    ServiceHealth,
    Transition,
    after_probe,
    restarts_after_run,
    service_health,
    timed_out,
)

READY, UNHEALTHY = ReplicaState.READY, ReplicaState.UNHEALTHY


def test_backoff_doubles_from_initial_and_is_capped() -> None:
    backoff = Backoff(initial_s=0.5, max_s=10.0)
    assert [backoff.delay(n) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.delay(10_000) == 10.0  # no overflow however long it crash-loops


def test_a_replica_that_ran_stably_starts_its_backoff_again() -> None:
    assert restarts_after_run(5, ran_s=120.0, stable_s=60.0) == 0
    assert restarts_after_run(5, ran_s=3.0, stable_s=60.0) == 5


def test_a_timeout_handled_late_by_a_busy_loop_is_inconclusive() -> None:
    assert timed_out(waited_s=30.2, timeout_s=30.0) is Probe.NO_ANSWER
    assert timed_out(waited_s=38.0, timeout_s=30.0) is Probe.INCONCLUSIVE  # 8 s stall
    assert timed_out(waited_s=1.5, timeout_s=0.1) is Probe.INCONCLUSIVE


def test_only_consecutive_unanswered_checks_make_a_replica_unhealthy() -> None:
    health = Health(READY)
    for _ in range(2):
        decision = after_probe(health, Probe.NO_ANSWER, failures_allowed=3)
        assert decision.transition is None and not decision.replace
        health = decision.health
    assert health == Health(READY, 2)
    assert after_probe(health, Probe.ANSWERED, 3).health == Health(READY, 0)  # reset
    decision = after_probe(health, Probe.NO_ANSWER, 3)
    assert decision.health.state is UNHEALTHY and decision.transition is Transition.UNHEALTHY
    again = after_probe(decision.health, Probe.NO_ANSWER, 3)
    assert again.transition is None  # logged once, not per check
    back = after_probe(again.health, Probe.ANSWERED, 3)
    assert back.health == Health(READY, 0) and back.transition is Transition.HEALTHY


def test_inconclusive_probes_change_nothing() -> None:
    for health in (Health(READY, 2), Health(UNHEALTHY, 5)):
        decision = after_probe(health, Probe.INCONCLUSIVE, failures_allowed=1)
        assert decision.health == health and decision.transition is None


def test_a_dead_actor_is_replaced_whatever_its_health() -> None:
    for health in (Health(READY), Health(UNHEALTHY, 4)):
        decision = after_probe(health, Probe.DEAD, failures_allowed=3)
        assert decision.replace and decision.transition is Transition.DIED
        assert decision.health.state is UNHEALTHY
    stopped = after_probe(Health(ReplicaState.STOPPED), Probe.DEAD, 3)
    assert not stopped.replace


def test_the_service_serves_while_any_replica_is_healthy() -> None:
    assert service_health([False, True]) is ServiceHealth.SERVING
    assert service_health([False, False]) is ServiceHealth.NOT_SERVING
    assert service_health([]) is ServiceHealth.NOT_SERVING
