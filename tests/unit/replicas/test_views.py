"""What both pools report of a replica from their record of it: routing's view and the
status, before and after its engine reported statistics."""

from __future__ import annotations

from orchestrator.domain import EngineStats, ReplicaState
from orchestrator.replicas.views import replica_status, replica_view

STATS = EngineStats(
    unfinished_requests=5,
    calls_served=7,
    output_tokens_served=90,
    waiting_requests=2,
    running_requests=3,
    kv_usage=0.25,
    prefix_queries=4,
    prefix_hits=3,
    kv_block_tokens=128,
    kv_capacity_blocks=64,
)


def test_a_view_carries_the_engines_statistics_once_reported() -> None:
    bare = replica_view("r0", ReplicaState.STARTING, 1, None)
    assert (bare.healthy, bare.in_flight_calls, bare.waiting_requests) == (False, 1, 0)
    view = replica_view("r0", ReplicaState.READY, 1, STATS)
    assert view.healthy and (view.waiting_requests, view.running_requests) == (2, 3)
    assert (view.prefix_hit_rate, view.kv_block_tokens, view.kv_capacity_blocks) == (
        0.75,
        128,
        64,
    )


def test_a_status_counts_zero_until_the_engine_reported() -> None:
    args = ("r0", ReplicaState.UNHEALTHY, 2, "gone")
    where = {"engine": "openai", "model": "m", "node": "http://h:1"}
    bare = replica_status(*args, None, **where)
    assert (bare.unfinished_requests, bare.calls_served, bare.kv_usage) == (0, 0, 0.0)
    assert (bare.in_flight_calls, bare.last_error, bare.node) == (2, "gone", "http://h:1")
    status = replica_status(*args, STATS, **where)
    assert (status.unfinished_requests, status.calls_served, status.output_tokens_served) == (
        5,
        7,
        90,
    )
    assert (status.waiting_requests, status.kv_usage, status.prefix_hit_rate) == (2, 0.25, 0.75)
