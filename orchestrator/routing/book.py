"""The routing book: what the orchestrator knows about its replicas between decisions.

One driver loop owns one book and changes it only through its explicit methods:
`placed` (a call was routed), `finished` (it ended), `observe` (the engines reported
statistics) and `replica_down`. The choice functions (`orchestrator.routing.choose`)
only read it. The book holds:

- the outstanding load per replica: the tokens of the calls placed on it and not yet
  finished, updated synchronously so that the siblings of a fan-out, placed one after
  another in the same instant, each see the load the previous ones added (the engines'
  own statistics lag by a refresh period);
- per replica, the prompt blocks it has seen (`PrefixIndex`, chained 16-token block
  hashes, least recently used first), bounded by the KV capacity the engine reports and
  shrunk by the evictions it reports (only when the policy is prefix-aware);
- the replica of each task's latest call, and the rotation cursor (round robin's turn,
  and the tie-breaker of the other policies).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from orchestrator.blocks import block_hashes, extend_hash
from orchestrator.domain import CallRequest

ReplicaId: TypeAlias = str  # a replica's name, as `ReplicaView.name` gives it

# The routing index's block: the simulator's KV block. vLLM's blocks are coarser (128
# tokens on the CPU build); a finer index only predicts a hit a few tokens longer.
INDEX_BLOCK_TOKENS = 16
# Index size per replica before the engine has reported its KV capacity.
_DEFAULT_INDEX_BLOCKS = 1 << 16
# Tasks whose latest replica the book remembers (the oldest are forgotten first).
_MAX_HOMES = 1 << 16


@dataclass(slots=True, frozen=True)
class ReplicaView:
    """What routing knows of one replica at decision time (no Ray round trip): the
    orchestrator's own counts plus the engine's last reported statistics."""

    name: ReplicaId
    healthy: bool
    in_flight_calls: int  # calls the orchestrator has dispatched and not yet seen finish
    waiting_requests: int = 0  # engine queue depth at the last stats refresh
    running_requests: int = 0
    kv_usage: float = 0.0  # 0..1
    prefix_hit_rate: float = 0.0  # the engine's cumulative prompt-token hit rate
    kv_block_tokens: int = 16
    kv_capacity_blocks: int = 0  # 0: not reported yet
    evicted_blocks: int = 0  # cumulative, as the engine reports it (0: not reported)


@dataclass(slots=True, frozen=True)
class RoutedCall:
    """A call as routing sees it: the request and its prompt's block hashes (empty
    unless the book tracks prefixes), hashed once per decision."""

    request: CallRequest
    hashes: tuple[int, ...]


@dataclass(slots=True, frozen=True)
class _Placement:
    replica: ReplicaId
    tokens: int  # what the call added to the replica's load
    prompt: tuple[int, ...]
    hashes: tuple[int, ...]


def call_tokens(call: CallRequest) -> int:
    """A call's weight on a replica: its prompt and the most it may generate."""
    return len(call.prompt_token_ids) + call.sampling.max_tokens


class PrefixIndex:
    """The prompt blocks one replica has seen, by chained block hash, least recently
    used first; bounded to the replica's KV capacity."""

    def __init__(self, capacity: int = _DEFAULT_INDEX_BLOCKS) -> None:
        self.capacity = capacity
        self._lru: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._lru)

    def match(self, hashes: Sequence[int]) -> int:
        """How many leading blocks of `hashes` are indexed."""
        count = 0
        for h in hashes:
            if h not in self._lru:
                break
            count += 1
        return count

    def insert(self, hashes: Sequence[int]) -> None:
        """Index a prompt's blocks. Last block first, so its prefix is the most recently
        used: engines free a request's blocks tail first and keep the prefix longest,
        and a chained hash past a forgotten block could never match anyway."""
        lru = self._lru
        for h in reversed(hashes):
            if h in lru:
                lru.move_to_end(h)
            else:
                lru[h] = None
        self.evict(len(lru) - self.capacity)

    def evict(self, count: int) -> None:
        """Forget the `count` least recently used blocks."""
        for _ in range(min(count, len(self._lru))):
            self._lru.popitem(last=False)

    def clear(self) -> None:
        self._lru.clear()


