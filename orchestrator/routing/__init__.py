"""Replica choice and call priority: pure functions of (call, replica views, task state)."""

from orchestrator.routing.policy import (
    BaseRouter,
    LeastLoadRouter,
    NoReplicaAvailable,
    PrefixAffinityRouter,
    PrefixIndex,
    ProgramAwareRouter,
    ReplicaView,
    RoundRobinRouter,
    Router,
    RouterSettings,
    RoutingPolicy,
    make_router,
)
from orchestrator.routing.priority import PriorityPolicy, PrioritySettings, TaskService

__all__ = [
    "BaseRouter",
    "LeastLoadRouter",
    "NoReplicaAvailable",
    "PrefixAffinityRouter",
    "PrefixIndex",
    "PriorityPolicy",
    "PrioritySettings",
    "ProgramAwareRouter",
    "ReplicaView",
    "RoundRobinRouter",
    "Router",
    "RouterSettings",
    "RoutingPolicy",
    "TaskService",
    "make_router",
]
