"""Admission control (`orchestrator.executor.admission`): the saturation bound, the
earliest-deadline-first queue, a deadline or a cancel while queued, the refusal beyond
`max_queued_tasks` and its retry-after hint. Pure: a fake load and, for the hint, a
fake clock; nothing starts a replica."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from orchestrator.config import AdmissionConfig
from orchestrator.domain import ErrorCode
from orchestrator.executor import admission as admission_module
from orchestrator.executor.admission import (
    Admission,
    AdmissionQueue,
    AdmissionRefused,
    CallLimit,
    ClusterLoad,
    Ticket,
    Verdict,
)
from tests.polling import async_wait_until

BOUND = 100  # max_outstanding_tokens_per_replica in these tests


class Load:
    """The replicas' load as admission reads it; tests move it by hand."""

    def __init__(
        self, outstanding: int = 0, healthy: int = 1, queued: int = 0, running: int = 0
    ) -> None:
        self.outstanding = outstanding
        self.healthy = healthy
        self.queued = queued
        self.running = running

    def __call__(self) -> ClusterLoad:
        return ClusterLoad(self.outstanding, self.healthy, self.queued, 0, self.running)


def make(
    load: Load | None = None,
    max_queued_tasks: int = 16,
    enabled: bool = True,
    max_queue_wait_s: float = 1000.0,
) -> tuple[Admission, Load]:
    load = load or Load()
    config = AdmissionConfig(
        enabled=enabled,
        max_outstanding_tokens_per_replica=BOUND,
        max_queued_tasks=max_queued_tasks,
        max_queue_wait_s=max_queue_wait_s,
        adaptive=True,
    )
    return Admission(config, load), load


async def queue(
    admission: Admission, tokens: int, deadline: float | None = None
) -> asyncio.Task[Ticket]:
    """Start an admit that must wait, and return once it is in the queue."""
    before = admission.queued
    task = asyncio.create_task(admission.admit(tokens, deadline))
    await async_wait_until(lambda: admission.queued == before + 1, timeout=2.0)
    return task


async def test_an_idle_cluster_admits_at_once_and_reserves_the_first_call() -> None:
    admission, _ = make()
    ticket = await admission.admit(30)
    assert admission.reserved_tokens == 30 and admission.queued == 0
    ticket.release()
    ticket.release()  # idempotent
    assert admission.reserved_tokens == 0


async def test_the_bound_counts_outstanding_tokens_and_reservations_per_healthy_replica() -> None:
    admission, load = make(Load(outstanding=150, healthy=2))
    assert not admission.saturated()  # 150 < 100 x 2
    ticket = await admission.admit(50)
    assert admission.saturated()  # 150 + 50 reserved reach 200
    load.healthy = 3
    assert not admission.saturated()
    load.healthy = 0  # no healthy replica still allows one replica's worth
    load.outstanding = 0
    ticket.release()
    assert not admission.saturated()
    load.outstanding = BOUND
    assert admission.saturated()


async def test_saturated_tasks_wait_and_are_admitted_when_load_drops() -> None:
    admission, load = make(Load(outstanding=BOUND))
    waiting = await queue(admission, 10)
    assert not waiting.done()
    load.outstanding = 0
    admission.wake()
    ticket = await asyncio.wait_for(waiting, 2.0)
    assert ticket.tokens == 10 and admission.reserved_tokens == 10 and admission.queued == 0


async def test_a_new_task_queues_behind_waiting_ones_even_when_there_is_room() -> None:
    # No overtaking: with a queue, room goes to the queue (wake), not to a newcomer.
    admission, load = make(Load(outstanding=BOUND))
    first = await queue(admission, 10)
    load.outstanding = 0  # room, but nobody called wake yet
    second = await queue(admission, 10)
    admission.wake()
    await asyncio.wait_for(asyncio.gather(first, second), 2.0)


