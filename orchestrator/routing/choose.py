"""The routing policies as pure choices: `choose_<policy>(call, live, book, settings)`
names one of the live replicas and changes nothing (the caller then records the
placement in the book). Same inputs, same replica.

The policies (README "Routing"):

- `round_robin`: the healthy replicas in turn.
- `least_load`: the fewest outstanding tokens (prompt + max_tokens of the calls in flight).
- `prefix_affinity`: the replica holding the longest prefix of the prompt, within a load
  bound in the manner of consistent hashing with bounded loads: no replica may carry
  more than (1 + epsilon) x the mean outstanding tokens + `slack_tokens` (so a few
  calls never count as an imbalance, like SGLang's absolute threshold), and a hot
  prefix spills over instead of melting one replica. A match under `min_match_ratio` of
  the prompt's blocks (or none within the bound): least load.
- `program_aware`: Dynamo's cost, w x prompt blocks the replica would have to compute
  (missing from its cache) + the blocks it already has outstanding; the lowest cost wins,
  ties go to the replica that ran the task's previous call. The siblings of a fan-out
  share a replica while the prefill they save outweighs the load they pile up, and spread
  once it does not.

Outstanding tokens are the work a call brings: prompt + max_tokens, less (for the
prefix-aware policies) the prompt blocks the chosen replica already holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from orchestrator.config import RouterSettings, RoutingPolicy
from orchestrator.routing.book import (
    INDEX_BLOCK_TOKENS,
    ReplicaId,
    ReplicaView,
    RoutedCall,
    RoutingBook,
)


class NoReplicaAvailable(Exception):
    """Every replica is unhealthy (or there are none)."""


Chooser = Callable[[RoutedCall, Sequence[ReplicaView], RoutingBook, RouterSettings], ReplicaId]


def candidates(replicas: Sequence[ReplicaView], exclude: frozenset[str]) -> list[ReplicaView]:
    """Healthy, not excluded replicas in name order; raises NoReplicaAvailable."""
    out = sorted((r for r in replicas if r.healthy and r.name not in exclude), key=lambda r: r.name)
    if not out:
        raise NoReplicaAvailable(
            f"no healthy replica among {len(replicas)} (excluded: {sorted(exclude)})"
        )
    return out


def least_loaded(live: Sequence[ReplicaView], book: RoutingBook) -> ReplicaView:
    """Fewest outstanding tokens, then fewest calls in flight; exact ties rotate."""
    n = len(live)
    start = book.turn % n
    return min(
        (live[(start + i) % n] for i in range(n)),
        key=lambda r: (book.load(r.name), r.in_flight_calls),
    )


def choose_round_robin(
    call: RoutedCall, live: Sequence[ReplicaView], book: RoutingBook, settings: RouterSettings
) -> ReplicaId:
    """The live replicas (in name order) in turn."""
    return live[book.turn % len(live)].name


def choose_least_load(
    call: RoutedCall, live: Sequence[ReplicaView], book: RoutingBook, settings: RouterSettings
) -> ReplicaId:
    """The replica with the fewest outstanding tokens."""
    return least_loaded(live, book).name


def choose_prefix_affinity(
    call: RoutedCall, live: Sequence[ReplicaView], book: RoutingBook, settings: RouterSettings
) -> ReplicaId:
    """Longest cached prefix, under a bounded-load cap (see the module docstring)."""
    hashes = call.hashes
    request = call.request
    prompt = len(request.prompt_token_ids)
    floor = max(1, math.ceil(settings.min_match_ratio * len(hashes)))
    total = sum(book.load(r.name) for r in live)
    best: ReplicaView | None = None
    best_match = floor - 1
    epsilon, slack = settings.load_epsilon, settings.load_slack_tokens
    for view in live:
        matched = book.matched(view.name, hashes)
        if matched <= best_match:
            continue
        work = prompt - matched * INDEX_BLOCK_TOKENS + request.sampling.max_tokens
        bound = (1.0 + epsilon) * (total + work) / len(live) + slack
        if book.load(view.name) + work <= bound:
            best, best_match = view, matched
    return (best if best is not None else least_loaded(live, book)).name


def choose_program_aware(
    call: RoutedCall, live: Sequence[ReplicaView], book: RoutingBook, settings: RouterSettings
) -> ReplicaId:
    """Dynamo's cost with the task's previous replica breaking ties (module docstring)."""
    hashes = call.hashes
    needed = len(hashes) + 1  # the partial tail block is always computed
    home = book.home(call.request.task_id)
    w = settings.overlap_weight
    block = INDEX_BLOCK_TOKENS
    n = len(live)
    start = book.turn % n
    best: ReplicaView | None = None
    best_key = (math.inf, True)
    for i in range(n):
        view = live[(start + i) % n]
        missing = needed - book.matched(view.name, hashes)
        cost = w * missing + book.load(view.name) / block
        key = (cost, view.name != home)
        if key < best_key:
            best, best_key = view, key
    assert best is not None
    return best.name


CHOOSERS: Mapping[RoutingPolicy, Chooser] = {
    RoutingPolicy.ROUND_ROBIN: choose_round_robin,
    RoutingPolicy.LEAST_LOAD: choose_least_load,
    RoutingPolicy.PREFIX_AFFINITY: choose_prefix_affinity,
    RoutingPolicy.PROGRAM_AWARE: choose_program_aware,
}
# The policies that read the prefix indexes (the book keeps them only for these).
PREFIX_AWARE = frozenset({RoutingPolicy.PREFIX_AFFINITY, RoutingPolicy.PROGRAM_AWARE})
