"""Admission control: back-pressure when the replicas are saturated.

The cluster is saturated by any of three bounds, each counting the healthy replicas:

- **calls**: the calls in flight (plus one per just-admitted task) reach the call limit:
  `max_calls_per_replica` x the replicas, or by default what `CallLimit` learns from the
  calls themselves (their time per output token and their wait in the engine's queue:
  past the point where a bigger batch only slows every call, or makes it wait, more
  calls add latency to every task and throughput to none);
- **engine queues**: the engines report more requests waiting than 1/8 of those they
  run (`QUEUE_ALLOWANCE`);
- **tokens**: the tokens outstanding (the router's book: prompt + max_tokens of every call
  in flight, less cached prefixes) plus the reservations of just-admitted tasks reach
  `max_outstanding_tokens_per_replica` x the replicas.

A new task then waits in a bounded queue, earliest deadline first (tasks without one
after, in arrival order). While tasks arrive faster than they leave (`overloaded`: in
each of the last two half wait limits, more arrivals than OVERLOAD_RATIO x the tasks that
ended plus OVERLOAD_SLACK), a task waits at most the queue's wait limit: `max_queue_wait_s`, by
default the median run time of the tasks completed lately. A task that would wait longer
(its place in the queue at the pace tasks leave it says so), or that did wait that long,
is refused with RESOURCE_EXHAUSTED and a retry-after hint. So under any overload an
admitted task takes at most about twice what it takes at capacity, and the excess is told
at once to go elsewhere. A burst, or a closed loop of clients that each send their next
task when one ends, is not overload: tasks arrive as fast as they leave (however few of
them admission lets run at once), and they wait their turn however long it is, as they
would in the engines. A refused task has not left: under overload its client's retry is
one more arrival. The queue is bounded
(`max_queued_tasks`) either way. A task admitted runs to completion: only the start of
work is gated, so a half-run task never stalls and memory stays bounded by the queue.

Each admitted task reserves its first call (its tokens and one call) until that call is
booked by the router (or the task ends), so a burst arriving in one instant cannot all
slip in before any of it shows up as load.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import heapq
import itertools
import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from orchestrator.config import AdmissionConfig
from orchestrator.domain import CallResult, ErrorCode
from orchestrator.routing import ReplicaView

K = TypeVar("K")

# Retry-after hints are clamped to this range, seconds.
_MIN_RETRY_S = 0.5
_MAX_RETRY_S = 60.0
# The queue's wait limit before any task has completed (max_queue_wait_s unset).
DEFAULT_QUEUE_WAIT_S = 5.0
# ... and never less than this: tasks of milliseconds still get a useful queue.
MIN_QUEUE_WAIT_S = 0.5
# CallLimit: the best time per token is forgotten this slowly (x per call), and the
# recent one follows this share of each call.
_DRIFT = 1.0001
_SMOOTHING = 0.05
# While tasks wait, the load is looked at again this often (seconds).
WAKE_EVERY_S = 0.2
# Run times of this many recent tasks make the default wait limit (their median).
_RUN_TIMES_KEPT = 256
# Requests the engines may report waiting, as a fraction of those they run, before new
# tasks wait instead: enough that a step always has work queued.
QUEUE_ALLOWANCE = 0.125
# Overload: in each of the last two half wait limits, more task arrivals than this times
# the tasks that ended (completed, failed, or gave up waiting) plus OVERLOAD_SLACK (the
# slack absorbs the instant between a task ending and its client's next arrival).
OVERLOAD_RATIO = 1.25
OVERLOAD_SLACK = 2


def _exceeds(arrivals: int, departures: int) -> bool:
    """More arrivals in a window than its departures allow (OVERLOAD_RATIO, _SLACK)."""
    return arrivals > OVERLOAD_RATIO * departures + OVERLOAD_SLACK


@dataclass(slots=True, frozen=True)
class ClusterLoad:
    """What admission reads of the healthy replicas at a decision."""

    outstanding_tokens: int  # the router's book
    healthy: int  # replicas
    in_flight_calls: int = 0  # the orchestrator's own count: exact
    waiting_calls: int = 0  # queued in the engines, as they last reported
    running_calls: int = 0  # run by the engines, as they last reported


def cluster_load(views: Iterable[ReplicaView], booked: Mapping[str, int]) -> ClusterLoad:
    """The healthy replicas' load from routing's views and the router's book."""
    tokens = healthy = in_flight = waiting = running = 0
    for view in views:
        if view.healthy:
            healthy += 1
            tokens += booked.get(view.name, 0)
            in_flight += view.in_flight_calls
            # A report older than the calls it counts: no call of ours can wait there.
            waiting += min(view.waiting_requests, view.in_flight_calls)
            running += view.running_requests
    return ClusterLoad(tokens, healthy, in_flight, waiting, running)


