"""Routing policies. A router sees a call and a snapshot of the replicas and names one;
it never awaits, calls Ray or touches gRPC, so every policy is unit-testable.

Routers keep their own books: the tokens each replica has outstanding (calls routed to
it and not yet `finished`) and, for the prefix-aware policies, which prompt blocks each
replica has seen. The books change synchronously in `choose` and `finished`, so the
siblings of a fan-out, chosen one after another in the same instant, each see the load
the previous ones added: the engines' own statistics lag by a refresh period.

The policies (README "Routing"):

- `round_robin`: the healthy replicas in turn.
- `least_load`: the fewest outstanding tokens (prompt + max_tokens of the calls in flight).
- `prefix_affinity`: the replica holding the longest prefix of the prompt, within a load
  bound in the manner of consistent hashing with bounded loads: no replica may carry
  more than (1 + epsilon) x the mean outstanding tokens + `slack_tokens` (so a few
  calls never count as an imbalance, like SGLang's absolute threshold), and a hot
  prefix spills over instead of melting one replica. A match under `min_match_ratio` of the prompt's
  blocks (or none within the bound): least load.

Outstanding tokens are the work a call brings: prompt + max_tokens, less (for the
prefix-aware policies) the prompt blocks the chosen replica already holds.
- `program_aware`: Dynamo's cost, w x prompt blocks the replica would have to compute
  (missing from its cache) + the blocks it already has outstanding; the lowest cost wins,
  ties go to the replica that ran the task's previous call. The siblings of a fan-out
  share a replica while the prefill they save outweighs the load they pile up, and spread
  once it does not.
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from orchestrator.blocks import block_hashes, extend_hash
from orchestrator.domain import CallRequest

# The routing index's block: the simulator's KV block. vLLM's blocks are coarser (128
# tokens on the CPU build); a finer index only predicts a hit a few tokens longer.
INDEX_BLOCK_TOKENS = 16
# Index size per replica before the engine has reported its KV capacity.
_DEFAULT_INDEX_BLOCKS = 1 << 16


class RoutingPolicy(enum.Enum):
    ROUND_ROBIN = "round_robin"
    LEAST_LOAD = "least_load"
    PREFIX_AFFINITY = "prefix_affinity"
    PROGRAM_AWARE = "program_aware"


@dataclass(slots=True, frozen=True)
class ReplicaView:
    """What routing knows of one replica at decision time (no Ray round trip): the
    orchestrator's own counts plus the engine's last reported statistics."""

    name: str
    healthy: bool
    in_flight_calls: int  # calls the orchestrator has dispatched and not yet seen finish
    waiting_requests: int = 0  # engine queue depth at the last stats refresh
    running_requests: int = 0
    kv_usage: float = 0.0  # 0..1
    prefix_hit_rate: float = 0.0  # the engine's cumulative prompt-token hit rate
    kv_block_tokens: int = 16
    kv_capacity_blocks: int = 0  # 0: not reported yet
    evicted_blocks: int = 0  # cumulative, as the engine reports it (0: not reported)


class NoReplicaAvailable(Exception):
    """Every replica is unhealthy (or there are none)."""


class Router(Protocol):
    def choose(
        self, call: CallRequest, replicas: Sequence[ReplicaView], exclude: frozenset[str] = ...
    ) -> str:
        """The replica for `call`; the call counts against it until `finished`."""
        ...

    def finished(self, call_id: str, output_token_ids: Sequence[int] | None = None) -> None:
        """The call ended (with its output, or None when it failed or was aborted)."""
        ...

    def outstanding_tokens(self) -> Mapping[str, int]:
        """Tokens routed to each replica and not yet finished."""
        ...


@dataclass(slots=True)
class _Routed:
    replica: str
    tokens: int
    prompt: tuple[int, ...]
    hashes: list[int]  # the prompt's block hashes (prefix-aware policies; else empty)


def call_tokens(call: CallRequest) -> int:
    """A call's weight on a replica: its prompt and the most it may generate."""
    return len(call.prompt_token_ids) + call.sampling.max_tokens


def candidates(replicas: Sequence[ReplicaView], exclude: frozenset[str]) -> list[ReplicaView]:
    """Healthy, not excluded replicas in name order; raises NoReplicaAvailable."""
    out = sorted((r for r in replicas if r.healthy and r.name not in exclude), key=lambda r: r.name)
    if not out:
        raise NoReplicaAvailable(
            f"no healthy replica among {len(replicas)} (excluded: {sorted(exclude)})"
        )
    return out


