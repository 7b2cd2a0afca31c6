"""`AbortBatcher`: a replica's aborts leave in bounded batches, each id exactly once, off
the cancelled caller's path; a replica that dies or hangs with a batch pending loses
or holds up nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from ray.exceptions import RayActorError

from orchestrator.replicas.aborts import AbortBatcher, take_batch
from tests.polling import async_wait_until


class Replica:
    """Records the batches `abort_many` got; can hold them, or fail them as a dead actor."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, ...]] = []
        self.dead = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def abort_many(self, call_ids: Sequence[str]) -> None:
        self.batches.append(tuple(call_ids))
        await self.gate.wait()
        if self.dead:
            raise RayActorError(error_msg="The actor died unexpectedly")

    @property
    def aborted(self) -> list[str]:
        return [call_id for batch in self.batches for call_id in batch]


async def settle(batcher: AbortBatcher, within_s: float = 2.0) -> None:
    await async_wait_until(lambda: batcher.idle, timeout=within_s, what="every batch sent")


def test_take_batch_removes_the_oldest_ids_up_to_the_bound() -> None:
    pending = dict.fromkeys(f"c{i}" for i in range(5))
    assert take_batch(pending, 2) == ("c0", "c1")
    assert list(pending) == ["c2", "c3", "c4"]
    assert take_batch(pending, 10) == ("c2", "c3", "c4")
    assert pending == {} and take_batch(pending, 3) == ()
    with pytest.raises(ValueError):
        take_batch(pending, 0)


async def test_a_storm_goes_out_in_bounded_batches_each_id_once() -> None:
    replica = Replica()
    batcher = AbortBatcher("replica-0", replica.abort_many, max_batch=256)
    ids = [f"call-{i}" for i in range(1000)]
    for call_id in ids:
        batcher.add(call_id)  # no await: what a cancelled call does
    batcher.add("call-7")  # aborted twice before its batch left: sent once
    assert batcher.pending == 1000 and replica.batches == []  # nothing sent inline
    await settle(batcher)
    assert sorted(replica.aborted) == sorted(ids)
    assert [len(b) for b in replica.batches] == [256, 256, 256, 232]


async def test_with_one_batch_in_the_air_the_next_waits_for_its_reply() -> None:
    replica = Replica()
    replica.gate.clear()
    batcher = AbortBatcher("replica-0", replica.abort_many, max_batch=4, max_in_air=1)
    batcher.add("a")
    await asyncio.sleep(0.01)
    assert replica.batches == [("a",)]
    for call_id in "bcdef":
        batcher.add(call_id)
    await asyncio.sleep(0.01)
    assert replica.batches == [("a",)]  # one batch in the air at a time
    replica.gate.set()
    await settle(batcher)
    assert replica.batches == [("a",), ("b", "c", "d", "e"), ("f",)]


async def test_a_slow_reply_holds_later_aborts_back_only_an_interval() -> None:
    replica = Replica()
    replica.gate.clear()  # no reply yet
    batcher = AbortBatcher(
        "replica-0", replica.abort_many, max_batch=2, interval_s=0.01, max_in_air=4
    )
    batcher.add("a")
    await asyncio.sleep(0.005)
    for call_id in "bcd":
        batcher.add(call_id)
    await async_wait_until(lambda: len(replica.batches) == 3, timeout=1.0, what="batch 3")
    assert replica.batches == [("a",), ("b", "c"), ("d",)]
    for call_id in "efghij":
        batcher.add(call_id)
    await async_wait_until(lambda: len(replica.batches) == 4, timeout=1.0, what="batch 4")
    await asyncio.sleep(0.05)
    # At most 4 unanswered: the rest waits for a reply.
    assert replica.batches[3] == ("e", "f") and len(replica.batches) == 4
    assert batcher.pending == 4
    replica.gate.set()
    await settle(batcher)
    assert replica.aborted == list("abcdefghij")


async def test_a_replica_dying_with_batches_pending_drops_them_and_later_aborts_still_go() -> None:
    replica = Replica()
    replica.gate.clear()
    batcher = AbortBatcher("replica-0", replica.abort_many, max_batch=2)
    for call_id in "abcde":
        batcher.add(call_id)
    await asyncio.sleep(0.01)
    replica.dead = True
    replica.gate.set()  # every batch fails, as a dead actor's calls do
    await settle(batcher)
    assert replica.aborted == list("abcde")  # each tried once, none retried, none lost
    batcher.add("f")  # the batcher still works after failures
    await settle(batcher)
    assert replica.aborted[-1] == "f"


async def test_a_hung_replica_holds_a_batch_only_up_to_the_reply_timeout() -> None:
    replica = Replica()
    replica.gate.clear()  # never answers
    batcher = AbortBatcher("replica-0", replica.abort_many, max_batch=1, reply_timeout_s=0.05)
    batcher.add("a")
    batcher.add("b")
    await settle(batcher, within_s=1.0)
    assert replica.aborted == ["a", "b"]


async def test_a_send_failing_at_once_loses_nothing_else() -> None:
    sent: list[tuple[str, ...]] = []

    def send(call_ids: Sequence[str]) -> asyncio.Future[None]:
        sent.append(tuple(call_ids))
        if len(sent) == 1:
            raise RuntimeError("cannot submit")  # `.remote()` itself may raise
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    batcher = AbortBatcher("replica-0", send, max_batch=1)
    for call_id in "abc":
        batcher.add(call_id)
    await settle(batcher)
    assert sent == [("a",), ("b",), ("c",)]


async def test_close_drops_what_is_pending_and_ignores_later_aborts() -> None:
    replica = Replica()
    replica.gate.clear()
    batcher = AbortBatcher("replica-0", replica.abort_many, max_batch=1, max_in_air=1)
    batcher.add("a")
    batcher.add("b")
    await asyncio.sleep(0.01)
    await batcher.close()  # the replica is being shut down: its engine ends every call
    batcher.add("c")
    assert batcher.idle and replica.batches == [("a",)]


def test_max_batch_must_be_positive() -> None:
    async def send(call_ids: Sequence[str]) -> None:
        return None

    with pytest.raises(ValueError):
        AbortBatcher("replica-0", send, max_batch=0)