@dataclass(slots=True)
class CallLimit:
    """How many calls the replicas may carry at once, learned from two things their calls
    report: the time per output token (a bigger batch slows every call) and the share of
    a call spent waiting in the engine's queue (a full engine makes calls wait). It
    starts at `per_replica` per replica and doubles while the time per token stays within
    `tolerance` x the best seen lately and calls wait at most `max_queue_share` of their
    time; beyond either, the limit is cut in proportion and then grows by about one call
    per limit's worth of calls."""

    tolerance: float = 5.0
    max_queue_share: float = 0.6
    per_replica: float = 16.0
    baseline: float | None = None  # the best time per output token lately, seconds
    tpot: float | None = None  # the recent time per output token, seconds
    queue_share: float = 0.0  # the recent share of a call's time spent queued
    slow_start: bool = True  # doubling until the first cut
    _calls_since_cut: int = 0

    def observe(self, tpot: float, queue_share: float, in_flight: int, healthy: int) -> None:
        """A call ended that took `tpot` per output token and spent `queue_share` of its
        time queued, with `in_flight` calls on `healthy` replicas."""
        healthy = max(healthy, 1)
        self.baseline = tpot if self.baseline is None else min(self.baseline * _DRIFT, tpot)
        if self.tpot is None:
            self.tpot = tpot
        else:
            self.tpot += _SMOOTHING * (tpot - self.tpot)
        self.queue_share += _SMOOTHING * (queue_share - self.queue_share)
        self._calls_since_cut += 1
        over = max(
            self.tpot / (self.tolerance * self.baseline), self.queue_share / self.max_queue_share
        )
        if over > 1.0:
            # Each cut waits for half the calls in flight to end: fresh evidence.
            if self._calls_since_cut >= in_flight / 2:
                carried = max(in_flight / healthy, 1.0)
                self.per_replica = max(min(self.per_replica, carried / over), 1.0)
                self.slow_start = False
                self._calls_since_cut = 0
        elif in_flight >= self.per_replica * healthy - healthy:  # the limit binds
            self.per_replica += 1.0 / healthy if self.slow_start else 1.0 / max(in_flight, 1)

    def bound(self, healthy: int) -> int:
        return max(1, round(self.per_replica * max(healthy, 1)))


class AdmissionRefused(Exception):
    """The queue is full (RESOURCE_EXHAUSTED) or the task's deadline passed while it
    waited (DEADLINE_EXCEEDED)."""

    def __init__(self, code: ErrorCode, message: str, retry_after_s: float | None) -> None:
        super().__init__(code, message, retry_after_s)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return self.message


class Verdict(enum.Enum):
    ADMITTED = "admitted"
    QUEUED = "queued"
    REFUSED = "refused"  # the queue is full: RESOURCE_EXHAUSTED