class BaseRouter:
    """The load book every policy keeps; subclasses implement `_pick`."""

    def __init__(self) -> None:
        self._routed: dict[str, _Routed] = {}
        self._load: dict[str, int] = {}
        self._turn = 0  # rotates ties, so an idle cluster is not all "replica-0"

    def choose(
        self,
        call: CallRequest,
        replicas: Sequence[ReplicaView],
        exclude: frozenset[str] = frozenset(),
    ) -> str:
        # A retry of a call routed before: its old placement no longer counts.
        self._release(call.call_id)
        self._observe(replicas)  # first: a cluster-wide outage must still clear indexes
        live = candidates(replicas, exclude)
        name = self._pick(call, live).name
        tokens = self._work(call, name)
        self._routed[call.call_id] = _Routed(
            name, tokens, call.prompt_token_ids, self._hashes_of(call)
        )
        self._load[name] = self._load.get(name, 0) + tokens
        self._placed(call, name)
        self._turn += 1
        return name

    def finished(self, call_id: str, output_token_ids: Sequence[int] | None = None) -> None:
        routed = self._release(call_id)
        if routed is not None and output_token_ids is not None:
            self._completed(routed, output_token_ids)

    def outstanding_tokens(self) -> Mapping[str, int]:
        return self._load

    def load(self, name: str) -> int:
        return self._load.get(name, 0)

    def _release(self, call_id: str) -> _Routed | None:
        routed = self._routed.pop(call_id, None)
        if routed is not None:
            left = self._load[routed.replica] - routed.tokens
            if left:
                self._load[routed.replica] = left
            else:
                del self._load[routed.replica]
        return routed

    def _least_loaded(self, live: Sequence[ReplicaView]) -> ReplicaView:
        """Fewest outstanding tokens, then fewest calls in flight; exact ties rotate."""
        n = len(live)
        start = self._turn % n
        return min(
            (live[(start + i) % n] for i in range(n)),
            key=lambda r: (self.load(r.name), r.in_flight_calls),
        )

    # Hooks.
    def _hashes_of(self, call: CallRequest) -> list[int]:
        return []

    def _work(self, call: CallRequest, name: str) -> int:
        """The tokens `call` adds to `name`'s outstanding load."""
        return call_tokens(call)

    def _pick(self, call: CallRequest, live: Sequence[ReplicaView]) -> ReplicaView:
        raise NotImplementedError

    def _observe(self, replicas: Sequence[ReplicaView]) -> None:
        """Fold in what the engines reported (evictions, capacity, deaths)."""

    def _placed(self, call: CallRequest, name: str) -> None:
        """The call was routed to `name`."""

    def _completed(self, routed: _Routed, output_token_ids: Sequence[int]) -> None:
        """A routed call finished with this output."""


class RoundRobinRouter(BaseRouter):
    """Cycles over the healthy replicas in name order, skipping `exclude`d ones."""

    def _pick(self, call: CallRequest, live: Sequence[ReplicaView]) -> ReplicaView:
        return live[self._turn % len(live)]


class LeastLoadRouter(BaseRouter):
    """The replica with the fewest outstanding tokens."""

    def _pick(self, call: CallRequest, live: Sequence[ReplicaView]) -> ReplicaView:
        return self._least_loaded(live)


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