class RoutingBook:
    """Outstanding load, prefix indexes and task homes (see the module docstring).
    `track_prefixes` False (round robin, least load): no indexes, and a call weighs its
    whole prompt + max_tokens."""

    def __init__(self, *, track_prefixes: bool) -> None:
        self.track_prefixes = track_prefixes
        self._placements: dict[str, _Placement] = {}
        self._load: dict[ReplicaId, int] = {}
        self._index: dict[ReplicaId, PrefixIndex] = {}
        self._evicted_seen: dict[ReplicaId, int] = {}
        self._homes: OrderedDict[str, ReplicaId] = OrderedDict()
        self._turn = 0  # rotates ties, so an idle cluster is not all "replica-0"

    # ---- reads (what the choice functions see) ------------------------------------

    @property
    def turn(self) -> int:
        """Calls placed so far: round robin's cursor and the other policies' tie rotation."""
        return self._turn

    def load(self, replica: ReplicaId) -> int:
        """Tokens placed on `replica` and not yet finished."""
        return self._load.get(replica, 0)

    def outstanding_tokens(self) -> Mapping[ReplicaId, int]:
        """Tokens placed on each replica and not yet finished (replicas with none omitted)."""
        return self._load

    def index(self, replica: ReplicaId) -> PrefixIndex | None:
        """The replica's prefix index (None: the book has not indexed it)."""
        return self._index.get(replica)

    def matched(self, replica: ReplicaId, hashes: Sequence[int]) -> int:
        """Leading blocks of `hashes` the replica is believed to hold."""
        index = self._index.get(replica)
        return 0 if index is None else index.match(hashes)

    def home(self, task_id: str) -> ReplicaId | None:
        """The replica of the task's latest placed call."""
        return self._homes.get(task_id) if task_id else None

    def routed(self, call: CallRequest) -> RoutedCall:
        """`call` with its prompt's block hashes when the book tracks prefixes."""
        hashes = tuple(block_hashes(call.prompt_token_ids)) if self.track_prefixes else ()
        return RoutedCall(call, hashes)

    def work(self, call: RoutedCall, replica: ReplicaId) -> int:
        """The tokens `call` would add to `replica`'s load: with prefix tracking, a
        cached prefix costs nothing to prefill, so only what it must compute counts."""
        request = call.request
        if not self.track_prefixes:
            return call_tokens(request)
        cached = self.matched(replica, call.hashes) * INDEX_BLOCK_TOKENS
        return len(request.prompt_token_ids) - cached + request.sampling.max_tokens

    # ---- updates --------------------------------------------------------------------

    def placed(self, call: RoutedCall, replica: ReplicaId) -> None:
        """`call` was routed to `replica`: it counts against it until `finished`. A call
        placed again (a retry) first gives up its previous placement."""
        request = call.request
        self._release(request.call_id)
        tokens = self.work(call, replica)
        self._placements[request.call_id] = _Placement(
            replica, tokens, request.prompt_token_ids, call.hashes
        )
        self._load[replica] = self._load.get(replica, 0) + tokens
        if self.track_prefixes:
            self._index_of(replica).insert(call.hashes)
        if request.task_id:
            homes = self._homes
            homes[request.task_id] = replica
            homes.move_to_end(request.task_id)
            if len(homes) > _MAX_HOMES:
                homes.popitem(last=False)
        self._turn += 1

    def finished(self, call_id: str, output_token_ids: Sequence[int] | None = None) -> None:
        """The call ended, with its output (None: it failed, was aborted or never ran).
        Idempotent: the executor finishes every call its task routed once more when the
        task ends (a call cancelled before it started never finished on its own), and a
        call finished already, or never placed, is ignored."""
        placement = self._release(call_id)
        if placement is not None and output_token_ids:
            self._remember_output(placement, output_token_ids)

    def observe(self, replicas: Sequence[ReplicaView]) -> None:
        """Fold in what the engines reported: KV capacity, evictions and deaths."""
        if not self.track_prefixes:
            return
        for view in replicas:
            if not view.healthy:
                self.replica_down(view.name)
                continue
            index = self._index_of(view.name)
            ratio = max(1, view.kv_block_tokens // INDEX_BLOCK_TOKENS)
            if view.kv_capacity_blocks:
                index.capacity = view.kv_capacity_blocks * ratio
                index.evict(len(index) - index.capacity)
            seen = self._evicted_seen.get(view.name, 0)
            if view.evicted_blocks > seen:
                index.evict((view.evicted_blocks - seen) * ratio)
            self._evicted_seen[view.name] = view.evicted_blocks

    def replica_down(self, replica: ReplicaId) -> None:
        """The replica is unhealthy: one that comes back may have restarted with an
        empty cache, so forget what it held (its calls still count until they finish)."""
        index = self._index.get(replica)
        if index is not None:
            index.clear()

    # ---- internals ------------------------------------------------------------------

    def _index_of(self, replica: ReplicaId) -> PrefixIndex:
        index = self._index.get(replica)
        if index is None:
            index = self._index[replica] = PrefixIndex()
        return index

    def _release(self, call_id: str) -> _Placement | None:
        placement = self._placements.pop(call_id, None)
        if placement is not None:
            left = self._load[placement.replica] - placement.tokens
            if left:
                self._load[placement.replica] = left
            else:
                del self._load[placement.replica]
        return placement

    def _remember_output(self, placement: _Placement, output_token_ids: Sequence[int]) -> None:
        # The engine keeps the output's KV too: the next step of the task extends it.
        # Only the blocks past the prompt's are new; chain them on from its last hash.
        index = self._index.get(placement.replica)
        if index is None:
            return
        hashes = placement.hashes
        block = INDEX_BLOCK_TOKENS
        rest = placement.prompt[len(hashes) * block :] + tuple(output_token_ids)
        previous = hashes[-1] if hashes else 0
        extended = list(hashes)
        for start in range(0, len(rest) - block + 1, block):
            previous = extend_hash(previous, rest[start : start + block])
            extended.append(previous)
        index.insert(extended)