class AdmissionQueue(Generic[K]):
    """The admission decisions, pure: no awaits, and time is an argument. `load()`
    returns the healthy replicas' `ClusterLoad`. The live `Admission` wraps it with
    futures; the fast-forward simulator drives it directly, with task handles as keys."""

    def __init__(self, config: AdmissionConfig, load: Callable[[], ClusterLoad]) -> None:
        self.config = config
        self._load = load
        self.reserved = 0  # tokens held by admitted tasks whose first call is not routed
        self.reserved_calls = 0  # those tasks (one first call each)
        self._heap: list[tuple[float, int]] = []  # (deadline or inf, seq)
        self._waiters: dict[int, tuple[K, int]] = {}  # seq -> (key, tokens); live ones
        self._seq_of: dict[K, int] = {}
        self._seq = itertools.count()
        self._expiry: deque[tuple[float, int]] = deque()  # (when it gives up, seq), FIFO
        self._admitted_from_queue: deque[float] = deque(maxlen=64)
        self._backlog_since = -math.inf  # when the current backlog began
        self._run_times: deque[float] = deque(maxlen=_RUN_TIMES_KEPT)
        self._wait_limit: float | None = None  # the median of _run_times, cached
        # Times of the last wait limit's arrivals (every offer) and departures (tasks that
        # ended after admission, or left the queue for their deadline or their client).
        self._arrivals: deque[float] = deque()
        self._departures: deque[float] = deque()
        self.refused = 0
        self.calls = CallLimit()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def call_done(self, result: CallResult) -> None:
        """A call ended: its time per output token and its wait in the engine's queue
        adapt the call limit (calls of one token say nothing of the first)."""
        timings = result.timings
        if not self.config.adaptive:
            return  # no call limit to adapt: skip reading the load on every call
        if timings.tpot is None or timings.tpot <= 0 or timings.e2e <= 0:
            return
        load = self._load()
        share = min(max(timings.queue_time / timings.e2e, 0.0), 1.0)
        self.calls.observe(timings.tpot, share, load.in_flight_calls, load.healthy)

    def saturated(self) -> bool:
        load = self._load()
        healthy = max(load.healthy, 1)
        if load.outstanding_tokens + self.reserved >= (
            self.config.max_outstanding_tokens_per_replica * healthy
        ):
            return True
        if not self.config.adaptive:
            return False
        in_flight = load.in_flight_calls + self.reserved_calls
        per_replica = self.config.max_calls_per_replica
        if per_replica is not None:
            return in_flight >= per_replica * healthy
        if in_flight >= self.calls.bound(healthy):
            return True
        # Engines with a queue run all they can; more calls would only wait there.
        return load.waiting_calls > max(healthy, QUEUE_ALLOWANCE * load.running_calls)

    def wait_limit_s(self) -> float:
        """How long a task may wait in the queue (module docstring)."""
        if not self.config.adaptive:
            return math.inf
        if self.config.max_queue_wait_s is not None:
            return self.config.max_queue_wait_s
        if self._wait_limit is None:
            times = self._run_times
            median = statistics.median(times) if times else DEFAULT_QUEUE_WAIT_S
            self._wait_limit = max(median, MIN_QUEUE_WAIT_S)
        return self._wait_limit

    def finished(self, run_s: float) -> None:
        """An admitted task ended after `run_s` seconds (admission to end)."""
        self._run_times.append(run_s)
        self._wait_limit = None

    def overloaded(self, now: float) -> bool:
        """Tasks arrived faster than they left in each of the last two half wait limits
        (module docstring): only then does the wait limit refuse anybody. Two windows, so
        that a burst (a step, not a slope) is not overload: one window after it, the
        closed loop it starts keeps arrivals level with departures."""
        window = self._forget(now)
        arrivals, departures = self._arrivals, self._departures
        middle = now - window
        recent_arrivals = len(arrivals) - bisect.bisect_right(arrivals, middle)
        recent_departures = len(departures) - bisect.bisect_right(departures, middle)
        return _exceeds(recent_arrivals, recent_departures) and _exceeds(
            len(arrivals) - recent_arrivals, len(departures) - recent_departures
        )

    def departed(self, now: float) -> None:
        """An admitted task ended (completed or failed), or a queued one left for its
        deadline or its client: one fewer in the system."""
        self._forget(now)
        self._departures.append(now)

    def _forget(self, now: float) -> float:
        """Drop arrivals and departures older than two half wait limits (so memory stays
        bounded by the rate, not the uptime); returns the half wait limit."""
        window = self.wait_limit_s() / 2
        if not math.isfinite(window):
            window = DEFAULT_QUEUE_WAIT_S / 2
        for times in (self._arrivals, self._departures):
            while times and times[0] <= now - 2 * window:
                times.popleft()
        return window

    def _admission_rate(self, since: float = -math.inf) -> float | None:
        """Tasks per second admitted from the queue lately (only those from `since`);
        None: not measured."""
        times = self._admitted_from_queue
        first = 0
        if since > -math.inf:
            first = bisect.bisect_left(times, since)
        if len(times) - first < 2 or times[-1] <= times[first]:
            return None
        return (len(times) - first - 1) / (times[-1] - times[first])

    def offer(self, key: K, tokens: int, deadline: float | None, now: float) -> Verdict:
        """A task whose first call weighs `tokens` asks to start. ADMITTED reserves the
        tokens (give them back with `release`); QUEUED waits for `ready` (or `expired`)."""
        if not self.config.enabled:
            self._reserve(tokens)
            return Verdict.ADMITTED
        self._forget(now)
        self._arrivals.append(now)
        if not self._waiters:
            if not self.saturated():
                self._reserve(tokens)
                return Verdict.ADMITTED
            self._backlog_since = now  # a new backlog: the last one's pace is not its own
        rate = self._admission_rate(self._backlog_since)
        limit = self.wait_limit_s()
        if len(self._waiters) >= self.config.max_queued_tasks or (
            rate is not None and (len(self._waiters) + 1) / rate > limit and self.overloaded(now)
        ):
            self.refused += 1
            return Verdict.REFUSED
        expiry = self._expiry
        while expiry and expiry[0][1] not in self._waiters:
            expiry.popleft()  # withdrawn or admitted: bounded by the arrivals of one limit
        seq = next(self._seq)
        heapq.heappush(self._heap, (deadline if deadline is not None else math.inf, seq))
        self._waiters[seq] = (key, tokens)
        self._seq_of[key] = seq
        self._expiry.append((now + limit, seq))
        return Verdict.QUEUED

    def withdraw(self, key: K) -> None:
        """A queued task gave up (its deadline, or its client went away)."""
        seq = self._seq_of.pop(key, None)
        if seq is not None:
            self._waiters.pop(seq, None)  # its heap and expiry entries are skipped lazily

    def expired(self, now: float) -> list[K]:
        """Queued tasks that have waited their limit while the queue is overloaded:
        refused (RESOURCE_EXHAUSTED). Not overloaded, they go on waiting."""
        gone: list[K] = []
        expiry = self._expiry
        while expiry and expiry[0][1] not in self._waiters:
            expiry.popleft()
        if not expiry or expiry[0][0] > now or not self.overloaded(now):
            return gone
        while expiry and (expiry[0][0] <= now or expiry[0][1] not in self._waiters):
            _, seq = expiry.popleft()
            waiter = self._waiters.pop(seq, None)
            if waiter is None:
                continue
            del self._seq_of[waiter[0]]
            self.refused += 1
            gone.append(waiter[0])
        return gone

    def ready(self, now: float) -> list[tuple[K, int]]:
        """Queued tasks admitted now, earliest deadline first, while there is room
        (call whenever load drops); each one's tokens are reserved."""
        admitted: list[tuple[K, int]] = []
        heap = self._heap
        while heap and not self.saturated():
            _, seq = heapq.heappop(heap)
            waiter = self._waiters.pop(seq, None)
            if waiter is None:
                continue  # withdrawn
            key, tokens = waiter
            del self._seq_of[key]
            self._reserve(tokens)
            self._admitted_from_queue.append(now)
            admitted.append(waiter)
        while heap and heap[0][1] not in self._waiters:
            heapq.heappop(heap)
        return admitted

    def _reserve(self, tokens: int) -> None:
        self.reserved += tokens
        self.reserved_calls += 1

    def release(self, tokens: int) -> None:
        self.reserved -= tokens
        self.reserved_calls -= 1

    def retry_after_s(self, now: float) -> float:
        """How long until the queue has room, from the recent pace of admissions."""
        times = self._admitted_from_queue
        rate = self._admission_rate()
        if rate is None:
            return 1.0
        age = now - times[-1]
        return min(_MAX_RETRY_S, max(_MIN_RETRY_S, (len(self._waiters) + 1) / rate, age))

    def refusal(self, now: float) -> tuple[str, float]:
        """The RESOURCE_EXHAUSTED message and retry-after of a refused task."""
        retry = self.retry_after_s(now)
        return (
            f"the replicas are saturated and {len(self._waiters)} tasks are already "
            f"waiting (admission.max_queued_tasks = {self.config.max_queued_tasks}; "
            f"a task may wait {self.wait_limit_s():.1f} s); "
            f"retry after about {retry:.1f} s",
            retry,
        )

    def expiry_refusal(self, waited_s: float, now: float) -> tuple[str, float]:
        """The RESOURCE_EXHAUSTED message and retry-after of a task that waited its limit."""
        retry = self.retry_after_s(now)
        return (
            f"the replicas stayed saturated for the {waited_s:.1f} s a task may wait for "
            f"admission while tasks arrive faster than they leave "
            f"(admission.max_queue_wait_s); no call of it ran; "
            f"retry after about {retry:.1f} s",
            retry,
        )


