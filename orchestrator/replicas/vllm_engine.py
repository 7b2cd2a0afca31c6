"""`VllmEngine`: the Engine protocol over vLLM's V1 `AsyncLLM`.

The same code runs the CUDA build on GPUs and vLLM's CPU build (tests, machines without
a GPU). vLLM is imported inside `start()`, so importing this module stays cheap.

Load figures for routing (queue depth, running batch, KV usage, prefix-cache hits) come
from the engine core's `SchedulerStats`, which vLLM hands to every stat logger after each
engine step: `start()` registers a small logger that keeps the latest ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.config import VllmEngineConfig
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

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.metrics.loggers import StatLoggerBase


def engine_args(config: VllmEngineConfig, model: str, *, on_cpu: bool = False) -> dict[str, Any]:
    """The AsyncEngineArgs keyword arguments for a config (pure, so it is testable
    without vLLM). `on_cpu`: the engine is vLLM's CPU build."""
    args: dict[str, Any] = {
        "model": model,
        "dtype": config.dtype,
        "tensor_parallel_size": config.tensor_parallel_size,
        "max_model_len": config.max_model_len,
        "max_num_seqs": config.max_num_seqs,
        "enable_prefix_caching": config.enable_prefix_caching,
        "kv_cache_dtype": config.kv_cache_dtype,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "enforce_eager": config.enforce_eager,
        "scheduling_policy": config.scheduling_policy.value,
        "seed": config.seed,
        # Per-request stats carry the engine-core timestamps behind queue_time.
        "disable_log_stats": False,
    }
    if config.max_num_batched_tokens is not None:
        args["max_num_batched_tokens"] = config.max_num_batched_tokens
    elif on_cpu:
        # vLLM 0.32's CPU build kills its engine core ("CPU Generator does not use
        # offset") when a seeded request's prefill is split across steps, so on CPU
        # prefills are never chunked: each step schedules whole prompts, up to one
        # max_model_len of tokens.
        args["enable_chunked_prefill"] = False
        args["max_num_batched_tokens"] = config.max_model_len
    if config.speculative_config is not None:
        args["speculative_config"] = dict(config.speculative_config)
    if config.quantization is not None:
        args["quantization"] = config.quantization
    if config.tensor_parallel_size > 1:
        # Workers of a tensor-parallel replica are Ray actors in the replica's placement
        # group (vLLM picks up the current placement group).
        args["distributed_executor_backend"] = "ray"
    args.update(config.extra_args)
    return args


def _finish_reason(raw: str | None) -> FinishReason:
    if raw == "length":
        return FinishReason.LENGTH
    if raw == "abort":
        return FinishReason.ABORT
    return FinishReason.STOP


@dataclass(slots=True)
class _SchedulerLoad:
    """What the engine core last reported, plus prefix-cache totals.

    vLLM's `SchedulerStats` are built after each engine step
    (vllm/v1/core/sched/scheduler.py `Scheduler.make_stats`): the request counts and KV
    usage are gauges (the latest value wins), while `prefix_cache_stats` holds only the
    lookups since the previous stats (`KVCacheManager.make_prefix_cache_stats` resets
    them), so queries and hits are summed here. Like the prefix-cache counters of vLLM's
    own Prometheus logger, they count prompt tokens of requests at first admission; a
    preempted request's recomputation is reported apart and not counted. vLLM reports no
    count of evicted blocks (only sampled eviction events, off by default).
    """

    # engine index -> (running, waiting, kv usage); one entry unless data parallel
    gauges: dict[int, tuple[int, int, float]] = field(default_factory=dict)
    prefix_queries: int = 0
    prefix_hits: int = 0

    def observe(self, stats: Any, engine_idx: int) -> None:
        waiting = stats.num_waiting_reqs + getattr(stats, "num_skipped_waiting_reqs", 0)
        self.gauges[engine_idx] = (stats.num_running_reqs, waiting, stats.kv_cache_usage)
        prefix = stats.prefix_cache_stats
        if prefix is not None:
            self.prefix_queries += prefix.queries
            self.prefix_hits += prefix.hits

    @property
    def running(self) -> int:
        return sum(g[0] for g in self.gauges.values())

    @property
    def waiting(self) -> int:
        return sum(g[1] for g in self.gauges.values())

    @property
    def kv_usage(self) -> float:
        if not self.gauges:
            return 0.0
        return sum(g[2] for g in self.gauges.values()) / len(self.gauges)