class _PrefixRouter(BaseRouter):
    """The per-replica prefix indexes both prefix-aware policies keep."""

    def __init__(self) -> None:
        super().__init__()
        self._index: dict[str, PrefixIndex] = {}
        self._evicted_seen: dict[str, int] = {}
        self._hashes: tuple[str, list[int]] = ("", [])  # the last call's, for _placed

    def index(self, name: str) -> PrefixIndex:
        index = self._index.get(name)
        if index is None:
            index = self._index[name] = PrefixIndex()
        return index

    def _prompt_hashes(self, call: CallRequest) -> list[int]:
        if self._hashes[0] != call.call_id:
            self._hashes = (call.call_id, block_hashes(call.prompt_token_ids))
        return self._hashes[1]

    def _hashes_of(self, call: CallRequest) -> list[int]:
        return self._prompt_hashes(call)

    def _observe(self, replicas: Sequence[ReplicaView]) -> None:
        for view in replicas:
            if not view.healthy:
                # A replica that comes back may have restarted with an empty cache.
                if view.name in self._index:
                    self._index[view.name].clear()
                continue
            index = self.index(view.name)
            ratio = max(1, view.kv_block_tokens // INDEX_BLOCK_TOKENS)
            if view.kv_capacity_blocks:
                index.capacity = view.kv_capacity_blocks * ratio
                index.evict(len(index) - index.capacity)
            seen = self._evicted_seen.get(view.name, 0)
            if view.evicted_blocks > seen:
                index.evict((view.evicted_blocks - seen) * ratio)
            self._evicted_seen[view.name] = view.evicted_blocks

    def _work(self, call: CallRequest, name: str) -> int:
        # A cached prefix costs the replica nothing to prefill: count what it must compute.
        hashes = self._prompt_hashes(call)
        cached = self.index(name).match(hashes) * INDEX_BLOCK_TOKENS
        return len(call.prompt_token_ids) - cached + call.sampling.max_tokens

    def _placed(self, call: CallRequest, name: str) -> None:
        self.index(name).insert(self._prompt_hashes(call))

    def _completed(self, routed: _Routed, output_token_ids: Sequence[int]) -> None:
        # The engine keeps the output's KV too: the next step of the task extends it.
        # Only the blocks past the prompt's are new; chain them on from its last hash.
        index = self._index.get(routed.replica)
        if index is None or not output_token_ids:
            return
        hashes = routed.hashes
        block = INDEX_BLOCK_TOKENS
        rest = routed.prompt[len(hashes) * block :] + tuple(output_token_ids)
        previous = hashes[-1] if hashes else 0
        extended = list(hashes)
        for start in range(0, len(rest) - block + 1, block):
            previous = extend_hash(previous, rest[start : start + block])
            extended.append(previous)
        index.insert(extended)


class PrefixAffinityRouter(_PrefixRouter):
    """Longest cached prefix, under a bounded-load cap (see the module docstring)."""

    def __init__(
        self, epsilon: float = 0.25, min_match_ratio: float = 0.1, slack_tokens: int = 16384
    ) -> None:
        super().__init__()
        self.epsilon = epsilon
        self.min_match_ratio = min_match_ratio
        self.slack_tokens = slack_tokens

    def _pick(self, call: CallRequest, live: Sequence[ReplicaView]) -> ReplicaView:
        hashes = self._prompt_hashes(call)
        prompt = len(call.prompt_token_ids)
        floor = max(1, math.ceil(self.min_match_ratio * len(hashes)))
        total = sum(self.load(r.name) for r in live)
        best: ReplicaView | None = None
        best_match = floor - 1
        for view in live:
            matched = self.index(view.name).match(hashes)
            if matched <= best_match:
                continue
            work = prompt - matched * INDEX_BLOCK_TOKENS + call.sampling.max_tokens
            bound = (1.0 + self.epsilon) * (total + work) / len(live) + self.slack_tokens
            if self.load(view.name) + work <= bound:
                best, best_match = view, matched
        return best if best is not None else self._least_loaded(live)


class ProgramAwareRouter(_PrefixRouter):
    """Dynamo's cost with the task's previous replica breaking ties (module docstring)."""

    def __init__(self, overlap_weight: float = 4.0) -> None:
        super().__init__()
        self.overlap_weight = overlap_weight
        # task id -> the replica of its latest call; bounded (oldest tasks go first).
        self._home: OrderedDict[str, str] = OrderedDict()
        self._max_homes = 1 << 16

    def _pick(self, call: CallRequest, live: Sequence[ReplicaView]) -> ReplicaView:
        hashes = self._prompt_hashes(call)
        needed = len(hashes) + 1  # the partial tail block is always computed
        home = self._home.get(call.task_id) if call.task_id else None
        w = self.overlap_weight
        block = INDEX_BLOCK_TOKENS
        n = len(live)
        start = self._turn % n
        best: ReplicaView | None = None
        best_key = (math.inf, True)
        for i in range(n):
            view = live[(start + i) % n]
            missing = needed - self.index(view.name).match(hashes)
            cost = w * missing + self.load(view.name) / block
            key = (cost, view.name != home)
            if key < best_key:
                best, best_key = view, key
        assert best is not None
        return best

    def _placed(self, call: CallRequest, name: str) -> None:
        super()._placed(call, name)
        if call.task_id:
            self._home[call.task_id] = name
            self._home.move_to_end(call.task_id)
            if len(self._home) > self._max_homes:
                self._home.popitem(last=False)


@dataclass(slots=True, frozen=True)
class RouterSettings:
    """The knobs of `make_router` (RoutingConfig carries them from the deployment)."""

    policy: RoutingPolicy = RoutingPolicy.ROUND_ROBIN
    load_epsilon: float = 0.25
    min_match_ratio: float = 0.1
    load_slack_tokens: int = 16384
    overlap_weight: float = 4.0


def make_router(settings: RouterSettings) -> BaseRouter:
    if settings.policy is RoutingPolicy.ROUND_ROBIN:
        return RoundRobinRouter()
    if settings.policy is RoutingPolicy.LEAST_LOAD:
        return LeastLoadRouter()
    if settings.policy is RoutingPolicy.PREFIX_AFFINITY:
        return PrefixAffinityRouter(
            settings.load_epsilon, settings.min_match_ratio, settings.load_slack_tokens
        )
    return ProgramAwareRouter(overlap_weight=settings.overlap_weight)
