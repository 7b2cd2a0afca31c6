"""`ReplicaPool`: starts, names, health-checks and calls the replica actors.

The pool is the only code that talks to Ray on the hot path. It keeps a local view of
each replica (health, calls in flight) so routing never needs a Ray round trip, and it
translates Ray failures into `EngineError`s with codes the server can map to statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError, TaskCancelledError
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from orchestrator.config import Backend, ReplicasConfig
from orchestrator.domain import (
    CallDelta,
    CallRequest,
    CallResult,
    ClusterStatus,
    EngineStats,
    ErrorCode,
    ReplicaState,
)
from orchestrator.replicas.actor import ReplicaActor, ReplicaInfo
from orchestrator.replicas.engine import EngineError
from orchestrator.replicas.views import replica_status, replica_view
from orchestrator.routing import ReplicaView

log = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class Placement:
    """Ray resources for one replica actor (pure data, so it is testable without GPUs)."""

    num_cpus: float
    num_gpus: float
    # GPU bundles of the replica's placement group; () when it needs none.
    bundles: tuple[dict[str, float], ...]


def plan_placement(config: ReplicasConfig, cluster_gpus: float) -> Placement:
    """Resources for each replica.

    Tensor-parallel degree t on GPUs: a placement group of t bundles of one GPU each,
    packed on one node. With t == 1 the actor itself holds the GPU (vLLM runs in the
    actor's process tree); with t > 1 vLLM's Ray executor starts one worker per bundle
    (each bundle's GPU and CPU are for those workers), and the actor itself reserves
    nothing: it only hosts the engine's front end. A simulated replica never takes a
    GPU, whatever the cluster has: it only needs its CPU share.
    """
    if config.backend is Backend.SIM:
        return Placement(num_cpus=config.num_cpus, num_gpus=0.0, bundles=())
    use_gpus = config.use_gpus if config.use_gpus is not None else cluster_gpus > 0
    tp = config.engine.tensor_parallel_size
    if not use_gpus:
        return Placement(num_cpus=config.num_cpus, num_gpus=0.0, bundles=())
    if tp == 1:
        return Placement(num_cpus=config.num_cpus, num_gpus=1.0, bundles=())
    bundles = tuple({"GPU": 1.0, "CPU": 1.0} for _ in range(tp))
    return Placement(num_cpus=0.0, num_gpus=0.0, bundles=bundles)


class _Replica:
    """The pool's mutable record of one replica; only the pool touches it."""

    def __init__(self, name: str, actor: Any, group: PlacementGroup | None) -> None:
        self.name = name
        self.actor = actor
        self.group = group
        self.state = ReplicaState.STARTING
        self.info: ReplicaInfo | None = None
        self.in_flight = 0
        self.last_error = ""
        self.stats: EngineStats | None = None  # the engine's, as of the last refresh


def _as_engine_error(replica: _Replica, exc: BaseException) -> EngineError:
    if isinstance(exc, RayTaskError):
        cause = exc.cause
        if isinstance(cause, EngineError):
            return EngineError(cause.code, cause.message)
        return EngineError(ErrorCode.INTERNAL, f"replica {replica.name} failed: {cause!r}")
    if isinstance(exc, EngineError):
        return exc
    if isinstance(exc, RayActorError):
        return EngineError(ErrorCode.UNAVAILABLE, f"replica {replica.name} is gone: {exc}")
    return EngineError(ErrorCode.INTERNAL, f"replica {replica.name} failed: {exc!r}")


class ReplicaPool:
    def __init__(self, config: ReplicasConfig, model: str, namespace: str) -> None:
        self._config = config
        self._model = model
        self._namespace = namespace
        self._replicas: dict[str, _Replica] = {}
        self._health_task: asyncio.Task[None] | None = None

    @property
    def model(self) -> str:
        return self._model

    @property
    def max_model_len(self) -> int:
        if self._config.backend is Backend.SIM:
            return self._config.sim.max_model_len
        return self._config.engine.max_model_len

    async def start(self) -> None:
        """Start every replica and wait until all engines are up (or fail loudly)."""
        resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
        placement = plan_placement(self._config, resources.get("GPU", 0.0))
        remote_cls = ray.remote(ReplicaActor)
        for index in range(self._config.count):
            name = f"replica-{index}"
            group = None
            options: dict[str, Any] = {
                "name": f"inflection-{name}",
                "namespace": self._namespace,
                "num_cpus": placement.num_cpus,
                "num_gpus": placement.num_gpus,
                "max_concurrency": 10_000,  # async actor: concurrent calls, not threads
                "lifetime": None,
            }
            if placement.bundles:
                group = placement_group(list(placement.bundles), strategy="STRICT_PACK")
                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    placement_group=group, placement_group_capture_child_tasks=True
                )
            actor = remote_cls.options(**options).remote(name, self._config, self._model)
            self._replicas[name] = _Replica(name, actor, group)
        try:
            infos = await asyncio.wait_for(
                asyncio.gather(*(r.actor.start.remote() for r in self._replicas.values())),
                timeout=self._config.start_timeout_s,
            )
        except BaseException:
            await self.shutdown()
            raise
        for info in infos:
            replica = self._replicas[info.name]
            replica.info = info
            replica.state = ReplicaState.READY
        self._health_task = asyncio.create_task(self._health_loop())

    def views(self) -> list[ReplicaView]:
        """Routing's view of every replica, from local state only: the engines' stats
        are refreshed in the background every `stats_period_s`, never per call."""
        return [
            replica_view(r.name, r.state, r.in_flight, r.stats) for r in self._replicas.values()
        ]

    async def call(self, replica_name: str, call: CallRequest) -> CallResult:
        """Run one call to completion on the named replica."""
        replica = self._replicas[replica_name]
        replica.in_flight += 1
        ref = replica.actor.generate.remote(call)
        try:
            result: CallResult = await ref
            return result
        except asyncio.CancelledError:
            ray.cancel(ref)
            await self._abort(replica, call.call_id)
            raise
        except (RayTaskError, RayActorError, TaskCancelledError) as exc:
            raise self._failed(replica, exc) from exc
        finally:
            replica.in_flight -= 1

    async def stream(
        self, replica_name: str, call: CallRequest
    ) -> AsyncGenerator[CallDelta | CallResult, None]:
        """Run one call on the named replica, yielding its deltas and then its result."""
        replica = self._replicas[replica_name]
        replica.in_flight += 1
        refs = replica.actor.generate_stream.options(num_returns="streaming").remote(call)
        try:
            async for ref in refs:
                item: CallDelta | CallResult = await ref
                yield item
        except (asyncio.CancelledError, GeneratorExit):
            ray.cancel(refs)
            await self._abort(replica, call.call_id)
            raise
        except (RayTaskError, RayActorError, TaskCancelledError) as exc:
            raise self._failed(replica, exc) from exc
        finally:
            replica.in_flight -= 1

    def _failed(self, replica: _Replica, exc: BaseException) -> EngineError:
        error = _as_engine_error(replica, exc)
        if isinstance(exc, RayActorError):
            replica.state = ReplicaState.UNHEALTHY
            replica.last_error = error.message
        return error

    async def _abort(self, replica: _Replica, call_id: str) -> None:
        # Shielded: the caller is being cancelled, and the abort must still reach vLLM.
        with contextlib.suppress(Exception):
            await asyncio.shield(replica.actor.abort.remote(call_id))

    async def status(self) -> ClusterStatus:
        """Fresh status, reading each engine's live request count."""
        replicas = list(self._replicas.values())
        stats = await asyncio.gather(
            *(self._stats_or_none(r) for r in replicas), return_exceptions=False
        )
        out = []
        for replica, stat in zip(replicas, stats, strict=True):
            info = replica.info
            out.append(
                replica_status(
                    replica.name,
                    replica.state,
                    replica.in_flight,
                    replica.last_error,
                    stat,
                    engine=info.engine if info else self._config.backend.value,
                    model=self._model,
                    node=info.node if info else "",
                )
            )
        return ClusterStatus(
            replicas=tuple(out), model=self._model, max_model_len=self.max_model_len
        )

    async def _stats_or_none(self, replica: _Replica) -> Any:
        if replica.state in (ReplicaState.STARTING, ReplicaState.STOPPED):
            return None
        try:
            return await asyncio.wait_for(replica.actor.stats.remote(), timeout=5.0)
        except (RayActorError, RayTaskError, TimeoutError, GetTimeoutError) as exc:
            replica.state = ReplicaState.UNHEALTHY
            replica.last_error = f"health check failed: {exc!r}"
            return None

    async def _health_loop(self) -> None:
        """Refresh every engine's stats (routing reads them) and health, concurrently."""
        period = min(self._config.health_period_s, self._config.stats_period_s)
        while True:
            await asyncio.sleep(period)
            replicas = [r for r in self._replicas.values() if r.state is not ReplicaState.STOPPED]
            stats = await asyncio.gather(*(self._stats_or_none(r) for r in replicas))
            for replica, stat in zip(replicas, stats, strict=True):
                if stat is None:
                    continue
                replica.stats = stat
                if replica.state is ReplicaState.UNHEALTHY:
                    log.info("replica %s is healthy again", replica.name)
                    replica.state = ReplicaState.READY
                    replica.last_error = ""

    async def shutdown(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
            self._health_task = None
        for replica in self._replicas.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(replica.actor.shutdown.remote(), timeout=30.0)
            with contextlib.suppress(Exception):
                ray.kill(replica.actor)
            if replica.group is not None:
                with contextlib.suppress(Exception):
                    remove_placement_group(replica.group)
            replica.state = ReplicaState.STOPPED
