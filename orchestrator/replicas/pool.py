"""`ReplicaPool`: starts, names, health-checks, replaces and calls the replica actors.

The pool is the only code that talks to Ray on the hot path. It keeps a local view of
each replica (health, calls in flight) so routing never needs a Ray round trip, and it
translates Ray failures into `EngineError`s with codes the server can map to statuses.

It heals itself: an actor Ray reports dead (on a call, a stats read or a liveness
check) is replaced by a new one with the same config and name, placed by Ray wherever
resources allow, with exponential back-off while it keeps dying. Liveness is a cheap
`ping` with a generous timeout, apart from the stats reads: a slow read, or a probe
timing out only because this event loop was busy, never marks a replica unhealthy.
The decisions are pure (healing.py); every health change is logged once at WARNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from typing import Any

import ray
from ray.exceptions import (
    ActorUnavailableError,
    GetTimeoutError,
    RayActorError,
    RayTaskError,
    TaskCancelledError,
)
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
from orchestrator.replicas.aborts import AbortBatcher
from orchestrator.replicas.actor import ReplicaActor, ReplicaInfo
from orchestrator.replicas.engine import EngineError
from orchestrator.replicas.healing import (
    Backoff,
    Health,
    Probe,
    Transition,
    after_probe,
    restarts_after_run,
    timed_out,
)
from orchestrator.replicas.views import replica_status, replica_view
from orchestrator.routing import ReplicaView

log = logging.getLogger(__name__)

# A stats read slower than this is skipped (routing keeps the previous figures); it says
# nothing about the replica's health.
STATS_TIMEOUT_S = 5.0
# How long a status read waits for an engine's fresh figures before it shows the last
# refreshed ones (at most stats_period_s old): an engine busy with a storm of aborts
# must not stall GetClusterStatus. The read goes on in the background.
STATUS_STATS_WAIT_S = 0.1
# How long a replacement waits for Ray to release the name of the actor it replaces.
NAME_RELEASE_TIMEOUT_S = 10.0
# How long a drained replica's engine gets to shut down before its actor is killed.
SHUTDOWN_TIMEOUT_S = 30.0


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
        self.failures = 0  # liveness checks in a row without an answer
        self.restarts = 0  # restarts in a row that did not run restart_stable_s (back-off)
        self.replacements = 0  # dead actors replaced since the pool started (metrics)
        self.ready_at = 0.0  # loop time the current actor's engine came up
        self.replacing: asyncio.Task[None] | None = None  # while a new actor is started
        # Being drained (drain_replica): not routable, not health-checked, never
        # replaced; its calls in flight finish. ReplicaState stays as the proto has it.
        self.draining = False
        self.idle: asyncio.Event | None = None  # while draining: set once no call is open
        self.reading: asyncio.Task[EngineStats | None] | None = None  # a status's stats read
        # Aborts of this actor's cancelled calls, sent in batches; a new actor, a new one.
        self.aborts = abort_batcher(name, actor)


def abort_batcher(name: str, actor: Any) -> AbortBatcher:
    """The abort batcher of one replica actor."""
    return AbortBatcher(name, lambda call_ids: actor.abort_many.remote(list(call_ids)))


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
        self._stats_task: asyncio.Task[None] | None = None
        self._placement = Placement(num_cpus=config.num_cpus, num_gpus=0.0, bundles=())
        self._remote_cls: Any = None
        self._backoff = Backoff(config.restart_backoff_initial_s, config.restart_backoff_max_s)
        self._closing = False

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
        self._placement = plan_placement(self._config, resources.get("GPU", 0.0))
        self._remote_cls = ray.remote(ReplicaActor)
        for index in range(self._config.count):
            name = f"replica-{index}"
            actor, group = self._launch(name)
            self._replicas[name] = _Replica(name, actor, group)
        try:
            infos = await asyncio.wait_for(
                asyncio.gather(*(r.actor.start.remote() for r in self._replicas.values())),
                timeout=self._config.start_timeout_s,
            )
        except BaseException:
            await self.shutdown()
            raise
        now = asyncio.get_running_loop().time()
        for info in infos:
            replica = self._replicas[info.name]
            replica.info = info
            replica.state = ReplicaState.READY
            replica.ready_at = now
        self._stats_task = asyncio.create_task(self._stats_loop())
        self._health_task = asyncio.create_task(self._health_loop())

    def _launch(self, name: str) -> tuple[Any, PlacementGroup | None]:
        """Create the actor (not yet started) of replica `name`, with its placement group
        when it spans several GPUs. Raises ValueError while Ray still holds the name."""
        placement = self._placement
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
        try:
            actor = self._remote_cls.options(**options).remote(name, self._config, self._model)
        except BaseException:
            if group is not None:
                with contextlib.suppress(Exception):
                    remove_placement_group(group)
            raise
        return actor, group

    def views(self) -> list[ReplicaView]:
        """Routing's view of every replica, from local state only: the engines' stats
        are refreshed in the background every `stats_period_s`, never per call."""
        views = []
        for r in self._replicas.values():
            view = replica_view(r.name, r.state, r.in_flight, r.stats)
            views.append(replace(view, healthy=False) if r.draining else view)
        return views

    def _routable(self, replica_name: str) -> _Replica:
        """The replica a call was routed to; gone (drained and removed since routing
        chose it) is UNAVAILABLE, which the task retries on another replica."""
        replica = self._replicas.get(replica_name)
        if replica is None:
            raise EngineError(
                ErrorCode.UNAVAILABLE, f"replica {replica_name} was drained and removed"
            )
        return replica

    async def drain_replica(self, name: str, timeout_s: float) -> int:
        """Take replica `name` out of the pool without failing its calls: routing stops
        choosing it at once, the calls in flight on it run to the end (for up to
        `timeout_s`), then its engine shuts down, its actor is killed and it is removed,
        never replaced. Returns the calls still in flight at the timeout (0: a clean
        drain); those fail UNAVAILABLE when the actor goes, and their tasks retry them
        on the other replicas. Raises KeyError for an unknown replica."""
        replica = self._replicas[name]
        replica.draining = True
        replica.last_error = "draining: no new calls; removed once its calls finish"
        log.warning("replica %s draining: %d calls in flight", name, replica.in_flight)
        # A call routed here just before the drain starts in a task of its own: let it
        # reach `call` (and count), or fail over from `_routable` once this one is gone.
        await asyncio.sleep(0)
        replica.idle = asyncio.Event()
        if replica.in_flight == 0:
            replica.idle.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await replica.idle.wait()
        left = replica.in_flight
        if replica.replacing is not None:
            replica.replacing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await replica.replacing
        self._replicas.pop(name, None)
        # Its engine shuts down (or its actor is killed) below, which ends any call an
        # abort still pending was for.
        await replica.aborts.close()
        if replica.state is ReplicaState.READY and left == 0:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(replica.actor.shutdown.remote(), SHUTDOWN_TIMEOUT_S)
        self._discard(replica.actor, replica.group)
        replica.group = None
        replica.state = ReplicaState.STOPPED
        log.warning("replica %s drained and removed (%d calls were still in flight)", name, left)
        return left

    async def call(self, replica_name: str, call: CallRequest) -> CallResult:
        """Run one call to completion on the named replica."""
        replica = self._routable(replica_name)
        replica.in_flight += 1
        actor = replica.actor
        ref = actor.generate.remote(call)
        try:
            result: CallResult = await ref
            return result
        except asyncio.CancelledError:
            # The engine's abort ends the actor's call (its reply goes nowhere), so the
            # call is no longer in flight here once the abort is queued.
            self._abort(replica, actor, call.call_id)
            raise
        except (RayTaskError, RayActorError, TaskCancelledError) as exc:
            raise self._failed(replica, actor, exc) from exc
        finally:
            replica.in_flight -= 1
            if replica.in_flight == 0 and replica.idle is not None:
                replica.idle.set()

    async def stream(
        self, replica_name: str, call: CallRequest
    ) -> AsyncGenerator[CallDelta | CallResult, None]:
        """Run one call on the named replica, yielding its deltas and then its result."""
        replica = self._routable(replica_name)
        replica.in_flight += 1
        actor = replica.actor
        refs = actor.generate_stream.options(num_returns="streaming").remote(call)
        try:
            async for ref in refs:
                item: CallDelta | CallResult = await ref
                yield item
        except (asyncio.CancelledError, GeneratorExit):
            # The engine's abort ends the actor's generator too; the stream's items
            # left are dropped with `refs`.
            self._abort(replica, actor, call.call_id)
            raise
        except (RayTaskError, RayActorError, TaskCancelledError) as exc:
            raise self._failed(replica, actor, exc) from exc
        finally:
            replica.in_flight -= 1
            if replica.in_flight == 0 and replica.idle is not None:
                replica.idle.set()

    def _failed(self, replica: _Replica, actor: Any, exc: BaseException) -> EngineError:
        error = _as_engine_error(replica, exc)
        if isinstance(exc, ActorUnavailableError):
            pass  # Ray cannot reach it for now: liveness checks decide, not one call
        elif isinstance(exc, RayActorError):
            self._apply(replica, actor, Probe.DEAD, error.message)
        return error

    @staticmethod
    def _abort(replica: _Replica, actor: Any, call_id: str) -> None:
        """Queue the abort of a call on `actor` (O(1), no await: a cancellation storm
        must not stall this loop); its batch reaches the engine in the background. A
        call whose actor was replaced meanwhile died with it: nothing to abort."""
        if replica.actor is actor:
            replica.aborts.add(call_id)

    async def status(self) -> ClusterStatus:
        """Fresh status, reading each engine's live request count (or, from an engine
        slower than STATUS_STATS_WAIT_S to answer, its last refreshed figures)."""
        replicas = list(self._replicas.values())
        stats = await asyncio.gather(*(self._status_stats(r) for r in replicas))
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
                    replacements=replica.replacements,
                )
            )
        return ClusterStatus(
            replicas=tuple(out), model=self._model, max_model_len=self.max_model_len
        )

    def _probed(self, replica: _Replica) -> bool:
        # A replica being replaced has no actor worth asking until the new one is up.
        return (
            not self._closing
            and not replica.draining
            and replica.replacing is None
            and replica.state
            in (
                ReplicaState.READY,
                ReplicaState.UNHEALTHY,
            )
        )

    async def _status_stats(self, replica: _Replica) -> EngineStats | None:
        if not self._probed(replica):
            return None
        read = replica.reading
        if read is None or read.done():  # status reads of one engine share one Ray call
            read = asyncio.create_task(self._stats_or_none(replica))
            replica.reading = read
        done, _ = await asyncio.wait({read}, timeout=STATUS_STATS_WAIT_S)
        if read in done and (fresh := read.result()) is not None:
            return fresh
        return replica.stats

    async def _stats_or_none(self, replica: _Replica) -> EngineStats | None:
        """The engine's statistics, or None when it did not answer in STATS_TIMEOUT_S.
        A reply proves the actor alive and a dead actor is replaced, but a slow read (a
        busy engine, or this loop too busy to see the reply) changes nothing else."""
        if not self._probed(replica):
            return None
        actor = replica.actor
        probe, stats, detail = await self._probe(actor.stats.remote(), STATS_TIMEOUT_S)
        if probe in (Probe.ANSWERED, Probe.DEAD):
            self._apply(replica, actor, probe, detail)
        if isinstance(stats, EngineStats):
            if replica.actor is actor:  # a read a status stopped waiting for lands here
                replica.stats = stats
            return stats
        return None

    async def _is_alive(self, replica: _Replica) -> None:
        """One liveness check: `ping` with the generous `liveness_timeout_s`."""
        if not self._probed(replica):
            return
        actor = replica.actor
        timeout_s = self._config.liveness_timeout_s
        probe, _, detail = await self._probe(actor.ping.remote(), timeout_s)
        self._apply(replica, actor, probe, detail)

    @staticmethod
    async def _probe(ref: Any, timeout_s: float) -> tuple[Probe, object, str]:
        """Await one actor call: what it says of the actor, its value, and why it failed."""
        loop = asyncio.get_running_loop()
        sent = loop.time()
        try:
            value: object = await asyncio.wait_for(ref, timeout=timeout_s)
        except ActorUnavailableError as exc:
            return Probe.NO_ANSWER, None, f"unreachable: {exc}"
        except RayActorError as exc:
            return Probe.DEAD, None, f"actor died: {exc}"
        except (TimeoutError, GetTimeoutError):
            return timed_out(loop.time() - sent, timeout_s), None, f"no answer in {timeout_s:g} s"
        except RayTaskError as exc:
            return Probe.NO_ANSWER, None, f"failed: {exc.cause!r}"
        return Probe.ANSWERED, value, ""

    def _apply(self, replica: _Replica, actor: Any, probe: Probe, detail: str) -> None:
        """Update a replica's health from what a call or probe of `actor` said, logging
        each change once. A late answer from an actor already replaced is ignored."""
        if replica.actor is not actor or not self._probed(replica):
            return
        decision = after_probe(
            Health(replica.state, replica.failures), probe, self._config.liveness_failures
        )
        replica.state, replica.failures = decision.health.state, decision.health.failures
        if decision.transition is Transition.UNHEALTHY:
            replica.last_error = f"health check failed: {detail}"
            log.warning(
                "replica %s is unhealthy: %d liveness checks in a row failed (last: %s); "
                "calls go to the other replicas",
                replica.name,
                replica.failures,
                detail,
            )
        elif decision.transition is Transition.HEALTHY:
            replica.last_error = ""
            log.warning("replica %s is healthy again", replica.name)
        if decision.replace:
            self._replace(replica, detail)

    def _replace(self, replica: _Replica, cause: str) -> None:
        """Start replacing a dead replica's actor (in the background, until it works)."""
        now = asyncio.get_running_loop().time()
        replica.restarts = restarts_after_run(
            replica.restarts, now - replica.ready_at, self._config.restart_stable_s
        )
        replica.last_error = f"replacing a dead actor: {cause}"
        delay = self._backoff.delay(replica.restarts)
        log.warning(
            "replica %s died (%s); replacing it in %.1f s, calls go to the other replicas",
            replica.name,
            cause,
            delay,
        )
        replica.replacing = asyncio.create_task(
            self._restart(replica, died_at=now), name=f"replace-{replica.name}"
        )

    async def _restart(self, replica: _Replica, died_at: float) -> None:
        """Start new actors for `replica` with back-off until one's engine is up; the
        old actor is killed first (and its GPUs freed), so Ray may place the new one
        anywhere, the old node included."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await asyncio.sleep(self._backoff.delay(replica.restarts))
                replica.restarts += 1
                self._discard(replica.actor, replica.group)
                replica.group = None
                try:
                    actor, group = await self._launch_when_name_free(replica.name)
                    try:
                        info: ReplicaInfo = await asyncio.wait_for(
                            actor.start.remote(), timeout=self._config.start_timeout_s
                        )
                    except BaseException:
                        self._discard(actor, group)
                        raise
                except Exception as exc:  # noqa: BLE001 - any failure: back off, try again
                    replica.last_error = f"restart {replica.restarts} failed: {exc!r}"
                    log.warning(
                        "replica %s: restart %d failed (%r); trying again in %.1f s",
                        replica.name,
                        replica.restarts,
                        exc,
                        self._backoff.delay(replica.restarts),
                    )
                    continue
                replica.actor, replica.group, replica.info = actor, group, info
                replica.replacements += 1
                replica.aborts = abort_batcher(replica.name, actor)
                replica.state, replica.failures = ReplicaState.READY, 0
                replica.stats, replica.last_error = None, ""
                replica.ready_at = loop.time()
                log.warning(
                    "replica %s replaced: a new actor serves on node %s, %.1f s after the "
                    "old one died (restart %d in a row)",
                    replica.name,
                    info.node,
                    replica.ready_at - died_at,
                    replica.restarts,
                )
                return
        finally:
            replica.replacing = None

    async def _launch_when_name_free(self, name: str) -> tuple[Any, PlacementGroup | None]:
        # Ray frees a killed actor's name asynchronously.
        deadline = asyncio.get_running_loop().time() + NAME_RELEASE_TIMEOUT_S
        while True:
            try:
                return self._launch(name)
            except ValueError:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
                await asyncio.sleep(0.1)

    @staticmethod
    def _discard(actor: Any, group: PlacementGroup | None) -> None:
        with contextlib.suppress(Exception):
            ray.kill(actor)
        if group is not None:
            with contextlib.suppress(Exception):
                remove_placement_group(group)

    async def _stats_loop(self) -> None:
        """Refresh every engine's stats (routing reads them), concurrently."""
        while True:
            await asyncio.sleep(self._config.stats_period_s)
            replicas = [r for r in self._replicas.values() if self._probed(r)]
            stats = await asyncio.gather(*(self._stats_or_none(r) for r in replicas))
            for replica, stat in zip(replicas, stats, strict=True):
                if stat is not None:
                    replica.stats = stat

    async def _health_loop(self) -> None:
        """Check every replica's liveness each `health_period_s`, each check on its own
        (a replica slow to answer does not hold up the others' checks)."""
        checking: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                await asyncio.sleep(self._config.health_period_s)
                for replica in self._replicas.values():
                    running = checking.get(replica.name)
                    if self._probed(replica) and (running is None or running.done()):
                        checking[replica.name] = asyncio.create_task(self._is_alive(replica))
        finally:
            for task in checking.values():
                task.cancel()
            await asyncio.gather(*checking.values(), return_exceptions=True)

    async def shutdown(self) -> None:
        self._closing = True
        tasks: list[asyncio.Task[Any] | None] = [self._health_task, self._stats_task]
        tasks += [r.replacing for r in self._replicas.values()]
        tasks += [r.reading for r in self._replicas.values()]
        for task in tasks:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
        self._health_task = self._stats_task = None
        for replica in list(self._replicas.values()):  # a drain_replica may remove one
            await replica.aborts.close()  # the engine's shutdown ends every call
            with contextlib.suppress(Exception):
                await asyncio.wait_for(replica.actor.shutdown.remote(), timeout=30.0)
            with contextlib.suppress(Exception):
                ray.kill(replica.actor)
            if replica.group is not None:
                with contextlib.suppress(Exception):
                    remove_placement_group(replica.group)
            replica.state = ReplicaState.STOPPED