@dataclass(slots=True, eq=False)
class Ticket:
    """An admitted task's hold on its reservation; `release` is idempotent."""

    admission: Admission
    tokens: int
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.admission._unreserve(self.tokens)


class Admission:
    """The live shell of `AdmissionQueue`: a task waits on a future until admitted."""

    def __init__(self, config: AdmissionConfig, load: Callable[[], ClusterLoad]) -> None:
        self._queue: AdmissionQueue[asyncio.Future[Ticket]] = AdmissionQueue(config, load)
        self._ticker: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        """While tasks wait, look again every WAKE_EVERY_S: the engines' reports change
        the load without any call ending (a queue that drained, a replica back)."""
        while self._queue.queued:
            await asyncio.sleep(WAKE_EVERY_S)
            self.wake()
        self._ticker = None

    @property
    def queued(self) -> int:
        return self._queue.queued

    @property
    def refused(self) -> int:
        return self._queue.refused

    @property
    def reserved_tokens(self) -> int:
        return self._queue.reserved

    def saturated(self) -> bool:
        return self._queue.saturated()

    def wait_limit_s(self) -> float:
        return self._queue.wait_limit_s()

    def finished(self, run_s: float) -> None:
        """An admitted task ended after `run_s` seconds (the default wait limit's input)."""
        self._queue.finished(run_s)

    def call_done(self, result: CallResult) -> None:
        """A call ended (its time per output token is the call limit's input)."""
        self._queue.call_done(result)

    def departed(self) -> None:
        """An admitted task (or generation) ended, however it ended."""
        self._queue.departed(time.monotonic())

    async def admit(self, tokens: int, deadline: float | None = None) -> Ticket:
        """Wait for room to start a task whose first call weighs `tokens`; `deadline` is
        absolute (time.monotonic()). Raises AdmissionRefused."""
        queue = self._queue
        future: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()
        now = time.monotonic()
        verdict = queue.offer(future, tokens, deadline, now)
        if verdict is Verdict.ADMITTED:
            return Ticket(self, tokens)
        if verdict is Verdict.REFUSED:
            message, retry = queue.refusal(now)
            raise AdmissionRefused(ErrorCode.RESOURCE_EXHAUSTED, message, retry)
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick(), name="admission-wake")
        limit = queue.wait_limit_s()
        wait = limit  # the first look: when the wait limit is up
        while True:
            left = math.inf if deadline is None else max(0.0, deadline - time.monotonic())
            timeout = None if math.isinf(min(wait, left)) else min(wait, left)
            by_deadline = left <= wait
            try:
                async with asyncio.timeout(timeout):
                    return await asyncio.shield(future)
            except TimeoutError:
                if future.done():
                    return future.result()  # admitted in the instant the timer fired
                later = time.monotonic()
                if by_deadline:
                    self._give_up(future)
                    queue.departed(later)
                    raise AdmissionRefused(
                        ErrorCode.DEADLINE_EXCEEDED,
                        "the task's deadline passed while it waited for the saturated "
                        "replicas (admission queue); no call of it ran",
                        None,
                    ) from None
                if queue.overloaded(later):
                    self._give_up(future)
                    queue.refused += 1
                    message, retry = queue.expiry_refusal(later - now, later)
                    raise AdmissionRefused(ErrorCode.RESOURCE_EXHAUSTED, message, retry) from None
                wait = WAKE_EVERY_S  # not overloaded: its turn comes; look again soon
            except BaseException:  # the caller gone
                self._give_up(future)
                queue.departed(time.monotonic())
                raise

    def _give_up(self, future: asyncio.Future[Ticket]) -> None:
        """A waiting task leaves the queue (refused, its deadline, its caller gone)."""
        if not future.done():
            future.cancel()
            self._queue.withdraw(future)
        elif not future.cancelled():
            future.result().release()  # admitted in the instant it gave up

    def wake(self) -> None:
        """Admit queued tasks while there is room (call whenever load drops)."""
        for future, tokens in self._queue.ready(time.monotonic()):
            future.set_result(Ticket(self, tokens))

    def retry_after_s(self) -> float:
        return self._queue.retry_after_s(time.monotonic())

    def _unreserve(self, tokens: int) -> None:
        self._queue.release(tokens)
        self.wake()
