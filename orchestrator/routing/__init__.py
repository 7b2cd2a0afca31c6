"""Replica choice for each call: pure functions of (call, replica views)."""

from orchestrator.routing.policy import NoReplicaAvailable, ReplicaView, RoundRobinRouter, Router

__all__ = ["NoReplicaAvailable", "ReplicaView", "RoundRobinRouter", "Router"]
