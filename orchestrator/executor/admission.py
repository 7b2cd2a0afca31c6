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
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.config import AdmissionConfig
from orchestrator.domain import ErrorCode

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


@dataclass(slots=True, order=True)
class _Waiter:
    key: tuple[float, int]
    tokens: int = field(compare=False)
    future: asyncio.Future[Ticket] = field(compare=False)


class Admission:
    """`load()` returns (tokens outstanding on healthy replicas, healthy replicas)."""

    def __init__(self, config: AdmissionConfig, load: Callable[[], tuple[int, int]]) -> None:
        self._config = config
        self._load = load
        self._reserved = 0
        self._heap: list[_Waiter] = []
        self._waiting = 0  # live entries in the heap (cancelled ones are skipped lazily)
        self._seq = itertools.count()
        self._admitted_from_queue: deque[float] = deque(maxlen=64)  # monotonic times
        self.refused = 0

    @property
    def queued(self) -> int:
        return self._waiting

    @property
    def reserved_tokens(self) -> int:
        return self._reserved

    def saturated(self) -> bool:
        outstanding, healthy = self._load()
        bound = self._config.max_outstanding_tokens_per_replica * max(healthy, 1)
        return outstanding + self._reserved >= bound

    async def admit(self, tokens: int, deadline: float | None = None) -> Ticket:
        """Wait for room to start a task whose first call weighs `tokens`; `deadline` is
        absolute (time.monotonic()). Raises AdmissionRefused."""
        if not self._config.enabled or (self._waiting == 0 and not self.saturated()):
            return self._ticket(tokens)
        if self._waiting >= self._config.max_queued_tasks:
            self.refused += 1
            retry = self.retry_after_s()
            raise AdmissionRefused(
                ErrorCode.RESOURCE_EXHAUSTED,
                f"the replicas are saturated and {self._waiting} tasks are already waiting "
                f"(admission.max_queued_tasks = {self._config.max_queued_tasks}); "
                f"retry after about {retry:.1f} s",
                retry,
            )
        future: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()
        rank = deadline if deadline is not None else math.inf
        heapq.heappush(self._heap, _Waiter((rank, next(self._seq)), tokens, future))
        self._waiting += 1
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(future)
        except BaseException as exc:  # the deadline, or the caller going away
            if not future.done():
                future.cancel()
                self._waiting -= 1
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
        while self._heap and not self.saturated():
            waiter = heapq.heappop(self._heap)
            if waiter.future.done():
                continue  # gave up (cancelled or timed out)
            self._waiting -= 1
            self._admitted_from_queue.append(time.monotonic())
            ticket = self._ticket(waiter.tokens)
            waiter.future.set_result(ticket)
        while self._heap and self._heap[0].future.done():
            heapq.heappop(self._heap)

    def retry_after_s(self) -> float:
        """How long until the queue has room, from the recent pace of admissions."""
        times = self._admitted_from_queue
        if len(times) < 2 or times[-1] <= times[0]:
            return 1.0
        rate = (len(times) - 1) / (times[-1] - times[0])
        age = time.monotonic() - times[-1]
        return min(_MAX_RETRY_S, max(_MIN_RETRY_S, (self._waiting + 1) / rate, age))

    def _ticket(self, tokens: int) -> Ticket:
        self._reserved += tokens
        return Ticket(self, tokens)

    def _unreserve(self, tokens: int) -> None:
        self._reserved -= tokens
        self.wake()
