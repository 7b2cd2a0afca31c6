"""Pure decisions of a self-healing replica pool: what a health probe's outcome means,
how a replica's health changes with it, how long to wait before restarting a crashed
replica, and whether the service as a whole is serving.

`ReplicaPool` (pool.py) does the awaiting and the Ray calls; everything it decides goes
through here, so the rules are testable without Ray or an event loop.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator.domain import ReplicaState


class Probe(enum.Enum):
    """What one liveness or stats read of a replica actor said."""

    ANSWERED = "answered"  # the actor replied: it is alive
    DEAD = "dead"  # Ray says the actor died: replace it
    NO_ANSWER = "no_answer"  # no reply within the timeout while this loop was responsive
    INCONCLUSIVE = "inconclusive"  # no reply, but this loop was itself too late to tell


# How late (seconds, and as a share of the timeout) this process's own timer may fire
# before a timed-out probe says more about this event loop than about the replica.
LOOP_LATE_S = 1.0
LOOP_LATE_SHARE = 0.1


def timed_out(waited_s: float, timeout_s: float) -> Probe:
    """A probe that got no reply after `waited_s` (the loop clock, from send to the
    timeout being handled). A busy loop (a cancellation storm) handles the timeout late:
    the reply may then be sitting unread, so the probe proves nothing either way."""
    late_s = waited_s - timeout_s
    if late_s > max(LOOP_LATE_S, LOOP_LATE_SHARE * timeout_s):
        return Probe.INCONCLUSIVE
    return Probe.NO_ANSWER


class Transition(enum.Enum):
    """A change of a replica's health, logged once when it happens."""

    UNHEALTHY = "unhealthy"  # healthy -> unhealthy (liveness failures)
    HEALTHY = "healthy"  # unhealthy -> healthy (it answered again)
    DIED = "died"  # Ray says the actor died: it is replaced


@dataclass(slots=True, frozen=True)
class Health:
    """A replica's health as the pool keeps it."""

    state: ReplicaState
    # Liveness probes in a row that got no answer (reset by any answer).
    failures: int = 0


@dataclass(slots=True, frozen=True)
class HealthDecision:
    health: Health
    transition: Transition | None  # None: nothing worth a log line changed
    replace: bool  # start replacing the replica's actor


def after_probe(health: Health, probe: Probe, failures_allowed: int) -> HealthDecision:
    """A replica's health after one probe. Only Ray saying the actor died, or
    `failures_allowed` unanswered liveness probes in a row, make it unhealthy; an
    inconclusive probe (a slow reply seen by a busy loop) changes nothing."""
    state, failures = health.state, health.failures
    if state in (ReplicaState.STARTING, ReplicaState.STOPPED):
        return HealthDecision(health, None, replace=False)  # not probed in these states
    if probe is Probe.DEAD:
        return HealthDecision(Health(ReplicaState.UNHEALTHY, 0), Transition.DIED, replace=True)
    if probe is Probe.INCONCLUSIVE:
        return HealthDecision(health, None, replace=False)
    if probe is Probe.ANSWERED:
        if state is ReplicaState.UNHEALTHY:
            return HealthDecision(Health(ReplicaState.READY, 0), Transition.HEALTHY, False)
        return HealthDecision(Health(state, 0), None, replace=False)
    failures += 1
    if state is ReplicaState.READY and failures >= failures_allowed:
        return HealthDecision(
            Health(ReplicaState.UNHEALTHY, failures), Transition.UNHEALTHY, replace=False
        )
    return HealthDecision(Health(state, failures), None, replace=False)


@dataclass(slots=True, frozen=True)
class Backoff:
    """Delay before each restart of a replica whose actor keeps dying: the first restart
    after `initial_s`, each one in a row after that twice as late, at most `max_s`."""

    initial_s: float
    max_s: float

    def delay(self, restarts: int) -> float:
        """Seconds to wait before restart number `restarts` (0: the first) since the
        replica last ran stably."""
        return min(self.max_s, self.initial_s * 2.0 ** min(max(restarts, 0), 64))


def restarts_after_run(restarts: int, ran_s: float, stable_s: float) -> int:
    """The crash count a replica's next restart backs off from: a replica that ran
    `stable_s` or longer before dying was not crash-looping, so it starts again at 0."""
    return 0 if ran_s >= stable_s else restarts


class ServiceHealth(enum.Enum):
    """The orchestrator service's gRPC health."""

    SERVING = "SERVING"
    NOT_SERVING = "NOT_SERVING"


def service_health(replicas_healthy: Iterable[bool]) -> ServiceHealth:
    """SERVING while at least one replica can take calls: with none, every task would
    fail UNAVAILABLE, and a load balancer should send it elsewhere."""
    return ServiceHealth.SERVING if any(replicas_healthy) else ServiceHealth.NOT_SERVING