async def test_the_queue_is_earliest_deadline_first_then_arrival_order() -> None:
    admission, _ = make()
    holder = await admission.admit(BOUND)  # saturates by its reservation alone
    now = time.monotonic()
    arrivals = [("late", now + 30), ("none-1", None), ("soon", now + 10), ("mid", now + 20)]
    arrivals.append(("none-2", None))
    tasks = {name: await queue(admission, BOUND, deadline) for name, deadline in arrivals}
    order: list[str] = []
    ticket = holder
    for _ in arrivals:
        # Each admitted task reserves a whole replica's worth: one admission per release.
        ticket.release()
        await async_wait_until(lambda: sum(t.done() for t in tasks.values()) > len(order), 2.0)
        [name] = [n for n, t in tasks.items() if t.done() and n not in order]
        order.append(name)
        ticket = tasks[name].result()
    assert order == ["soon", "mid", "late", "none-1", "none-2"]
    ticket.release()
    assert admission.reserved_tokens == 0 and admission.queued == 0


async def test_a_deadline_that_passes_in_the_queue_refuses_the_task() -> None:
    admission, load = make(Load(outstanding=BOUND))
    later = await queue(admission, 10)
    started = time.monotonic()
    with pytest.raises(AdmissionRefused) as refused:
        await admission.admit(10, deadline=time.monotonic() + 0.05)
    assert time.monotonic() - started < 1.0
    assert refused.value.code is ErrorCode.DEADLINE_EXCEEDED
    assert refused.value.retry_after_s is None
    assert "deadline passed while it waited" in str(refused.value)
    assert admission.queued == 1  # only `later` still waits
    # The expired entry is skipped, and reserves nothing.
    load.outstanding = 0
    admission.wake()
    ticket = await asyncio.wait_for(later, 2.0)
    assert admission.reserved_tokens == ticket.tokens == 10


async def test_a_deadline_already_past_is_refused_when_it_would_wait() -> None:
    admission, _ = make(Load(outstanding=BOUND))
    with pytest.raises(AdmissionRefused) as refused:
        await admission.admit(10, deadline=time.monotonic() - 1.0)
    assert refused.value.code is ErrorCode.DEADLINE_EXCEEDED
    assert admission.queued == 0


async def test_a_task_cancelled_in_the_queue_leaves_it_and_is_skipped() -> None:
    admission, load = make(Load(outstanding=BOUND))
    gone = await queue(admission, 10, deadline=time.monotonic() + 5)  # first in EDF order
    stays = await queue(admission, 20)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert admission.queued == 1
    load.outstanding = 0
    admission.wake()
    assert (await asyncio.wait_for(stays, 2.0)).tokens == 20
    assert admission.reserved_tokens == 20  # nothing held for the cancelled task


async def test_beyond_max_queued_tasks_a_task_is_refused_at_once() -> None:
    admission, _ = make(Load(outstanding=BOUND), max_queued_tasks=2)
    waiting = [await queue(admission, 10), await queue(admission, 10)]
    with pytest.raises(AdmissionRefused) as refused:
        await admission.admit(10)
    error = refused.value
    assert error.code is ErrorCode.RESOURCE_EXHAUSTED
    assert error.retry_after_s == 1.0  # no admissions from the queue yet to pace
    assert "2 tasks are already waiting (admission.max_queued_tasks = 2;" in error.message
    assert "retry after about 1.0 s" in error.message
    assert admission.refused == 1 and admission.queued == 2
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert admission.queued == 0


async def test_max_queued_tasks_zero_refuses_whenever_saturated() -> None:
    admission, load = make(Load(outstanding=BOUND), max_queued_tasks=0)
    with pytest.raises(AdmissionRefused):
        await admission.admit(1)
    load.outstanding = 0
    (await admission.admit(1)).release()