def _load_recorder(load: _SchedulerLoad) -> type[StatLoggerBase]:
    """A vLLM stat logger class feeding `load`. vLLM builds one per engine core with
    `factory(vllm_config, engine_index)` (vllm/v1/metrics/loggers.py,
    `PerEngineStatLoggerAdapter`) and calls its `record` from `AsyncLLM`'s output
    handler, on the engine's event loop, after each step's outputs went to their
    requests."""
    from vllm.config import VllmConfig
    from vllm.v1.metrics.loggers import StatLoggerBase
    from vllm.v1.metrics.stats import IterationStats, MultiModalCacheStats, SchedulerStats

    class LoadRecorder(StatLoggerBase):
        def __init__(self, vllm_config: VllmConfig, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(
            self,
            scheduler_stats: SchedulerStats | None,
            iteration_stats: IterationStats | None,
            mm_cache_stats: MultiModalCacheStats | None = None,
            engine_idx: int = 0,
        ) -> None:
            if scheduler_stats is not None:
                load.observe(scheduler_stats, engine_idx)

        def log_engine_initialized(self) -> None:
            pass

    return LoadRecorder


class VllmEngine:
    """One vLLM engine. Call `start()` before `generate()`, `shutdown()` at the end."""

    def __init__(self, config: VllmEngineConfig, model: str) -> None:
        self._config = config
        self._model = model
        self._llm: AsyncLLM | None = None
        self._calls_served = 0
        self._output_tokens_served = 0
        self._load = _SchedulerLoad()
        self._kv_block_tokens = 16
        self._kv_capacity_blocks = 0
        self._live: set[str] = set()  # ids of the calls whose generate runs
        # Live ids aborted by abort_many: vLLM ignores an abort that comes before the
        # request is added (generate awaits the adding), so generate aborts again once
        # it sees an output, and a request never keeps generating for a gone caller.
        self._aborting: set[str] = set()

    @property
    def name(self) -> str:
        return "vllm"

    @property
    def max_model_len(self) -> int:
        return self._config.max_model_len

    async def start(self) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        args = engine_args(self._config, self._model, on_cpu=current_platform.is_cpu())
        llm = AsyncLLM.from_engine_args(
            AsyncEngineArgs(**args), stat_loggers=[_load_recorder(self._load)]
        )
        # The engine core is up: the frontend's config now holds the KV cache's size
        # (vllm/v1/engine/core_client.py copies num_gpu_blocks from the handshake).
        cache = llm.vllm_config.cache_config
        self._kv_block_tokens = int(cache.block_size)
        self._kv_capacity_blocks = int(cache.num_gpu_blocks or 0)
        self._llm = llm

    def _require(self) -> AsyncLLM:
        if self._llm is None:
            raise EngineError(ErrorCode.UNAVAILABLE, "engine not started")
        return self._llm

    async def generate(
        self, call: CallRequest, *, stream: bool = True
    ) -> AsyncIterator[CallDelta | CallResult]:
        from vllm import SamplingParams
        from vllm.exceptions import VLLMValidationError
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.exceptions import EngineDeadError

        llm = self._require()
        if len(call.prompt_token_ids) + call.sampling.max_tokens > self.max_model_len:
            raise EngineError(
                ErrorCode.INVALID_ARGUMENT,
                f"prompt of {len(call.prompt_token_ids)} tokens plus max_tokens "
                f"{call.sampling.max_tokens} exceeds the model's context of "
                f"{self.max_model_len} tokens",
            )
        params = SamplingParams(
            max_tokens=call.sampling.max_tokens,
            temperature=call.sampling.temperature,
            top_p=call.sampling.top_p,
            ignore_eos=call.sampling.ignore_eos,
            seed=call.sampling.seed,
            output_kind=RequestOutputKind.DELTA,
        )
        # Replica-side clock: these timings exclude Ray and gRPC transport.
        arrival = time.monotonic()
        first_token_at: float | None = None
        last_token_at = arrival
        itl: list[float] = []
        token_ids: list[int] = []
        text_parts: list[str] = []
        cached = 0
        prompt_tokens = len(call.prompt_token_ids)
        finish: str | None = None
        queue_time = 0.0
        self._live.add(call.call_id)
        outputs = llm.generate(
            prompt=TokensPrompt(prompt_token_ids=list(call.prompt_token_ids)),
            sampling_params=params,
            request_id=call.call_id,
            priority=call.priority,
        )
        deadline = None if call.deadline_s is None else time.monotonic() + call.deadline_s
        try:
            while True:
                # The deadline bounds each wait for vLLM, never a `yield`: there the
                # consumer runs, and a timeout would cancel it instead of this call. Checked
                # first, as a wait for an output already there never times out.
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError
                async with asyncio.timeout(left):
                    out = await anext(outputs, None)
                if out is None:
                    break
                if call.call_id in self._aborting and not out.finished:
                    self._aborting.discard(call.call_id)
                    await llm.abort(call.call_id)  # the request is in vLLM by now
                completion = out.outputs[0]
                new_ids = tuple(completion.token_ids)
                if new_ids:
                    now = time.monotonic()
                    if first_token_at is None:
                        first_token_at = now
                    else:
                        itl.append(now - last_token_at)
                    last_token_at = now
                    token_ids.extend(new_ids)
                    text_parts.append(completion.text)
                    if stream:
                        yield CallDelta(token_ids=new_ids, text=completion.text)
                if out.finished:
                    finish = completion.finish_reason
                    cached = out.num_cached_tokens or 0
                    if out.prompt_token_ids is not None:
                        prompt_tokens = len(out.prompt_token_ids)
                    metrics = out.metrics
                    if metrics is not None and getattr(metrics, "scheduled_ts", 0.0) > 0.0:
                        queue_time = max(0.0, metrics.scheduled_ts - metrics.queued_ts)
        except TimeoutError:
            await llm.abort(call.call_id)
            raise EngineError(
                ErrorCode.DEADLINE_EXCEEDED,
                f"call {call.call_id} ran out of its task's deadline ({call.deadline_s:.3f} s)",
            ) from None
        except VLLMValidationError as exc:
            raise EngineError(ErrorCode.INVALID_ARGUMENT, str(exc)) from exc
        except EngineDeadError as exc:
            raise EngineError(
                ErrorCode.UNAVAILABLE, f"the replica's vLLM engine died: {exc}"
            ) from exc
        except asyncio.CancelledError:
            # vLLM aborts the request when its generator is cancelled; abort explicitly
            # too, so no path leaves a request running in the engine.
            await llm.abort(call.call_id)
            raise
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(ErrorCode.INTERNAL, f"vLLM failed: {exc!r}") from exc
        finally:
            self._live.discard(call.call_id)
            self._aborting.discard(call.call_id)

        ttft = (first_token_at - arrival) if first_token_at is not None else 0.0
        e2e = last_token_at - arrival
        n_out = len(token_ids)
        tpot = (e2e - ttft) / (n_out - 1) if n_out > 1 else None
        reason = _finish_reason(finish)
        if reason is not FinishReason.ABORT:
            # An aborted call's output went nowhere: it is not "served".
            self._calls_served += 1
            self._output_tokens_served += n_out
        yield CallResult(
            call_id=call.call_id,
            token_ids=tuple(token_ids),
            text="".join(text_parts),
            finish_reason=reason,
            usage=CallUsage(
                prompt_tokens=prompt_tokens, cached_prompt_tokens=cached, output_tokens=n_out
            ),
            timings=CallTimings(
                queue_time=queue_time, ttft=ttft, tpot=tpot, itl=tuple(itl), e2e=e2e
            ),
        )

    async def abort(self, call_id: str) -> None:
        await self.abort_many([call_id])

    async def abort_many(self, call_ids: Sequence[str]) -> None:
        """One vLLM abort for the batch (AsyncLLM.abort takes a list of ids)."""
        live = [c for c in call_ids if c in self._live]
        if self._llm is not None and live:
            self._aborting.update(live)
            await self._llm.abort(live)

    def stats(self) -> EngineStats:
        """Live load; raises EngineError when the engine has died (the pool's health
        check then marks the replica unhealthy, so routing stops sending it calls)."""
        unfinished = 0
        if self._llm is not None:
            if self._llm.errored:
                raise EngineError(ErrorCode.UNAVAILABLE, "the replica's vLLM engine has died")
            unfinished = self._llm.get_num_unfinished_requests()
        load = self._load
        return EngineStats(
            unfinished_requests=unfinished,
            calls_served=self._calls_served,
            output_tokens_served=self._output_tokens_served,
            waiting_requests=load.waiting,
            running_requests=load.running,
            kv_usage=load.kv_usage,
            prefix_queries=load.prefix_queries,
            prefix_hits=load.prefix_hits,
            kv_block_tokens=self._kv_block_tokens,
            kv_capacity_blocks=self._kv_capacity_blocks,
            # vLLM's stats carry no eviction count (see _SchedulerLoad): 0, "unknown".
            evicted_blocks=0,
        )

    async def shutdown(self) -> None:
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None
