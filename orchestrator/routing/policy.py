"""The `Router` facade the executor and the fast-forward simulator call: it owns one
`RoutingBook` and one pure choice function (`orchestrator.routing.choose`), and turns
each decision into the same three steps, in an order that no longer hides in a class
hierarchy: fold in the engines' statistics, choose, record the placement.

A router never awaits, calls Ray or touches gRPC, so every policy is unit-testable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchestrator.config import RouterSettings, RoutingPolicy
from orchestrator.domain import CallRequest
from orchestrator.routing.book import (
    INDEX_BLOCK_TOKENS,
    PrefixIndex,
    ReplicaId,
    ReplicaView,
    RoutingBook,
    call_tokens,
)
from orchestrator.routing.choose import CHOOSERS, PREFIX_AWARE, NoReplicaAvailable, candidates

__all__ = [
    "INDEX_BLOCK_TOKENS",
    "LeastLoadRouter",
    "NoReplicaAvailable",
    "PrefixAffinityRouter",
    "PrefixIndex",
    "ProgramAwareRouter",
    "ReplicaView",
    "RoundRobinRouter",
    "Router",
    "RouterSettings",
    "RoutingPolicy",
    "call_tokens",
    "make_router",
]


class Router:
    """Routes calls by `settings.policy`, keeping its book (module docstring)."""

    def __init__(self, settings: RouterSettings | None = None) -> None:
        self.settings = settings or RouterSettings()
        self.book = RoutingBook(track_prefixes=self.settings.policy in PREFIX_AWARE)
        self._choose = CHOOSERS[self.settings.policy]

    def choose(
        self,
        call: CallRequest,
        replicas: Sequence[ReplicaView],
        exclude: frozenset[str] = frozenset(),
    ) -> ReplicaId:
        """The replica for `call`; the call counts against it until `finished`. Raises
        NoReplicaAvailable when no healthy replica is left outside `exclude`."""
        book = self.book
        # A retry of a call routed before: its old placement no longer counts.
        book.finished(call.call_id)
        # Before the candidates: a cluster-wide outage must still clear the indexes.
        book.observe(replicas)
        live = candidates(replicas, exclude)
        routed = book.routed(call)
        replica = self._choose(routed, live, book, self.settings)
        book.placed(routed, replica)
        return replica

    def finished(self, call_id: str, output_token_ids: Sequence[int] | None = None) -> None:
        """The call ended (with its output, or None when it failed or was aborted);
        a second report of the same call is ignored."""
        self.book.finished(call_id, output_token_ids)

    def outstanding_tokens(self) -> Mapping[ReplicaId, int]:
        """Tokens routed to each replica and not yet finished."""
        return self.book.outstanding_tokens()

    def load(self, name: ReplicaId) -> int:
        return self.book.load(name)

    def index(self, name: ReplicaId) -> PrefixIndex:
        """The replica's prefix index (an empty one when the book has none)."""
        index = self.book.index(name)
        return PrefixIndex() if index is None else index


# Named constructors, one per policy (tests and servers build them directly).
class RoundRobinRouter(Router):
    def __init__(self) -> None:
        super().__init__(RouterSettings(policy=RoutingPolicy.ROUND_ROBIN))


class LeastLoadRouter(Router):
    def __init__(self) -> None:
        super().__init__(RouterSettings(policy=RoutingPolicy.LEAST_LOAD))


class PrefixAffinityRouter(Router):
    def __init__(
        self, epsilon: float = 0.25, min_match_ratio: float = 0.1, slack_tokens: int = 16384
    ) -> None:
        super().__init__(
            RouterSettings(
                policy=RoutingPolicy.PREFIX_AFFINITY,
                load_epsilon=epsilon,
                min_match_ratio=min_match_ratio,
                load_slack_tokens=slack_tokens,
            )
        )


class ProgramAwareRouter(Router):
    def __init__(self, overlap_weight: float = 4.0) -> None:
        super().__init__(
            RouterSettings(policy=RoutingPolicy.PROGRAM_AWARE, overlap_weight=overlap_weight)
        )


def make_router(settings: RouterSettings) -> Router:
    if settings.policy is RoutingPolicy.ROUND_ROBIN:
        return RoundRobinRouter()
    if settings.policy is RoutingPolicy.LEAST_LOAD:
        return LeastLoadRouter()
    if settings.policy is RoutingPolicy.PREFIX_AFFINITY:
        return PrefixAffinityRouter(
            settings.load_epsilon, settings.min_match_ratio, settings.load_slack_tokens
        )
    return ProgramAwareRouter(overlap_weight=settings.overlap_weight)
