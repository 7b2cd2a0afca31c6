"""Admission control: back-pressure when the replicas are saturated.

The cluster is saturated when the tokens outstanding on the healthy replicas (the
router's book: prompt + max_tokens of every call in flight, less cached prefixes) plus
the reservations of just-admitted tasks reach `max_outstanding_tokens_per_replica` x
the healthy replicas. A new task then waits in a bounded queue, earliest deadline first
(tasks without one after, in arrival order); beyond `max_queued_tasks` it is refused at
once with RESOURCE_EXHAUSTED and a retry-after hint. A task admitted runs to completion:
only the start of work is gated, so a half-run task never stalls and memory stays
bounded by the queue and the bound.

Each admitted task reserves its first call's tokens until that call is booked by the
router (or the task ends), so a burst arriving in one instant cannot all slip in before
any of it shows up as load.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from orchestrator.config import AdmissionConfig
from orchestrator.domain import ErrorCode

K = TypeVar("K")

# Retry-after hints are clamped to this range, seconds.
_MIN_RETRY_S = 0.5
_MAX_RETRY_S = 60.0


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
    returns (tokens outstanding on healthy replicas, healthy replicas). The live
    `Admission` wraps it with futures; the fast-forward simulator drives it directly,
    with task handles as keys."""

    def __init__(self, config: AdmissionConfig, load: Callable[[], tuple[int, int]]) -> None:
        self.config = config
        self._load = load
        self.reserved = 0  # tokens held by admitted tasks whose first call is not routed
        self._heap: list[tuple[float, int]] = []  # (deadline or inf, seq)
        self._waiters: dict[int, tuple[K, int]] = {}  # seq -> (key, tokens); live ones
        self._seq_of: dict[K, int] = {}
        self._seq = itertools.count()
        self._admitted_from_queue: deque[float] = deque(maxlen=64)
        self.refused = 0

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def saturated(self) -> bool:
        outstanding, healthy = self._load()
        bound = self.config.max_outstanding_tokens_per_replica * max(healthy, 1)
        return outstanding + self.reserved >= bound

    def offer(self, key: K, tokens: int, deadline: float | None) -> Verdict:
        """A task whose first call weighs `tokens` asks to start. ADMITTED reserves the
        tokens (give them back with `release`); QUEUED waits for `ready`."""
        if not self.config.enabled or (not self._waiters and not self.saturated()):
            self.reserved += tokens
            return Verdict.ADMITTED
        if len(self._waiters) >= self.config.max_queued_tasks:
            self.refused += 1
            return Verdict.REFUSED
        seq = next(self._seq)
        heapq.heappush(self._heap, (deadline if deadline is not None else math.inf, seq))
        self._waiters[seq] = (key, tokens)
        self._seq_of[key] = seq
        return Verdict.QUEUED

    def withdraw(self, key: K) -> None:
        """A queued task gave up (its deadline, or its client went away)."""
        seq = self._seq_of.pop(key, None)
        if seq is not None:
            self._waiters.pop(seq, None)  # its heap entry is skipped lazily

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
            self.reserved += tokens
            self._admitted_from_queue.append(now)
            admitted.append(waiter)
        while heap and heap[0][1] not in self._waiters:
            heapq.heappop(heap)
        return admitted

    def release(self, tokens: int) -> None:
        self.reserved -= tokens

    def retry_after_s(self, now: float) -> float:
        """How long until the queue has room, from the recent pace of admissions."""
        times = self._admitted_from_queue
        if len(times) < 2 or times[-1] <= times[0]:
            return 1.0
        rate = (len(times) - 1) / (times[-1] - times[0])
        age = now - times[-1]
        return min(_MAX_RETRY_S, max(_MIN_RETRY_S, (len(self._waiters) + 1) / rate, age))

    def refusal(self, now: float) -> tuple[str, float]:
        """The RESOURCE_EXHAUSTED message and retry-after of a refused task."""
        retry = self.retry_after_s(now)
        return (
            f"the replicas are saturated and {len(self._waiters)} tasks are already "
            f"waiting (admission.max_queued_tasks = {self.config.max_queued_tasks}); "
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
    """The live shell of `AdmissionQueue`: a task waits on a future until admitted.
    `load()` returns (tokens outstanding on healthy replicas, healthy replicas)."""

    def __init__(self, config: AdmissionConfig, load: Callable[[], tuple[int, int]]) -> None:
        self._queue: AdmissionQueue[asyncio.Future[Ticket]] = AdmissionQueue(config, load)

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

    async def admit(self, tokens: int, deadline: float | None = None) -> Ticket:
        """Wait for room to start a task whose first call weighs `tokens`; `deadline` is
        absolute (time.monotonic()). Raises AdmissionRefused."""
        queue = self._queue
        future: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()
        verdict = queue.offer(future, tokens, deadline)
        if verdict is Verdict.ADMITTED:
            return Ticket(self, tokens)
        if verdict is Verdict.REFUSED:
            message, retry = queue.refusal(time.monotonic())
            raise AdmissionRefused(ErrorCode.RESOURCE_EXHAUSTED, message, retry)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(future)
        except BaseException as exc:  # the deadline, or the caller going away
            if not future.done():
                future.cancel()
                queue.withdraw(future)
            elif not future.cancelled():
                future.result().release()  # admitted in the instant it gave up
            if isinstance(exc, TimeoutError):
                raise AdmissionRefused(
                    ErrorCode.DEADLINE_EXCEEDED,
                    "the task's deadline passed while it waited for the saturated "
                    "replicas (admission queue); no call of it ran",
                    None,
                ) from None
            raise

    def wake(self) -> None:
        """Admit queued tasks while there is room (call whenever load drops)."""
        for future, tokens in self._queue.ready(time.monotonic()):
            future.set_result(Ticket(self, tokens))

    def retry_after_s(self) -> float:
        return self._queue.retry_after_s(time.monotonic())

    def _unreserve(self, tokens: int) -> None:
        self._queue.release(tokens)
        self.wake()
