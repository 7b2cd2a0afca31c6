"""A continuous-batching scheduler modelled on vLLM V1's, for one simulated replica.

Each `step(now)` picks the work of one engine step the way vLLM V1 does: running
requests first (one decode token each, or the next chunk of an unfinished prefill), then
waiting requests while the token budget, `max_num_seqs` and KV blocks allow, with
automatic prefix caching on admission and preemption by recomputation when blocks run
out. The step's duration comes from the roofline `PerfModel`; its effects (computed
tokens, sampled tokens, finished requests, newly full blocks entering the prefix cache)
are applied at once and time-stamped at the step's end, so the caller only has to wait
(really, or on a virtual clock) until `StepResult.end` before reporting them.

`v0_prefill_first` reproduces vLLM V0 without chunked prefill (the calibration rows
measured on vLLM 0.6): a step runs either waiting prefills or the running decodes,
never both, and prefills go first.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from orchestrator.sim.kv import KvCache, block_hashes, extend_hash
from orchestrator.sim.perf import BLOCK_TOKENS, PerfModel, StepCost, blocks_for


class RequestState(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    ABORTED = "aborted"


@dataclass(slots=True, eq=False)
class SimRequest:
    """One call inside the simulated engine."""

    request_id: str
    prompt: tuple[int, ...]
    # The tokens the simulated model will produce (their number is the output length:
    # max_tokens, or where the simulated model "stops").
    output_ids: tuple[int, ...]
    arrival: float
    priority: int = 0  # lower first, under the priority policy
    state: RequestState = RequestState.WAITING
    num_computed: int = 0  # tokens whose KV is in the cache
    num_output: int = 0  # output tokens sampled so far
    blocks: list[int] = field(default_factory=list)
    # Hashes of this request's full blocks, in order (prompt blocks up front, then output
    # blocks as they fill); computed once, extended as tokens are generated.
    hashes: list[int] = field(default_factory=list)
    committed: int = 0  # leading blocks already entered in the prefix cache
    cached_tokens: int | None = None  # prompt tokens hit at first admission
    first_scheduled: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    token_times: list[float] = field(default_factory=list)  # one per sampling step
    preemptions: int = 0
    spec_credit: float = 0.0  # fractional tokens owed by speculative decoding
    owner: object = None  # the driver's handle for this request (engine call, sim call)
    # len(prompt) and len(output_ids), kept as plain ints: the step loop reads them for
    # every running request.
    prompt_len: int = 0
    target: int = 0

    def __post_init__(self) -> None:
        self.prompt_len = len(self.prompt)
        self.target = len(self.output_ids)

    @property
    def total_tokens(self) -> int:
        return self.prompt_len + self.num_output

    def token(self, index: int) -> int:
        n = self.prompt_len
        return self.prompt[index] if index < n else self.output_ids[index - n]


@dataclass(slots=True, frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int = 16384
    chunked_prefill: bool = True
    prefix_caching: bool = True
    priority: bool = False  # vLLM scheduling_policy="priority"
    v0_prefill_first: bool = False
    # Keep every token's time (for inter-token latencies); the fast-forward cluster
    # simulation turns this off, it only needs the first and last.
    record_token_times: bool = True


@dataclass(slots=True, frozen=True)
class StepResult:
    start: float
    end: float
    cost: StepCost
    n_decode: int  # sequences that decoded
    prefill_tokens: int  # new prompt tokens computed
    # Requests that sampled tokens this step, with how many (1, or more with speculative
    # decoding); finished ones are also in `finished`.
    produced: tuple[tuple[SimRequest, int], ...]
    finished: tuple[SimRequest, ...]
    preempted: int


class Scheduler:
    """The scheduler and KV cache of one replica."""

    def __init__(self, perf: PerfModel, config: SchedulerConfig, num_blocks: int) -> None:
        self.perf = perf
        self.config = config
        self.kv = KvCache(num_blocks, prefix_caching=config.prefix_caching)
        self.running: list[SimRequest] = []
        self._fcfs: deque[SimRequest] = deque()
        self._heap: list[tuple[int, float, int, SimRequest]] = []
        self._order = itertools.count()
        self._waiting = 0
        # Speculative decoding writes up to k draft tokens beyond the context.
        self._lookahead = perf.hw.spec.k if perf.hw.spec else 0
        # Counters for stats and tests.
        self.steps = 0
        self.busy_time = 0.0  # seconds of GPU work
        self.preemptions = 0
        self.prompt_tokens = 0  # prompt tokens of admitted requests (first admission)
        self.cached_prompt_tokens = 0

    # ---- queue --------------------------------------------------------------------

    @property
    def num_waiting(self) -> int:
        return self._waiting

    @property
    def has_work(self) -> bool:
        return bool(self.running) or self._waiting > 0

    def add(self, request: SimRequest) -> None:
        if request.total_tokens + request.target - request.num_output > self.config.max_model_len:
            raise ValueError(
                f"request {request.request_id}: {len(request.prompt)} prompt tokens plus "
                f"{request.target} output tokens exceed max_model_len "
                f"{self.config.max_model_len}"
            )
        request.state = RequestState.WAITING
        self._push(request, front=False)

    def _push(self, request: SimRequest, *, front: bool) -> None:
        self._waiting += 1
        if self.config.priority:
            key = (request.priority, request.arrival, next(self._order), request)
            heapq.heappush(self._heap, key)
        elif front:
            self._fcfs.appendleft(request)
        else:
            self._fcfs.append(request)

    def _peek(self) -> SimRequest | None:
        """The next waiting request (skipping aborted ones)."""
        if self.config.priority:
            while self._heap and self._heap[0][3].state is not RequestState.WAITING:
                heapq.heappop(self._heap)
            return self._heap[0][3] if self._heap else None
        while self._fcfs and self._fcfs[0].state is not RequestState.WAITING:
            self._fcfs.popleft()
        return self._fcfs[0] if self._fcfs else None

    def _pop(self) -> None:
        if self.config.priority:
            heapq.heappop(self._heap)
        else:
            self._fcfs.popleft()
        self._waiting -= 1

    def abort(self, request: SimRequest) -> None:
        if request.state is RequestState.RUNNING:
            self.running.remove(request)
            self.kv.free(request.blocks)
            request.blocks = []
        elif request.state is RequestState.WAITING:
            self._waiting -= 1  # lazily dropped from the queue
        request.state = RequestState.ABORTED

    def waiting(self) -> Iterator[SimRequest]:
        if self.config.priority:
            yield from (e[3] for e in self._heap if e[3].state is RequestState.WAITING)
        else:
            yield from (r for r in self._fcfs if r.state is RequestState.WAITING)

    # ---- one step -------------------------------------------------------------------

    def _preempt_for(self, request: SimRequest) -> SimRequest:
        """Free a running request's blocks (the latest, or the least important under the
        priority policy) and send it back to wait for recomputation."""
        if self.config.priority:
            victim = max(self.running, key=lambda r: (r.priority, r.arrival))
        else:
            victim = self.running[-1]
        self.running.remove(victim)
        self.kv.free(victim.blocks)
        victim.blocks = []
        victim.num_computed = 0
        victim.committed = 0
        victim.preemptions += 1
        victim.state = RequestState.WAITING
        self.preemptions += 1
        self._push(victim, front=True)
        return victim

    def _schedule_running(
        self, budget: int, batch: list[tuple[SimRequest, int]]
    ) -> tuple[int, int]:
        """Decode tokens and prefill chunks of running requests; returns the remaining
        budget and how many requests were preempted."""
        preempted = 0
        lookahead = self._lookahead
        kv = self.kv
        running = self.running
        i = 0
        while i < len(running) and budget > 0:
            request = running[i]
            computed = request.num_computed
            n_new = request.prompt_len + request.num_output - computed
            if n_new > budget:
                n_new = budget
            end = computed + n_new + lookahead
            if end > len(request.blocks) * BLOCK_TOKENS:
                need = blocks_for(end) - len(request.blocks)
                scheduled = True
                while need > kv.free_blocks:
                    victim = self._preempt_for(request)
                    preempted += 1
                    if victim is request:
                        scheduled = False
                        break
                    for j, (planned, tokens) in enumerate(batch):
                        if planned is victim:
                            # Already scheduled this step (priority policy): take it back.
                            del batch[j]
                            budget += tokens
                            i -= 1
                            break
                if not scheduled:
                    continue  # `request` left the running list; index i is the next one
                got = kv.allocate(need)
                assert got is not None
                request.blocks.extend(got)
            batch.append((request, n_new))
            budget -= n_new
            i += 1
        return budget, preempted

    def _admit(self, budget: int, now: float, batch: list[tuple[SimRequest, int]]) -> int:
        """Admit waiting requests while budget, sequence slots and blocks allow."""
        config = self.config
        while budget > 0 and len(self.running) < config.max_num_seqs:
            request = self._peek()
            if request is None:
                break
            total = request.total_tokens
            if len(request.hashes) * BLOCK_TOKENS < total - BLOCK_TOKENS + 1:
                request.hashes = block_hashes(
                    [request.token(i) for i in range(total)]
                    if request.num_output
                    else request.prompt
                )
            hits = self.kv.cached_prefix(request.hashes)
            if hits * BLOCK_TOKENS >= total:
                hits -= 1  # the last token is always recomputed, to sample from it
            n_new = total - hits * BLOCK_TOKENS
            if n_new > budget and not config.chunked_prefill:
                break
            n_new = min(n_new, budget)
            hit_hashes = request.hashes[:hits]
            reclaimed = sum(1 for h in hit_hashes if self.kv.is_free_cached(h))
            need = blocks_for(hits * BLOCK_TOKENS + n_new + self._lookahead) - hits
            if need + reclaimed > self.kv.free_blocks:
                break
            self._pop()
            request.blocks = self.kv.touch_prefix(hit_hashes)
            got = self.kv.allocate(need)
            assert got is not None
            request.blocks.extend(got)
            request.num_computed = hits * BLOCK_TOKENS
            request.committed = hits
            if request.cached_tokens is None:
                request.cached_tokens = min(hits * BLOCK_TOKENS, len(request.prompt))
                request.first_scheduled = now
                self.prompt_tokens += len(request.prompt)
                self.cached_prompt_tokens += request.cached_tokens
                self.kv.queries += len(request.prompt)
                self.kv.hits += request.cached_tokens
            request.state = RequestState.RUNNING
            self.running.append(request)
            batch.append((request, n_new))
            budget -= n_new
        return budget

    def step(self, now: float) -> StepResult | None:
        """Schedule and run one engine step starting at `now`; None when idle."""
        if not self.has_work:
            return None
        config = self.config
        batch: list[tuple[SimRequest, int]] = []
        budget = config.max_num_batched_tokens
        preempted = 0
        if config.v0_prefill_first and self._waiting:
            # V0: if any waiting prompt fits, this step is prefills only.
            budget = self._admit(budget, now, batch)
        if not batch:
            budget, preempted = self._schedule_running(budget, batch)
            if not preempted and not config.v0_prefill_first:
                budget = self._admit(budget, now, batch)
        if not batch:
            return None
        n_decode = 0
        decode_context = 0
        prefills: list[tuple[int, int]] = []
        for request, n_new in batch:
            if n_new == 1 and request.prompt_len + request.num_output - request.num_computed == 1:
                n_decode += 1
                decode_context += request.num_computed + 1
            else:
                prefills.append((n_new, request.num_computed))
        cost = self.perf.step(n_decode, decode_context, prefills)
        end = now + cost.total
        self.steps += 1
        self.busy_time += cost.gpu_busy
        produced: list[tuple[SimRequest, int]] = []
        finished: list[SimRequest] = []
        per_step = self.perf.tokens_per_decode_step
        record = config.record_token_times
        for request, n_new in batch:
            computed = request.num_computed + n_new
            total = request.prompt_len + request.num_output
            if computed < total:
                request.num_computed = computed
                if computed // BLOCK_TOKENS > request.committed:
                    self._commit(request)
                continue  # prefill chunk: nothing sampled yet
            gained = 1
            if per_step > 1.0 and request.num_output > 0:
                request.spec_credit += per_step
                gained = int(request.spec_credit)
                request.spec_credit -= gained
                gained = max(1, min(gained, request.target - request.num_output))
            request.num_output += gained
            # The sampled tokens' KV is written by the next step (the last one of a
            # speculative run is the bonus token, also not yet in the cache).
            request.num_computed = total + gained - 1
            if request.num_computed // BLOCK_TOKENS > request.committed:
                self._commit(request)
            if request.first_token is None:
                request.first_token = end
            request.last_token = end
            if record:
                request.token_times.append(end)
            produced.append((request, gained))
            if request.num_output >= request.target:
                request.state = RequestState.FINISHED
                self.running.remove(request)
                self.kv.free(request.blocks)
                request.blocks = []
                finished.append(request)
        prefill_tokens = sum(n for n, _ in prefills)
        return StepResult(
            now, end, cost, n_decode, prefill_tokens, tuple(produced), tuple(finished), preempted
        )

    def _commit(self, request: SimRequest) -> None:
        """Enter the request's newly full blocks into the prefix cache."""
        full = request.num_computed // BLOCK_TOKENS
        while request.committed < full:
            index = request.committed
            if index >= len(request.hashes):
                previous = request.hashes[-1] if request.hashes else 0
                start = index * BLOCK_TOKENS
                block = [request.token(i) for i in range(start, start + BLOCK_TOKENS)]
                request.hashes.append(extend_hash(previous, block))
            self.kv.commit(request.blocks[index], request.hashes[index])
            request.committed += 1
