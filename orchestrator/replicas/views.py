"""What a pool reports of its replicas, from its own record of each (state, calls in
flight, last error, the engine's last statistics): routing's view (`replica_view`) and
the status a client reads (`replica_status`). Shared by the Ray pool (pool.py) and the
pool of existing OpenAI-compatible servers (openai_pool.py), which keep the same record.
"""

from __future__ import annotations

from orchestrator.domain import EngineStats, ReplicaState, ReplicaStatus
from orchestrator.routing import ReplicaView


def replica_view(
    name: str, state: ReplicaState, in_flight: int, stats: EngineStats | None
) -> ReplicaView:
    """Routing's view of one replica; only the orchestrator's counts until its engine has
    reported statistics."""
    healthy = state is ReplicaState.READY
    if stats is None:
        return ReplicaView(name, healthy, in_flight)
    return ReplicaView(
        name,
        healthy,
        in_flight,
        waiting_requests=stats.waiting_requests,
        running_requests=stats.running_requests,
        kv_usage=stats.kv_usage,
        prefix_hit_rate=stats.prefix_hit_rate,
        kv_block_tokens=stats.kv_block_tokens,
        kv_capacity_blocks=stats.kv_capacity_blocks,
        evicted_blocks=stats.evicted_blocks,
    )


def replica_status(
    name: str,
    state: ReplicaState,
    in_flight: int,
    last_error: str,
    stats: EngineStats | None,
    *,
    engine: str,
    model: str,
    node: str,
    replacements: int = 0,
) -> ReplicaStatus:
    """The status of one replica; the engine's counts are 0 until it reported any."""
    return ReplicaStatus(
        name=name,
        state=state,
        engine=engine,
        model=model,
        node=node,
        unfinished_requests=stats.unfinished_requests if stats else 0,
        in_flight_calls=in_flight,
        calls_served=stats.calls_served if stats else 0,
        output_tokens_served=stats.output_tokens_served if stats else 0,
        last_error=last_error,
        waiting_requests=stats.waiting_requests if stats else 0,
        running_requests=stats.running_requests if stats else 0,
        kv_usage=stats.kv_usage if stats else 0.0,
        prefix_hit_rate=stats.prefix_hit_rate if stats else 0.0,
        replacements=replacements,
    )
