"""Routing policies. A router sees a call and a snapshot of the replicas and names one;
it never awaits, calls Ray or touches gRPC, so every policy is unit-testable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from orchestrator.domain import CallRequest


@dataclass(slots=True, frozen=True)
class ReplicaView:
    """What routing knows of one replica at decision time (no Ray round trip)."""

    name: str
    healthy: bool
    in_flight_calls: int  # calls the orchestrator has dispatched and not yet seen finish


class NoReplicaAvailable(Exception):
    """Every replica is unhealthy (or there are none)."""


class Router(Protocol):
    def choose(
        self, call: CallRequest, replicas: Sequence[ReplicaView], exclude: frozenset[str] = ...
    ) -> str: ...


class RoundRobinRouter:
    """Cycles over the healthy replicas in name order, skipping `exclude`d ones."""

    def __init__(self) -> None:
        self._next = 0

    def choose(
        self,
        call: CallRequest,
        replicas: Sequence[ReplicaView],
        exclude: frozenset[str] = frozenset(),
    ) -> str:
        candidates = sorted(
            (r for r in replicas if r.healthy and r.name not in exclude), key=lambda r: r.name
        )
        if not candidates:
            raise NoReplicaAvailable(
                f"no healthy replica among {len(replicas)} (excluded: {sorted(exclude)})"
            )
        chosen = candidates[self._next % len(candidates)]
        self._next += 1
        return chosen.name