async def test_disabled_admission_admits_everything() -> None:
    admission, _ = make(Load(outstanding=10 * BOUND), max_queued_tasks=0, enabled=False)
    tickets = [await admission.admit(BOUND) for _ in range(3)]
    assert admission.queued == 0 and len(tickets) == 3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A fake clock for admission's pace (only the module's view of `time`)."""
    fake = Clock()
    monkeypatch.setattr(admission_module, "time", SimpleNamespace(monotonic=fake))
    return fake


async def admit_from_queue_at(
    admission: Admission, load: Load, clock: Clock, times: list[float]
) -> None:
    """Admit one queued task at each of `times` (fake seconds), releasing it after."""
    for at in times:
        load.outstanding = BOUND
        task = await queue(admission, 1)
        clock.now = at
        load.outstanding = 0
        admission.wake()
        (await asyncio.wait_for(task, 2.0)).release()
    load.outstanding = BOUND


async def test_retry_after_follows_the_recent_pace_of_admissions(clock: Clock) -> None:
    admission, load = make(max_queued_tasks=3)
    assert admission.retry_after_s() == 1.0  # nothing to pace yet
    # One admission from the queue every 2 s: room for the next in (waiting + 1) x 2 s.
    await admit_from_queue_at(admission, load, clock, [1000.0, 1002.0, 1004.0, 1006.0])
    assert admission.retry_after_s() == pytest.approx(2.0)
    waiting = [await queue(admission, 1) for _ in range(3)]
    assert admission.retry_after_s() == pytest.approx(8.0)
    with pytest.raises(AdmissionRefused) as refused:
        await admission.admit(1)
    assert refused.value.retry_after_s == pytest.approx(8.0)
    assert "retry after about 8.0 s" in refused.value.message
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_retry_after_is_at_least_the_time_since_the_last_admission(clock: Clock) -> None:
    admission, load = make()
    await admit_from_queue_at(admission, load, clock, [1000.0, 1000.1, 1000.2])
    assert admission.retry_after_s() == 0.5  # 10 a second, clamped up to half a second
    clock.now = 1030.0  # nothing admitted for ~30 s: the pace is stale
    assert admission.retry_after_s() == pytest.approx(29.8)
    clock.now = 5000.0
    assert admission.retry_after_s() == 60.0  # clamped


async def test_retry_after_slow_pace_is_clamped_to_a_minute(clock: Clock) -> None:
    admission, load = make()
    await admit_from_queue_at(admission, load, clock, [1000.0, 1100.0])
    assert admission.retry_after_s() == 60.0


# ---- the pure queue the simulator drives ----------------------------------------------


def test_pure_queue_admits_earliest_deadline_first_on_the_callers_clock() -> None:
    load = Load(outstanding=BOUND)  # saturated
    queue = AdmissionQueue[str](AdmissionConfig(max_outstanding_tokens_per_replica=BOUND), load)
    assert queue.offer("late", 10, deadline=9.0, now=0.0) is Verdict.QUEUED
    assert queue.offer("none", 10, deadline=None, now=0.0) is Verdict.QUEUED
    assert queue.offer("soon", 10, deadline=2.0, now=0.0) is Verdict.QUEUED
    queue.withdraw("late")  # gave up: never admitted
    assert queue.ready(now=1.0) == []  # still saturated
    load.outstanding = BOUND - 5  # below the bound; one reservation reaches it
    assert queue.ready(now=1.0) == [("soon", 10)]
    assert queue.reserved == 10 and queue.queued == 1
    queue.release(10)
    load.outstanding = 0
    assert queue.ready(now=2.0) == [("none", 10)] and queue.queued == 0


def test_pure_queue_refuses_beyond_max_queued_with_a_paced_retry_after() -> None:
    load = Load(outstanding=BOUND)
    config = AdmissionConfig(max_outstanding_tokens_per_replica=BOUND, max_queued_tasks=2)
    queue = AdmissionQueue[int](config, load)
    assert [queue.offer(i, 1, None, now=0.0) for i in range(3)] == [
        Verdict.QUEUED,
        Verdict.QUEUED,
        Verdict.REFUSED,
    ]
    assert queue.refused == 1
    # Two admissions from the queue 4 s apart: 0.25 tasks/s, so the next of 1 waiting
    # plus the caller gets room in about 8 s.
    load.outstanding = BOUND - 1
    assert queue.ready(now=10.0) == [(0, 1)]
    load.outstanding = BOUND - 2
    assert queue.ready(now=14.0) == [(1, 1)]
    queue.offer(7, 1, None, now=0.0)
    message, retry = queue.refusal(now=14.0)
    assert retry == pytest.approx(8.0) and "max_queued_tasks = 2" in message


# ---- what the engines can do: the call limit, engine queues, the queue's wait limit ----


def test_the_call_limit_doubles_while_calls_keep_their_pace_then_cuts_in_proportion() -> None:
    limit = CallLimit(tolerance=3.0, per_replica=4.0)
    for _ in range(8):  # carrying as many as the limit allows, at the best pace
        limit.observe(0.010, 0.0, in_flight=limit.bound(healthy=2), healthy=2)
    assert limit.slow_start and limit.per_replica == pytest.approx(8.0)  # +1/2 a call
    assert limit.bound(healthy=2) == 16
    limit.observe(0.010, 0.0, in_flight=5, healthy=2)  # far below the limit: no growth
    assert limit.per_replica == pytest.approx(8.0)
    # Calls now take 6x the best time per token, with 30 in flight: 15 a replica were
    # too many by 6 / 3 = 2 (once the recent pace has followed).
    for _ in range(200):
        limit.observe(0.060, 0.0, in_flight=30, healthy=2)
    assert not limit.slow_start
    assert limit.per_replica == pytest.approx(7.5, rel=0.05)
    assert limit.bound(healthy=3) == round(3 * limit.per_replica)  # per healthy replica


def test_calls_waiting_in_the_engines_queue_cut_the_limit_at_an_unchanged_pace() -> None:
    # A full engine: calls keep their time per token but wait 90% of their time queued,
    # 1.5x the 60% allowed, so the 24 a replica carried become 16.
    limit = CallLimit(max_queue_share=0.6, per_replica=24.0)
    for _ in range(200):
        limit.observe(0.010, 0.9, in_flight=24, healthy=1)
    assert limit.per_replica == pytest.approx(16.0, rel=0.05)


def test_after_the_first_cut_the_limit_grows_about_one_call_per_limits_worth() -> None:
    limit = CallLimit(tolerance=3.0, per_replica=10.0, baseline=0.01, tpot=0.01)
    limit.slow_start = False
    for _ in range(10):
        limit.observe(0.01, 0.0, in_flight=10, healthy=1)
    assert limit.per_replica == pytest.approx(11.0)
    for _ in range(10):  # not at the limit: no evidence that more would help
        limit.observe(0.01, 0.0, in_flight=3, healthy=1)
    assert limit.per_replica == pytest.approx(11.0)


async def test_calls_in_flight_at_the_call_limit_saturate_the_cluster() -> None:
    admission, load = make(Load(queued=31, healthy=2))  # 16 a replica to start with
    assert admission.saturated() is False
    ticket = await admission.admit(1)  # its first call counts as in flight
    assert admission.saturated()
    load.healthy = 3
    assert not admission.saturated()
    ticket.release()


async def test_engines_with_requests_waiting_saturate_the_cluster() -> None:
    # 100 calls running on 2 replicas: up to 1/8 of them may wait in the engines.
    admission, load = make(Load(healthy=2, running=100))
    load.queued = 3  # (the in-flight count is the orchestrator's; engines report waiting)
    assert not admission.saturated()

    class Waiting(Load):
        def __call__(self) -> ClusterLoad:
            return ClusterLoad(0, 2, 10, 13, 100)

    busy = Admission(AdmissionConfig(adaptive=True), Waiting())
    assert busy.saturated()  # 13 waiting > 100 / 8


def test_the_wait_limit_is_the_median_run_time_of_recent_tasks() -> None:
    queue = AdmissionQueue[str](AdmissionConfig(adaptive=True), Load())
    assert queue.wait_limit_s() == 5.0  # before any task completed
    for run_s in (2.0, 4.0, 30.0):
        queue.finished(run_s)
    assert queue.wait_limit_s() == 4.0
    fast = AdmissionQueue[str](AdmissionConfig(adaptive=True), Load())
    fast.finished(0.01)
    assert fast.wait_limit_s() == 0.5  # never below half a second
    fixed = AdmissionQueue[str](AdmissionConfig(adaptive=True, max_queue_wait_s=2.5), Load())
    fixed.finished(9.0)
    assert fixed.wait_limit_s() == 2.5


def saturated_queue(load: Load) -> AdmissionQueue[int]:
    config = AdmissionConfig(
        adaptive=True, max_outstanding_tokens_per_replica=BOUND, max_queue_wait_s=2.0
    )
    return AdmissionQueue[int](config, load)


def admit_one(queue: AdmissionQueue[int], load: Load, now: float) -> list[tuple[int, int]]:
    """Room for exactly one queued task at `now`; it is admitted, then ends."""
    load.outstanding = BOUND - 1
    admitted = queue.ready(now)
    for _, tokens in admitted:
        queue.release(tokens)
        queue.departed(now)
    load.outstanding = BOUND
    return admitted


def test_under_overload_a_task_that_would_wait_past_the_limit_is_refused_at_once() -> None:
    load = Load(outstanding=BOUND)  # saturated
    queue = saturated_queue(load)
    verdicts, queued = [], []
    # Tasks arrive 10 a second for 8 s; the queue admits 2 a second.
    for step in range(80):
        now = step / 10
        if step % 5 == 0:
            admit_one(queue, load, now)
        verdicts.append(queue.offer(step, 1, None, now))
        queued.append(queue.queued)
    # Two half-limit windows of arrivals outpacing admissions show the overload (the
    # first second cannot); from then on the queue holds what starts within about the
    # 2 s limit (4 at 2 a second, +1 for the one leaving), the rest refused at once.
    assert Verdict.REFUSED not in verdicts[:10]
    assert verdicts[40:].count(Verdict.REFUSED) >= 30
    assert max(queued[40:]) <= 6
    assert queue.refused == verdicts.count(Verdict.REFUSED)


def test_a_closed_loop_waits_its_turn_however_long_and_is_never_refused() -> None:
    """16 clients that each send a task when one ends, on a cluster with room for one at
    a time: the 15 behind wait ~7.5 s, past the 2 s limit, and none is refused."""
    load = Load(outstanding=BOUND)
    queue = saturated_queue(load)
    assert all(queue.offer(i, 1, None, now=0.0) is Verdict.QUEUED for i in range(16))
    next_task = 16
    for step in range(1, 60):  # one task ends every half second; its client sends the next
        now = step / 2
        assert admit_one(queue, load, now)
        assert queue.offer(next_task, 1, None, now) is Verdict.QUEUED
        next_task += 1
        assert queue.expired(now) == []
    assert queue.refused == 0 and queue.queued == 16


def test_a_closed_loop_whose_admitted_share_shrinks_is_never_refused() -> None:
    """16 clients; 8 of their tasks run and 8 wait. Then the engines slow down and
    admission lets only 2 run: for 20 s tasks end (and their clients send the next) with
    nobody admitted, so the queue grows past what starts within the limit. Tasks still
    arrive only as fast as they leave: not overload, nobody is refused."""
    load = Load(outstanding=BOUND)
    queue = saturated_queue(load)
    assert all(queue.offer(i, 1, None, now=0.0) is Verdict.QUEUED for i in range(8))
    next_task = 8
    for step in range(1, 41):  # one of the 8 running ends every half second
        now = step / 2
        queue.departed(now)
        assert queue.offer(next_task, 1, None, now) is Verdict.QUEUED
        next_task += 1
        assert queue.expired(now) == []
    assert queue.refused == 0 and queue.queued == 48


def test_queued_tasks_past_their_wait_limit_expire_only_while_tasks_keep_arriving() -> None:
    load = Load(outstanding=BOUND)
    queue = saturated_queue(load)
    queue.offer(0, 1, None, now=0.0)
    queue.offer(1, 1, None, now=1.0)
    assert queue.expired(now=2.5) == []  # past its limit, but nothing else arrives
    for step in range(10):  # then 5 arrivals a second for 2 s, none admitted
        queue.offer(10 + step, 1, None, now=2.6 + step / 5)
    assert queue.expired(now=4.4) == [0, 1]  # 10 has not waited 2 s yet
    assert queue.refused == 2
    load.outstanding = 0
    assert [key for key, _ in queue.ready(now=4.5)][:1] == [10]


async def test_under_overload_a_task_that_waited_its_limit_gets_resource_exhausted() -> None:
    admission, _ = make(Load(outstanding=BOUND), max_queue_wait_s=0.4, max_queued_tasks=1000)
    arrivals: list[asyncio.Task[Ticket]] = []

    async def keep_arriving() -> None:  # tasks arrive every 20 ms; none is admitted
        while True:
            arrivals.append(asyncio.create_task(admission.admit(1)))
            await asyncio.sleep(0.02)

    arriving = asyncio.create_task(keep_arriving())
    started = time.monotonic()
    try:
        with pytest.raises(AdmissionRefused) as refused:
            await admission.admit(1)
    finally:
        arriving.cancel()
    assert 0.3 < time.monotonic() - started < 3.0
    assert refused.value.code is ErrorCode.RESOURCE_EXHAUSTED
    assert refused.value.retry_after_s is not None and refused.value.retry_after_s >= 0.5
    assert "admission.max_queue_wait_s" in refused.value.message
    for task in arrivals:
        task.cancel()
    await asyncio.gather(*arrivals, return_exceptions=True)
    assert admission.queued == 0


async def test_a_lone_task_past_its_wait_limit_keeps_waiting_and_then_starts() -> None:
    admission, load = make(Load(outstanding=BOUND), max_queue_wait_s=0.2)
    waiting = await queue(admission, 1)
    await asyncio.sleep(0.6)  # three limits; nothing else arrived: no overload
    assert not waiting.done() and admission.refused == 0
    load.outstanding = 0
    (await asyncio.wait_for(waiting, 2.0)).release()


async def test_a_waiting_task_starts_when_the_engines_report_room_without_any_call_ending() -> None:
    admission, load = make(Load(outstanding=BOUND))
    waiting = await queue(admission, 1)
    load.outstanding = 0  # a report changed the load; no call ended, nobody calls wake()
    ticket = await asyncio.wait_for(waiting, 2.0)
    ticket.release()


async def test_without_adaptive_admission_only_the_token_bound_gates_and_tasks_wait() -> None:
    config = AdmissionConfig(max_outstanding_tokens_per_replica=BOUND, adaptive=False)
    load = Load(outstanding=0, healthy=1, queued=1000)  # far past any call limit
    admission = Admission(config, load)
    assert not admission.saturated()
    load.outstanding = BOUND
    assert admission.wait_limit_s() == float("inf")
    waiting = await queue(admission, 1)
    await asyncio.sleep(0.3)
    assert not waiting.done()  # no wait limit: it waits for room (or its deadline)
    load.outstanding = 0
    (await asyncio.wait_for(waiting, 2.0)).release()


def test_what_overload_is_judged_on_stays_bounded_by_the_rate_not_the_uptime() -> None:
    """Every task's arrival and admission are remembered only for two half wait limits:
    a server up for days does not grow with the tasks it has served."""
    load = Load()  # never saturated: every task starts at once, nothing ever queues
    queue = saturated_queue(load)  # max_queue_wait_s 2.0: one second's window, two kept
    for i in range(100_000):  # 100 tasks a second for 1,000 s
        assert queue.offer(i, 1, None, now=i / 100) is Verdict.ADMITTED
        queue.release(1)
    for i in range(100_000):
        queue.departed(i / 100)
    assert len(queue._arrivals) <= 201 and len(queue._departures) <= 201
    assert not queue.overloaded(now=1000.0)
