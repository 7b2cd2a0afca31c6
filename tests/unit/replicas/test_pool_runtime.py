"""`ReplicaPool` at runtime: starting replicas, the background stats refresh that
routing's views read, health transitions (unanswered liveness checks mark a replica
unhealthy and an answer brings it back; a slow stats read or a busy loop changes
nothing), replacing dead actors (with back-off while they keep dying), failures mapped
to `EngineError`s, `status()` and shutdown.

Without Ray: the pool's Ray calls go to a fake `ray` module whose actor handles run the
real `ReplicaActor` in-process on the instant simulated engine (`time_scale: 0`); a
handle can be told to fail like a dead actor. The real Ray path is covered by the
integration tests (tests/integration/test_failover.py, test_routing.py)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
import ray as real_ray
from ray.exceptions import RayActorError, RayTaskError

from orchestrator.config import Backend, ReplicasConfig, SimEngineConfig
from orchestrator.domain import (
    CallDelta,
    CallRequest,
    CallResult,
    ErrorCode,
    ReplicaState,
    Sampling,
)
from orchestrator.replicas import pool as pool_module
from orchestrator.replicas.actor import ReplicaActor
from orchestrator.replicas.engine import EngineError
from orchestrator.replicas.pool import ReplicaPool
from orchestrator.routing import ReplicaView
from tests.polling import async_wait_until

PERIOD_S = 0.02  # health and stats refresh period in these tests


class Method:
    """`handle.method.remote(...)` -> an awaitable, as a Ray actor method gives."""

    def __init__(self, handle: FakeHandle, name: str) -> None:
        self._handle = handle
        self._name = name
        self.streaming = False

    def options(self, **options: Any) -> Method:
        self.streaming = options.get("num_returns") == "streaming"
        return self

    def remote(self, *args: Any) -> Any:
        self._handle.calls.append(self._name)
        if self.streaming:
            return self._stream(*args)
        # Shielded: cancelling the caller's await leaves the actor call running, as Ray does.
        return asyncio.shield(self._run(*args))

    async def _run(self, *args: Any) -> Any:
        if self._name == "generate":  # the pool's own probes are never held
            await self._handle.gate.wait()
        self._handle.check(self._name)
        return await getattr(self._handle.actor, self._name)(*args)

    async def _stream(self, *args: Any) -> AsyncIterator[Awaitable[Any]]:
        self._handle.check(self._name)
        async for item in getattr(self._handle.actor, self._name)(*args):
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(item)
            yield done


class FakeHandle:
    """A Ray actor handle over an in-process `ReplicaActor`."""

    def __init__(self, actor: ReplicaActor, options: dict[str, Any]) -> None:
        self.actor = actor
        self.options = options
        self.calls: list[str] = []
        self.dead = False  # every method raises RayActorError, as for a dead actor
        self.failing: dict[str, BaseException] = {}  # method -> what it raises
        self.killed = False
        self.gate = asyncio.Event()  # cleared: generate calls wait (to see them in flight)
        self.gate.set()

    def check(self, method: str) -> None:
        if self.dead:
            raise RayActorError(error_msg="The actor died unexpectedly")
        if method in self.failing:
            raise self.failing[method]

    def __getattr__(self, name: str) -> Method:
        return Method(self, name)


class FakeRay:
    """The part of `ray` the pool uses."""

    def __init__(self) -> None:
        self.handles: dict[str, FakeHandle] = {}
        self.cancelled: list[Any] = []

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 2.0}

    def remote(self, cls: type[ReplicaActor]) -> Any:
        fake = self

        class Remote:
            def options(self, **options: Any) -> Any:
                def remote(name: str, config: ReplicasConfig, model: str) -> FakeHandle:
                    handle = FakeHandle(cls(name, config, model), options)
                    fake.handles[name] = handle
                    return handle

                return SimpleNamespace(remote=remote)

        return Remote()

    def cancel(self, ref: Any) -> None:
        self.cancelled.append(ref)

    def kill(self, handle: FakeHandle) -> None:
        handle.killed = True


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> FakeRay:
    fake = FakeRay()
    monkeypatch.setattr(pool_module, "ray", fake)
    # ReplicaActor.start asks Ray for its node id; there is no Ray runtime here.
    node = SimpleNamespace(get_node_id=lambda: "node-0")
    monkeypatch.setattr(real_ray, "get_runtime_context", lambda: node)
    return fake


def replicas_config(count: int = 2, **settings: Any) -> ReplicasConfig:
    defaults: dict[str, Any] = {"liveness_failures": 3, "restart_backoff_initial_s": 0.0}
    return ReplicasConfig(
        backend=Backend.SIM,
        count=count,
        num_cpus=0.5,
        health_period_s=PERIOD_S,
        stats_period_s=PERIOD_S,
        start_timeout_s=10,
        sim=SimEngineConfig(time_scale=0.0),
        **(defaults | settings),
    )


@pytest.fixture
async def pool(fake_ray: FakeRay) -> AsyncIterator[ReplicaPool]:
    pool = ReplicaPool(replicas_config(), "sim-model", "test-namespace")
    await pool.start()
    try:
        yield pool
    finally:
        await pool.shutdown()


_ids = iter(range(10**9))


def call(max_tokens: int = 8, prompt: int = 64) -> CallRequest:
    return CallRequest(
        call_id=f"pool-call-{next(_ids)}",
        prompt_token_ids=tuple(range(100, 100 + prompt)),
        sampling=Sampling(max_tokens=max_tokens, ignore_eos=True),
    )


def view(pool: ReplicaPool, name: str) -> ReplicaView:
    [found] = [v for v in pool.views() if v.name == name]
    return found


async def until(predicate: Callable[[], object], what: str) -> None:
    await async_wait_until(predicate, timeout=5.0, what=what)


async def test_start_names_and_places_every_replica_then_serves(
    pool: ReplicaPool, fake_ray: FakeRay
) -> None:
    assert sorted(fake_ray.handles) == ["replica-0", "replica-1"]
    options = fake_ray.handles["replica-0"].options
    assert options["name"] == "inflection-replica-0"
    assert options["namespace"] == "test-namespace"
    assert options["num_cpus"] == 0.5 and options["num_gpus"] == 0.0
    assert all(v.healthy and v.in_flight_calls == 0 for v in pool.views())
    result = await pool.call("replica-1", call(max_tokens=8))
    assert result.usage.output_tokens == 8


async def test_the_stats_refresh_reaches_the_views(pool: ReplicaPool) -> None:
    await pool.call("replica-0", call(prompt=320))
    await pool.call("replica-0", call(prompt=320))  # the same prompt: cache hits
    await until(lambda: view(pool, "replica-0").prefix_hit_rate > 0, "refreshed stats")
    refreshed = view(pool, "replica-0")
    assert refreshed.kv_capacity_blocks > 0 and refreshed.kv_block_tokens == 16
    assert refreshed.waiting_requests == refreshed.running_requests == 0
    assert view(pool, "replica-1").prefix_hit_rate == 0.0  # served nothing


async def test_a_call_counts_in_flight_until_it_ends(pool: ReplicaPool, fake_ray: FakeRay) -> None:
    handle = fake_ray.handles["replica-0"]
    handle.gate.clear()
    running = asyncio.create_task(pool.call("replica-0", call()))
    await until(lambda: view(pool, "replica-0").in_flight_calls == 1, "a call in flight")
    assert view(pool, "replica-1").in_flight_calls == 0
    handle.gate.set()
    await running
    assert view(pool, "replica-0").in_flight_calls == 0


async def test_a_stream_yields_deltas_then_its_result(pool: ReplicaPool) -> None:
    items = [item async for item in pool.stream("replica-0", call(max_tokens=12))]
    assert all(isinstance(i, CallDelta) for i in items[:-1]) and items[:-1]
    result = items[-1]
    assert isinstance(result, CallResult)
    assert sum(len(i.token_ids) for i in items[:-1] if isinstance(i, CallDelta)) == 12
    assert view(pool, "replica-0").in_flight_calls == 0


async def test_unanswered_liveness_checks_mark_unhealthy_and_an_answer_recovers(
    pool: ReplicaPool, fake_ray: FakeRay, caplog: pytest.LogCaptureFixture
) -> None:
    handle = fake_ray.handles["replica-1"]
    # No answer in time to anything (a stats answer would prove it alive).
    handle.failing["ping"] = handle.failing["stats"] = TimeoutError()
    await until(lambda: not view(pool, "replica-1").healthy, "replica-1 unhealthy")
    assert handle.calls.count("ping") >= 3  # liveness_failures in a row, not one
    assert view(pool, "replica-0").healthy
    [status] = [r for r in (await pool.status()).replicas if r.name == "replica-1"]
    assert status.state is ReplicaState.UNHEALTHY
    assert status.last_error.startswith("health check failed: ")
    await asyncio.sleep(5 * PERIOD_S)  # more failed checks: logged once, not per check
    handle.failing.clear()
    await until(lambda: view(pool, "replica-1").healthy, "replica-1 healthy again")
    [status] = [r for r in (await pool.status()).replicas if r.name == "replica-1"]
    assert status.state is ReplicaState.READY and status.last_error == ""
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len([w for w in warnings if "replica-1 is unhealthy" in w]) == 1
    assert len([w for w in warnings if "replica-1 is healthy again" in w]) == 1
    assert fake_ray.handles["replica-1"] is handle  # alive all along: not replaced


async def test_a_stats_read_that_times_out_changes_no_health(
    pool: ReplicaPool, fake_ray: FakeRay
) -> None:
    fake_ray.handles["replica-0"].failing["stats"] = TimeoutError()
    calls = fake_ray.handles["replica-0"].calls
    await until(lambda: calls.count("stats") >= 5, "several failed stats reads")
    assert view(pool, "replica-0").healthy
    assert all(r.state is ReplicaState.READY for r in (await pool.status()).replicas)


async def test_a_busy_loop_does_not_flip_health(fake_ray: FakeRay) -> None:
    """The loop blocked far past the liveness timeout (a cancellation storm): the checks
    in flight time out late, which says nothing about the replicas."""
    config = replicas_config(liveness_failures=1, liveness_timeout_s=0.05)
    pool = ReplicaPool(config, "sim-model", "test-namespace")
    await pool.start()
    try:
        for _ in range(3):
            await asyncio.sleep(PERIOD_S * 1.5)  # checks are sent
            time.sleep(1.3)  # noqa: ASYNC251 - the busy loop is the thing under test
            await asyncio.sleep(PERIOD_S)  # ... and their timeouts handled, late
            assert all(v.healthy for v in pool.views())
    finally:
        await pool.shutdown()


async def test_a_dead_actor_fails_its_call_unavailable_and_is_replaced(
    pool: ReplicaPool, fake_ray: FakeRay, caplog: pytest.LogCaptureFixture
) -> None:
    old = fake_ray.handles["replica-0"]
    old.dead = True
    with pytest.raises(EngineError) as failed:
        await pool.call("replica-0", call())
    assert failed.value.code is ErrorCode.UNAVAILABLE
    assert failed.value.message.startswith("replica replica-0 is gone: ")
    assert not view(pool, "replica-0").healthy  # at once, not at the next health check
    assert view(pool, "replica-0").in_flight_calls == 0
    await until(lambda: view(pool, "replica-0").healthy, "replica-0 replaced")
    new = fake_ray.handles["replica-0"]
    assert new is not old and old.killed
    assert new.options == old.options  # same name, namespace and resources
    assert (await pool.call("replica-0", call())).usage.output_tokens == 8
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [w for w in warnings if "replica-0 died" in w]
    assert [w for w in warnings if "replica-0 replaced" in w]


async def test_a_crash_loop_backs_off_and_never_gives_up(
    fake_ray: FakeRay, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = replicas_config(restart_backoff_initial_s=0.01, restart_backoff_max_s=0.04)
    pool = ReplicaPool(config, "sim-model", "test-namespace")
    await pool.start()
    started = ReplicaActor.start
    attempts: list[float] = []

    async def crashing(self: ReplicaActor) -> Any:
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) <= 6:
            raise RuntimeError("engine failed to load")
        return await started(self)

    monkeypatch.setattr(ReplicaActor, "start", crashing)
    try:
        fake_ray.handles["replica-1"].dead = True
        await until(lambda: len(attempts) >= 7, "seven restarts")
        await until(lambda: view(pool, "replica-1").healthy, "replica-1 replaced at last")
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert gaps[0] >= 0.015  # 0.02 s before the 2nd restart
        assert all(0.035 <= gap < 0.5 for gap in gaps[2:])  # capped at 0.04 s
        assert all(h.killed for h in fake_ray.handles.values() if h.dead)
    finally:
        await pool.shutdown()


async def test_a_late_failure_from_a_replaced_actor_is_ignored(
    pool: ReplicaPool, fake_ray: FakeRay
) -> None:
    old = fake_ray.handles["replica-1"]
    old.gate.clear()
    late = asyncio.create_task(pool.call("replica-1", call()))
    await until(lambda: "generate" in old.calls, "a call on the old actor")
    old.dead = True  # found by the next stats read or liveness check
    await until(lambda: fake_ray.handles["replica-1"] is not old, "a new actor")
    await until(lambda: view(pool, "replica-1").healthy, "replica-1 replaced")
    old.gate.set()  # the old actor's call now fails too, after the replacement
    with pytest.raises(EngineError):
        await late
    await asyncio.sleep(5 * PERIOD_S)
    assert view(pool, "replica-1").healthy
    assert fake_ray.handles["replica-1"] is not old


async def test_an_engine_error_inside_the_actor_keeps_its_code_and_the_replica_healthy(
    pool: ReplicaPool, fake_ray: FakeRay
) -> None:
    cause = EngineError(ErrorCode.INVALID_ARGUMENT, "prompt too long")
    fake_ray.handles["replica-0"].failing["generate"] = RayTaskError("generate", "tb", cause)  # type: ignore[no-untyped-call]
    with pytest.raises(EngineError) as failed:
        await pool.call("replica-0", call())
    assert (failed.value.code, failed.value.message) == (cause.code, cause.message)
    assert view(pool, "replica-0").healthy


async def test_an_unexpected_error_inside_the_actor_is_internal(
    pool: ReplicaPool, fake_ray: FakeRay
) -> None:
    failure = RayTaskError("generate_stream", "tb", ValueError("bad"))  # type: ignore[no-untyped-call]
    fake_ray.handles["replica-1"].failing["generate_stream"] = failure
    with pytest.raises(EngineError) as failed:
        async for _ in pool.stream("replica-1", call()):
            pass
    assert failed.value.code is ErrorCode.INTERNAL
    assert "replica replica-1 failed: ValueError('bad')" in failed.value.message
    assert view(pool, "replica-1").healthy


async def test_status_reads_each_engine_fresh(pool: ReplicaPool) -> None:
    await pool.call("replica-1", call(max_tokens=5))
    status = await pool.status()
    assert status.model == "sim-model"
    assert status.max_model_len == SimEngineConfig().max_model_len
    by_name = {r.name: r for r in status.replicas}
    assert by_name["replica-1"].calls_served == 1
    assert by_name["replica-1"].output_tokens_served == 5
    assert by_name["replica-0"].calls_served == 0
    assert all(r.state is ReplicaState.READY and r.node == "node-0" for r in status.replicas)
    assert all(r.engine == "sim" for r in status.replicas)


async def test_shutdown_stops_the_refresh_and_every_replica(fake_ray: FakeRay) -> None:
    pool = ReplicaPool(replicas_config(), "sim-model", "test-namespace")
    await pool.start()
    await pool.shutdown()
    assert all(h.killed and "shutdown" in h.calls for h in fake_ray.handles.values())
    assert all(r.state is ReplicaState.STOPPED for r in (await pool.status()).replicas)
    assert not any(v.healthy for v in pool.views())
    reads = {name: h.calls.count("stats") for name, h in fake_ray.handles.items()}
    await asyncio.sleep(5 * PERIOD_S)  # the refresh would have run again (under test)
    assert {name: h.calls.count("stats") for name, h in fake_ray.handles.items()} == reads


async def test_a_replica_that_fails_to_start_stops_the_others(
    fake_ray: FakeRay, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: ReplicaActor) -> Any:
        raise RayActorError(error_msg="no GPU for you")

    monkeypatch.setattr(ReplicaActor, "start", broken)
    pool = ReplicaPool(replicas_config(), "sim-model", "test-namespace")
    with pytest.raises(RayActorError):
        await pool.start()
    assert all(h.killed for h in fake_ray.handles.values())


async def test_cancelled_calls_leave_the_pool_at_once_and_their_aborts_go_in_one_batch(
    pool: ReplicaPool, fake_ray: FakeRay
) -> None:
    handle = fake_ray.handles["replica-0"]
    handle.gate.clear()  # the calls have not reached the actor yet
    tasks = [asyncio.create_task(pool.call("replica-0", call())) for _ in range(50)]
    await until(lambda: view(pool, "replica-0").in_flight_calls == 50, "50 calls in flight")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    # Out of flight as soon as the abort is queued, not when the replica answers it.
    assert view(pool, "replica-0").in_flight_calls == 0
    await until(lambda: "abort_many" in handle.calls, "the batch sent")
    assert handle.calls.count("abort_many") == 1 and "abort" not in handle.calls
    assert fake_ray.cancelled == []  # the engine's abort ends a call: no ray.cancel
    handle.gate.set()  # the calls arrive after their aborts: none of them runs
    await until(lambda: handle.calls.count("generate") == 50, "the calls delivered")
    await asyncio.sleep(0.05)
    stats = await handle.actor.stats()
    assert stats.unfinished_requests == 0 and stats.calls_served == 0


async def test_a_cancelled_call_stops_running_in_the_engine(fake_ray: FakeRay) -> None:
    config = replicas_config(count=1).model_copy(update={"sim": SimEngineConfig(time_scale=1.0)})
    pool = ReplicaPool(config, "sim-model", "test-namespace")
    await pool.start()
    try:
        handle = fake_ray.handles["replica-0"]
        stream = pool.stream("replica-0", call(max_tokens=2000))
        consumer = asyncio.create_task(anext(stream))
        await until(consumer.done, "the first delta")  # the call runs in the engine
        await stream.aclose()  # a consumer gone: the pool queues the abort and lets go
        assert view(pool, "replica-0").in_flight_calls == 0
        engine = handle.actor._require()
        await until(lambda: engine.stats().unfinished_requests == 0, "the engine's call aborted")
        assert handle.calls.count("abort_many") == 1
    finally:
        await pool.shutdown()
