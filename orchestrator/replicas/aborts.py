"""`AbortBatcher`: a replica's aborts, sent in batches off the caller's path.

A cancellation storm (a client cancelling 1,000 tasks at once) used to cost the pool two
Ray calls per aborted call, made one at a time, and each call stayed in flight until its
abort's reply came back. Here a cancelled call only adds its id to its replica's pending
set (O(1), no await); one background task per replica sends what is pending as
`abort_many(call_ids)` actor calls of at most `max_batch` ids: at once when nothing is
in the air, else every `interval_s` (or on a reply, if sooner) with at most
`max_in_air` batches unanswered, so the Ray calls grow with the storm's duration, not
its size, and a slow reply does not hold the rest of a storm back. The
engine's abort ends each call's generation (its caller is gone), so nothing else has to
be cancelled on the orchestrator's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger(__name__)

# Most call ids one `abort_many` actor call carries: bounds the size of one Ray message
# and how long the replica's event loop spends on one batch.
MAX_ABORT_BATCH = 256
# While batches are in the air, how often the next one leaves: a storm's aborts reach a
# replica that is slow to answer within this, in a few Ray calls.
ABORT_INTERVAL_S = 0.01
# Most batches of one replica unanswered at once (then the next waits for a reply).
MAX_ABORTS_IN_AIR = 4
# Longest one batch waits for the replica's reply before the next batch goes: a hung
# replica must not hold its later aborts back forever (a dead one fails at once).
ABORT_REPLY_TIMEOUT_S = 30.0


def take_batch(pending: dict[str, None], limit: int) -> tuple[str, ...]:
    """Remove and return up to `limit` ids from `pending`, oldest first (pure)."""
    if limit < 1:
        raise ValueError(f"a batch holds at least one id, not {limit}")
    batch = []
    for call_id in pending:
        batch.append(call_id)
        if len(batch) == limit:
            break
    for call_id in batch:
        del pending[call_id]
    return tuple(batch)


class AbortBatcher:
    """The pending aborts of one replica actor, flushed by one background task.

    `send(call_ids)` returns the awaitable reply of one `abort_many` actor call. A send
    that fails (the actor died, timed out) is logged and dropped: a dead actor's calls
    died with it. Bound to one actor: a replaced replica gets a new batcher.
    """

    def __init__(
        self,
        name: str,
        send: Callable[[Sequence[str]], Awaitable[object]],
        *,
        max_batch: int = MAX_ABORT_BATCH,
        interval_s: float = ABORT_INTERVAL_S,
        max_in_air: int = MAX_ABORTS_IN_AIR,
        reply_timeout_s: float = ABORT_REPLY_TIMEOUT_S,
    ) -> None:
        if max_batch < 1 or max_in_air < 1:
            raise ValueError(f"max_batch ({max_batch}) and max_in_air ({max_in_air}) must be >= 1")
        self._interval_s = interval_s
        self._max_in_air = max_in_air
        self._name = name
        self._send = send
        self._max_batch = max_batch
        self._reply_timeout_s = reply_timeout_s
        # Insertion-ordered set: an id aborted twice before its batch goes is sent once.
        self._pending: dict[str, None] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """Ids queued and not yet sent."""
        return len(self._pending)

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch in the air."""
        return not self._pending and self._flusher is None

    def add(self, call_id: str) -> None:
        """Queue one call's abort; never blocks (safe from a cancelled task's handler)."""
        if self._closed:
            return
        self._pending[call_id] = None
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush(), name=f"aborts-{self._name}"
            )

    async def _flush(self) -> None:
        in_air: set[asyncio.Task[None]] = set()
        try:
            # One loop iteration first: the rest of a storm's cancellations join this batch.
            await asyncio.sleep(0)
            while self._pending or in_air:
                while self._pending and len(in_air) < self._max_in_air:
                    batch = take_batch(self._pending, self._max_batch)
                    in_air.add(asyncio.create_task(self._deliver(batch)))
                done, _ = await asyncio.wait(
                    in_air, timeout=self._interval_s, return_when=asyncio.FIRST_COMPLETED
                )
                in_air -= done
        finally:
            for delivery in in_air:  # only when closed: the replica is going away
                delivery.cancel()
            self._flusher = None

    async def _deliver(self, batch: tuple[str, ...]) -> None:
        try:
            async with asyncio.timeout(self._reply_timeout_s):
                await self._send(batch)
        except Exception as exc:  # noqa: BLE001 - a failed abort is not the caller's
            log.info(
                "replica %s: aborting %d calls failed (%r); a dead replica's calls ended with it",
                self._name,
                len(batch),
                exc,
            )

    async def close(self) -> None:
        """Stop flushing; ids still pending are dropped (the replica is going away)."""
        self._closed = True
        self._pending.clear()
        flusher = self._flusher
        if flusher is not None:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
