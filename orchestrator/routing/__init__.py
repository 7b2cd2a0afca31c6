"""Replica choice and call priority: pure functions of (call, replica views, book)."""

from orchestrator.routing.book import PrefixIndex, ReplicaId, ReplicaView, RoutedCall, RoutingBook
from orchestrator.routing.choose import (
    NoReplicaAvailable,
    choose_least_load,
    choose_prefix_affinity,
    choose_program_aware,
    choose_round_robin,
)
from orchestrator.routing.policy import (
    LeastLoadRouter,
    PrefixAffinityRouter,
    ProgramAwareRouter,
    RoundRobinRouter,
    Router,
    RouterSettings,
    RoutingPolicy,
    make_router,
)
from orchestrator.routing.priority import PriorityPolicy, PrioritySettings, TaskService

__all__ = [
    "LeastLoadRouter",
    "NoReplicaAvailable",
    "PrefixAffinityRouter",
    "PrefixIndex",
    "PriorityPolicy",
    "PrioritySettings",
    "ProgramAwareRouter",
    "ReplicaId",
    "ReplicaView",
    "RoundRobinRouter",
    "RoutedCall",
    "Router",
    "RouterSettings",
    "RoutingBook",
    "RoutingPolicy",
    "TaskService",
    "choose_least_load",
    "choose_prefix_affinity",
    "choose_program_aware",
    "choose_round_robin",
    "make_router",
]
