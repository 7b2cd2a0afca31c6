"""Round-robin replica choice."""

from __future__ import annotations

import pytest

from orchestrator.domain import CallRequest, Sampling
from orchestrator.routing import NoReplicaAvailable, ReplicaView, RoundRobinRouter

CALL = CallRequest("c", (1, 2, 3), Sampling(max_tokens=4))


def views(*names: str, unhealthy: tuple[str, ...] = ()) -> list[ReplicaView]:
    return [ReplicaView(name, name not in unhealthy, 0) for name in names]


def choices(
    router: RoundRobinRouter,
    replicas: list[ReplicaView],
    n: int,
    exclude: frozenset[str] = frozenset(),
) -> list[str]:
    return [router.choose(CALL, replicas, exclude) for _ in range(n)]


def test_cycles_over_replicas_in_name_order() -> None:
    router = RoundRobinRouter()
    got = choices(router, views("r2", "r0", "r1"), 6)
    assert got == ["r0", "r1", "r2", "r0", "r1", "r2"]


def test_spreads_calls_evenly() -> None:
    got = choices(RoundRobinRouter(), views("a", "b", "c", "d"), 40)
    assert {name: got.count(name) for name in set(got)} == {"a": 10, "b": 10, "c": 10, "d": 10}


def test_skips_unhealthy_replicas() -> None:
    got = choices(RoundRobinRouter(), views("r0", "r1", "r2", unhealthy=("r1",)), 4)
    assert got == ["r0", "r2", "r0", "r2"]


def test_skips_excluded_replicas() -> None:
    got = choices(RoundRobinRouter(), views("r0", "r1", "r2"), 3, exclude=frozenset({"r0"}))
    assert set(got) == {"r1", "r2"}
    assert "r0" not in got


def test_single_replica_gets_every_call() -> None:
    assert choices(RoundRobinRouter(), views("only"), 3) == ["only"] * 3


@pytest.mark.parametrize(
    ("replicas", "exclude"),
    [
        ([], frozenset()),
        (views("r0", "r1", unhealthy=("r0", "r1")), frozenset()),
        (views("r0", "r1"), frozenset({"r0", "r1"})),
        (views("r0", "r1", unhealthy=("r0",)), frozenset({"r1"})),
    ],
)
def test_no_usable_replica_raises(replicas: list[ReplicaView], exclude: frozenset[str]) -> None:
    with pytest.raises(NoReplicaAvailable, match=f"no healthy replica among {len(replicas)}"):
        RoundRobinRouter().choose(CALL, replicas, exclude)


def test_recovers_when_a_replica_becomes_healthy_again() -> None:
    router = RoundRobinRouter()
    with pytest.raises(NoReplicaAvailable):
        router.choose(CALL, views("r0", unhealthy=("r0",)))
    assert router.choose(CALL, views("r0")) == "r0"
