"""`SimEngine`: the Engine protocol over one simulated replica (orchestrator/sim).

One background task per engine drives the vLLM-V1-style `Scheduler`: it runs a step,
waits until the step's simulated end (in wall time, scaled by `time_scale`), then hands
each produced token to its call. Usage and timings come from the simulated clock, so a
call's figures are the performance model's, while the orchestrator, the clients and
Locust see them happen in (scaled) real time.

The simulated clock: steps run back to back while there is work (step n+1 starts at
step n's end); when the engine is idle the clock follows wall time, so an arrival is
stamped when it really happens. If the host falls behind the simulated GPU by more than
`MAX_LAG_S` of wall time (a loaded machine, a long event-loop stall), the clock jumps
forward to wall time: the simulated GPU waits for the host, as a real one waits for its
CPU-side scheduler. With `time_scale` 0 nothing sleeps and the clock only moves by
steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from orchestrator.config import SimEngineConfig
from orchestrator.domain import (
    CallDelta,
    CallRequest,
    CallResult,
    CallTimings,
    CallUsage,
    EngineStats,
    ErrorCode,
    FinishReason,
)
from orchestrator.replicas.engine import EngineError
from orchestrator.sim.build import build_replica
from orchestrator.sim.kv import BLOCK_TOKENS
from orchestrator.sim.scheduler import RequestState, Scheduler, SimRequest, StepResult
from orchestrator.sim.tokens import SimTokenizer, synthetic_output

log = logging.getLogger(__name__)

# Wall seconds the host may fall behind the simulated clock before the clock gives up
# the difference (see the module docstring). Sleep jitter of a few ms is caught up by
# the next steps' shorter sleeps instead.
MAX_LAG_S = 0.05


class _End(enum.Enum):
    FINISHED = "finished"
    ABORTED = "aborted"


@dataclass(slots=True, eq=False)
class _Call:
    """A call in flight: its scheduler request and what has reached the caller."""

    request: SimRequest
    stopped: bool  # the simulated model ends this call at end-of-sequence
    stream: bool  # the caller wants deltas (else only the end is queued)
    # Output token counts as steps deliver them (streaming only), then one end marker.
    queue: asyncio.Queue[int | _End | EngineError] = field(default_factory=asyncio.Queue)
    delivered: int = 0  # output tokens handed to the caller so far
    times: list[float] = field(default_factory=list)  # simulated end of each delivering step


class SimEngine:
    """One simulated replica. Call `start()` before `generate()`, `shutdown()` at the end."""

    def __init__(self, config: SimEngineConfig) -> None:
        self._config = config
        self._scheduler: Scheduler | None = None
        self._tokenizer: SimTokenizer | None = None
        self._calls: dict[str, _Call] = {}
        self._stepper: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._failure: BaseException | None = None
        self._t0 = 0.0  # monotonic time of simulated time 0
        self._clock = 0.0  # simulated seconds: the end of the latest step, or now when idle
        self._stepping = False  # a step's simulated time is passing (the stepper sleeps)
        self._calls_served = 0
        self._output_tokens_served = 0

    @property
    def name(self) -> str:
        return "sim"

    @property
    def max_model_len(self) -> int:
        return self._config.max_model_len

    @property
    def scheduler(self) -> Scheduler:
        """The simulated replica (tests and reports read its counters)."""
        return self._require()

    async def start(self) -> None:
        """Builds the replica; raises CatalogError or SimConfigError for a config the
        simulated GPU cannot run."""
        scheduler = build_replica(self._config)
        self._tokenizer = SimTokenizer(scheduler.perf.hw.model.vocab)
        self._scheduler = scheduler
        self._t0 = time.monotonic()
        self._stepper = asyncio.create_task(self._run(), name="sim-engine-stepper")

    def _require(self) -> Scheduler:
        if self._failure is not None:
            raise EngineError(
                ErrorCode.UNAVAILABLE, f"the replica's simulated engine died: {self._failure!r}"
            )
        if self._scheduler is None:
            raise EngineError(ErrorCode.UNAVAILABLE, "engine not started")
        return self._scheduler

    # ---- the simulated clock ------------------------------------------------------

    def _wall(self) -> float:
        """Simulated seconds that wall time says have passed (time_scale > 0)."""
        return (time.monotonic() - self._t0) / self._config.time_scale

    def _arrival_time(self) -> float:
        if self._config.time_scale == 0:
            return self._clock
        wall = self._wall()
        if self._stepping:
            # Mid-step: now, but never after the step's end, when the next step starts.
            return min(wall, self._clock)
        self._clock = max(self._clock, wall)
        return self._clock

    def _step_start(self) -> float:
        scale = self._config.time_scale
        if scale > 0:
            wall = self._wall()
            if (wall - self._clock) * scale > MAX_LAG_S:
                self._clock = wall
        return self._clock

    async def _until(self, sim_time: float) -> None:
        scale = self._config.time_scale
        delay = self._t0 + sim_time * scale - time.monotonic() if scale > 0 else 0.0
        # Always yield, so arrivals and aborts get in between steps even at time_scale 0.
        await asyncio.sleep(max(0.0, delay))

    # ---- the stepper --------------------------------------------------------------

    async def _run(self) -> None:
        scheduler = self._require()
        try:
            while True:
                result = scheduler.step(self._step_start()) if scheduler.has_work else None
                if result is None:
                    # Idle, or nothing schedulable until a call arrives or leaves.
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                self._clock = result.end
                self._stepping = True
                try:
                    await self._until(result.end)
                finally:
                    self._stepping = False
                self._deliver(result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("the simulated engine failed")
            self._failure = exc
            error = EngineError(ErrorCode.INTERNAL, f"the simulated engine failed: {exc!r}")
            for call in self._calls.values():
                call.queue.put_nowait(error)

    def _deliver(self, result: StepResult) -> None:
        for request, _ in result.produced:
            call = self._calls.get(request.request_id)
            if call is None or call.request is not request:
                continue
            if request.state is RequestState.ABORTED:
                continue
            call.delivered = request.num_output
            call.times.append(result.end)
            if call.stream:
                call.queue.put_nowait(call.delivered)
        for request in result.finished:
            call = self._calls.get(request.request_id)
            if call is not None and call.request is request:
                call.queue.put_nowait(_End.FINISHED)

    # ---- calls ----------------------------------------------------------------------

    def _validate(self, call: CallRequest, vocab_size: int) -> None:
        prompt = call.prompt_token_ids
        if not prompt:
            raise EngineError(ErrorCode.INVALID_ARGUMENT, "the prompt is empty")
        if len(prompt) + call.sampling.max_tokens > self.max_model_len:
            raise EngineError(
                ErrorCode.INVALID_ARGUMENT,
                f"prompt of {len(prompt)} tokens plus max_tokens "
                f"{call.sampling.max_tokens} exceeds the model's context of "
                f"{self.max_model_len} tokens",
            )
        if min(prompt) < 0 or max(prompt) >= vocab_size:
            bad = next(t for t in prompt if not 0 <= t < vocab_size)
            raise EngineError(
                ErrorCode.INVALID_ARGUMENT,
                f"token id {bad} is outside the vocabulary (size {vocab_size})",
            )
        if call.call_id in self._calls:
            raise EngineError(
                ErrorCode.INVALID_ARGUMENT, f"call {call.call_id} is already running here"
            )

    async def generate(
        self, call: CallRequest, *, stream: bool = True
    ) -> AsyncIterator[CallDelta | CallResult]:
        scheduler = self._require()
        tokenizer = self._tokenizer
        assert tokenizer is not None  # set with the scheduler
        self._validate(call, tokenizer.vocab_size)
        sampling = call.sampling
        # A seeded call writes the same output wherever it runs; an unseeded one is
        # keyed by its id.
        key: str | int = sampling.seed if sampling.seed is not None else call.call_id
        output = synthetic_output(
            self._config.seed,
            key,
            sampling.max_tokens,
            tokenizer.vocab_size,
            ignore_eos=sampling.ignore_eos,
        )
        request = SimRequest(
            request_id=call.call_id,
            prompt=call.prompt_token_ids,
            output_ids=output.token_ids,
            arrival=self._arrival_time(),
            priority=call.priority,
        )
        entry = _Call(request, output.stopped, stream)
        try:
            scheduler.add(request)
        except ValueError as exc:
            raise EngineError(ErrorCode.INVALID_ARGUMENT, str(exc)) from exc
        self._calls[call.call_id] = entry
        self._wake.set()
        sent = 0
        end: _End | None = None
        deadline = None if call.deadline_s is None else time.monotonic() + call.deadline_s
        try:
            while end is None:
                # The deadline bounds each wait for the engine, never a `yield`: there the
                # consumer runs, and a timeout would cancel it instead of this call. Checked
                # first, as a wait for an item already queued never times out.
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError
                async with asyncio.timeout(left):
                    item = await entry.queue.get()
                if isinstance(item, EngineError):
                    raise item
                if isinstance(item, _End):
                    end = item
                    continue
                ids = output.token_ids[sent:item]
                sent = item
                yield CallDelta(token_ids=ids, text=tokenizer.decode(ids))
        except TimeoutError:
            raise EngineError(
                ErrorCode.DEADLINE_EXCEEDED,
                f"call {call.call_id} ran out of its task's deadline ({call.deadline_s:.3f} s)",
            ) from None
        finally:
            # Deadline, cancellation, a consumer that stopped early: the request must
            # not keep running in the scheduler.
            self._drop(entry)
        n_out = entry.delivered
        if stream and n_out > sent:  # tokens of the last step(s) not yet sent
            ids = output.token_ids[sent:n_out]
            yield CallDelta(token_ids=ids, text=tokenizer.decode(ids))
        if end is _End.ABORTED:
            reason = FinishReason.ABORT
        else:
            reason = FinishReason.STOP if entry.stopped else FinishReason.LENGTH
            self._calls_served += 1
            self._output_tokens_served += n_out
        token_ids = output.token_ids[:n_out]
        # An aborted call's caller is gone: its tokens are kept, but rendering their text
        # (most of the cost of ending a call here; vLLM detokenizes as it goes) is not
        # done, so a storm of aborts does not stall the replica.
        text = "" if end is _End.ABORTED else tokenizer.decode(token_ids)
        yield CallResult(
            call_id=call.call_id,
            token_ids=token_ids,
            text=text,
            finish_reason=reason,
            usage=CallUsage(
                prompt_tokens=len(request.prompt),
                cached_prompt_tokens=request.cached_tokens or 0,
                output_tokens=n_out,
            ),
            timings=_timings(request.arrival, request.first_scheduled, entry.times, n_out),
        )

    def _drop(self, entry: _Call) -> None:
        request = entry.request
        if self._calls.get(request.request_id) is entry:
            del self._calls[request.request_id]
        if request.state in (RequestState.WAITING, RequestState.RUNNING):
            if self._scheduler is not None:
                self._scheduler.abort(request)
            self._wake.set()

    async def abort(self, call_id: str) -> None:
        """Abort a call in flight: its caller gets a result with finish reason ABORT."""
        self._abort(call_id)

    async def abort_many(self, call_ids: Sequence[str]) -> None:
        for call_id in call_ids:
            self._abort(call_id)

    def _abort(self, call_id: str) -> None:
        entry = self._calls.get(call_id)
        if entry is None:
            return
        if entry.request.state in (RequestState.WAITING, RequestState.RUNNING):
            assert self._scheduler is not None
            self._scheduler.abort(entry.request)
            self._wake.set()
        entry.queue.put_nowait(_End.ABORTED)

    def stats(self) -> EngineStats:
        """Live load; raises EngineError when the stepper has died (the pool's health
        check then marks the replica unhealthy)."""
        if self._scheduler is None and self._failure is None:
            return EngineStats(
                unfinished_requests=0,
                calls_served=self._calls_served,
                output_tokens_served=self._output_tokens_served,
                kv_block_tokens=BLOCK_TOKENS,
            )
        scheduler = self._require()
        kv = scheduler.kv
        waiting = scheduler.num_waiting
        running = len(scheduler.running)
        return EngineStats(
            unfinished_requests=waiting + running,
            calls_served=self._calls_served,
            output_tokens_served=self._output_tokens_served,
            waiting_requests=waiting,
            running_requests=running,
            kv_usage=kv.usage,
            # The scheduler adds prompt TOKENS to these at a request's first admission
            # (as vLLM does), whatever kv.py's comments say.
            prefix_queries=kv.queries,
            prefix_hits=kv.hits,
            kv_block_tokens=BLOCK_TOKENS,
            kv_capacity_blocks=kv.num_blocks,
            evicted_blocks=kv.evictions,
        )

    async def shutdown(self) -> None:
        if self._stepper is not None:
            self._stepper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stepper
            self._stepper = None
        for call_id in list(self._calls):
            await self.abort(call_id)
        self._scheduler = None


def _timings(
    arrival: float, first_scheduled: float | None, times: list[float], n_out: int
) -> CallTimings:
    """Engine-side timings on the simulated clock (docs/metrics.md, per call)."""
    queue_time = max(0.0, first_scheduled - arrival) if first_scheduled is not None else 0.0
    ttft = times[0] - arrival if times else 0.0
    e2e = times[-1] - arrival if times else 0.0
    itl = tuple(b - a for a, b in itertools.pairwise(times))
    tpot = (e2e - ttft) / (n_out - 1) if n_out > 1 else None
    return CallTimings(queue_time=queue_time, ttft=ttft, tpot=tpot, itl=itl, e2e=e2e)
