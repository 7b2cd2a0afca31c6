"""The capacity planner: for each GPU type and tensor-parallel degree, the highest task
rate one replica sustains within a task-level SLO, and what that costs.

Each candidate rate is a fast-forward simulation of a few replicas under Poisson
arrivals of the workload; a doubling search brackets the highest rate that meets the SLO
and bisection narrows it. The fleet is sized to run each replica at `headroom` of that
rate; power and price turn the result into tokens per joule, the fleet's dollars per hour,
per thousand tasks and per million output tokens (docs/simulation.md, "Power and cost").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from orchestrator.config import SimEngineConfig
from orchestrator.sim.build import build_replica
from orchestrator.sim.catalog import Catalog, CatalogError, load_catalog
from orchestrator.sim.cluster import SimulationResult, simulate
from orchestrator.sim.config import SimulationConfig
from orchestrator.sim.perf import PerfModel, SimConfigError
from orchestrator.workload.arrivals import ArrivalConfig
from orchestrator.workload.mix import WorkloadConfig
from orchestrator.workload.slo import SloConfig

TP_CHOICES = (1, 2, 4, 8)
# The README's agentic SLO: the user sees the answer start within 5 s (planner, workers
# and the synthesizer's first token) for 90% of tasks, and 99% finish within a minute.
DEFAULT_SLO = "task_ttft_p90=5s,task_latency_p99=60s"
# Replicas run at this fraction of the highest rate meeting the SLO: arrivals burst and
# the search's answer is a threshold, not a safe operating point.
DEFAULT_HEADROOM = 0.8


@dataclass(slots=True, frozen=True)
class PlanQuery:
    model: str
    gpus: tuple[str, ...]
    workload: WorkloadConfig
    slo: SloConfig
    target_rate: float = 100.0  # tasks/s the fleet must sustain
    headroom: float = DEFAULT_HEADROOM  # utilisation target: fraction of the max rate, (0, 1]
    tps: tuple[int, ...] = ()  # tensor-parallel degrees to try; () = every one that fits
    weights: str = "bf16"
    kv_cache_dtype: str = "bf16"
    max_model_len: int = 16384
    replicas: int = 2  # replicas simulated per trial
    duration_s: float = 120.0  # simulated seconds of arrivals per trial
    warmup_s: float = 20.0
    search_steps: int = 6  # bisection steps after bracketing
    prices: Mapping[str, float] | None = None  # $/GPU-hour overrides
    catalogs: tuple[str, ...] = ()
    seed: int = 0


@dataclass(slots=True, frozen=True)
class PlanRow:
    gpu: str
    tp: int
    fits: bool
    reason: str  # why it does not fit, or ""
    rate_per_replica: float  # highest tasks/s per replica meeting the SLO (0: none)
    tasks_per_s_per_gpu: float
    output_tps_per_gpu: float
    gpus_needed: int  # for target_rate at headroom of the max rate (0: SLO cannot be met)
    tokens_per_joule: float  # output tokens per joule of GPU board energy, at the max rate
    usd_per_gpu_hour: float | None
    # The sized fleet's cost: GPUs x $/GPU-hour, spread over target_rate tasks/s and their
    # output tokens. None without a price or a rate.
    usd_per_million_tokens: float | None
    task_ttft_p90: float  # seconds, at the max rate
    task_latency_p99: float
    trials: int
    fleet_usd_per_hour: float | None = None
    usd_per_1k_tasks: float | None = None


@dataclass(slots=True, frozen=True)
class TrialDone:
    """Progress: one simulated trial of the rate search has finished."""

    gpu: str
    tp: int
    config: int  # index of this configuration among those that fit (0-based)
    configs: int  # configurations to search in all
    trial: int  # trials so far for this configuration (1-based)
    rate: float  # tasks/s per replica tried
    met: bool  # the trial met the SLO


def _engine(query: PlanQuery, gpu: str, tp: int) -> SimEngineConfig:
    return SimEngineConfig(
        gpu=gpu,
        model=query.model,
        tensor_parallel_size=tp,
        weights=query.weights,
        kv_cache_dtype=query.kv_cache_dtype,
        max_model_len=query.max_model_len,
        catalogs=query.catalogs,
    )


def _trial(query: PlanQuery, engine: SimEngineConfig, rate: float) -> SimulationResult:
    config = SimulationConfig(
        replicas=query.replicas,
        engine=engine,
        workload=query.workload,
        arrival=ArrivalConfig(rate=rate * query.replicas),
        duration_s=query.duration_s,
        warmup_s=query.warmup_s,
        sample_interval_s=query.duration_s,
        slo=query.slo,
        seed=query.seed,
    )
    return simulate(config)


def _meets(result: SimulationResult) -> bool:
    # Falling behind shows as a backlog still draining long after arrivals stop.
    return bool(result.slo_met) and result.failed == 0


def highest_rate(meets: Callable[[float], bool], start: float, steps: int) -> tuple[float, int]:
    """The highest rate for which `meets` holds, searching up from `start` by doubling
    (or down by halving) and then bisecting `steps` times; returns (rate, trials)."""
    trials = 0
    low, high = 0.0, start
    while True:
        trials += 1
        if meets(high):
            low = high
            high *= 2.0
        else:
            break
        if high > start * 2**12:
            return low, trials
    if low == 0.0:
        # Even `start` fails: halve until something passes (or give up).
        probe = start / 2.0
        for _ in range(10):
            trials += 1
            if meets(probe):
                low, high = probe, probe * 2.0
                break
            high = probe
            probe /= 2.0
        else:
            return 0.0, trials
    for _ in range(steps):
        mid = (low + high) / 2.0
        trials += 1
        if meets(mid):
            low = mid
        else:
            high = mid
    return low, trials


def plan(
    query: PlanQuery,
    progress: Callable[[TrialDone], None] | None = None,
    on_row: Callable[[PlanRow], None] | None = None,
) -> list[PlanRow]:
    """One row per GPU and tensor-parallel degree, in that order; `on_row` sees each row
    as soon as it is known (a caller interrupted midway keeps those)."""
    catalog: Catalog = load_catalog(query.catalogs)
    catalog.model(query.model)  # unknown names fail before any simulation
    for gpu in query.gpus:
        catalog.gpu(gpu)
    if query.slo == SloConfig():
        raise SimConfigError("give at least one SLO bound, e.g. task_latency_p99=60s")
    if not 0 < query.headroom <= 1:
        raise SimConfigError(f"headroom {query.headroom:g}: give a fraction in (0, 1]")
    # Which configurations fit is known before any simulation, so progress has a total.
    candidates: list[tuple[str, int, SimEngineConfig, PerfModel | str]] = []
    for gpu in query.gpus:
        for tp in query.tps or TP_CHOICES:
            engine = _engine(query, gpu, tp)
            try:
                candidates.append(
                    (gpu, tp, engine, PerfModel(build_replica(engine, catalog).perf.hw))
                )
            except SimConfigError as exc:
                if query.tps:
                    candidates.append((gpu, tp, engine, str(exc)))
    configs = sum(1 for *_, perf in candidates if isinstance(perf, PerfModel))
    rows: list[PlanRow] = []
    searched = 0
    for gpu, tp, engine, perf in candidates:
        if isinstance(perf, str):
            row = _unfit(gpu, tp, perf)
        else:
            cache: dict[float, SimulationResult] = {}

            def meets(
                rate: float,
                gpu: str = gpu,
                tp: int = tp,
                engine: SimEngineConfig = engine,
                cache: dict[float, SimulationResult] = cache,
                config: int = searched,
            ) -> bool:
                result = _trial(query, engine, rate)
                cache[rate] = result
                met = _meets(result)
                if progress:
                    progress(TrialDone(gpu, tp, config, configs, len(cache), rate, met))
                return met

            rate, trials = highest_rate(meets, start=1.0, steps=query.search_steps)
            row = _row(query, catalog, perf, gpu, tp, rate, cache.get(rate), trials)
            searched += 1
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def recommend(rows: Sequence[PlanRow]) -> PlanRow | None:
    """The row meeting the SLO at the lowest cost per task (fewest GPUs when no row has a
    price; ties: fewer GPUs); None when no row meets it."""
    viable = [r for r in rows if r.fits and r.gpus_needed > 0]
    if not viable:
        return None
    priced = [r for r in viable if r.usd_per_1k_tasks is not None]
    if priced:
        return min(priced, key=lambda r: (r.usd_per_1k_tasks or 0.0, r.gpus_needed))
    return min(viable, key=lambda r: r.gpus_needed)


def _unfit(gpu: str, tp: int, reason: str) -> PlanRow:
    return PlanRow(gpu, tp, False, reason, 0.0, 0.0, 0.0, 0, 0.0, None, None, 0.0, 0.0, 0)


def _row(
    query: PlanQuery,
    catalog: Catalog,
    perf: PerfModel,
    gpu: str,
    tp: int,
    rate: float,
    result: SimulationResult | None,
    trials: int,
) -> PlanRow:
    price = (query.prices or {}).get(gpu, catalog.price(gpu))
    if result is None or rate <= 0 or result.summary.output_tps <= 0:
        return PlanRow(gpu, tp, True, "", 0.0, 0.0, 0.0, 0, 0.0, price, None, 0.0, 0.0, trials)
    summary = result.summary
    output_tps_replica = summary.output_tps / query.replicas
    watts = perf.power_w(result.gpu_utilization)
    gpus = math.ceil(query.target_rate / (rate * query.headroom)) * tp
    fleet = gpus * price if price else None
    # Output tokens per task at the max rate: the fleet serves target_rate tasks/s of them.
    fleet_output_tps = query.target_rate * output_tps_replica / rate
    return PlanRow(
        gpu=gpu,
        tp=tp,
        fits=True,
        reason="",
        rate_per_replica=rate,
        tasks_per_s_per_gpu=rate / tp,
        output_tps_per_gpu=output_tps_replica / tp,
        gpus_needed=gpus,
        tokens_per_joule=output_tps_replica / watts,
        usd_per_gpu_hour=price,
        usd_per_million_tokens=1e6 * fleet / (3600.0 * fleet_output_tps) if fleet else None,
        task_ttft_p90=summary.task_ttft.p90,
        task_latency_p99=summary.task_latency.p99,
        trials=trials,
        fleet_usd_per_hour=fleet,
        usd_per_1k_tasks=1e3 * fleet / (3600.0 * query.target_rate) if fleet else None,
    )


def parse_mix(text: str) -> dict[str, float]:
    """'plan_execute' or 'react:2,plan_execute:1' -> {agent: weight}."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition(":")
        try:
            mix[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"--workload: {part!r}: weight {weight!r} is not a number") from None
    if not mix:
        raise ValueError("--workload: name at least one agent program")
    return mix


def parse_prices(items: Sequence[str]) -> dict[str, float]:
    prices: dict[str, float] = {}
    for item in items:
        gpu, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            prices[gpu.strip().lower()] = float(value)
        except ValueError:
            raise ValueError(f"--price: {item!r} is not GPU=USD_PER_HOUR") from None
    return prices


__all__ = [
    "DEFAULT_HEADROOM",
    "DEFAULT_SLO",
    "CatalogError",
    "PlanQuery",
    "PlanRow",
    "TrialDone",
    "parse_mix",
    "plan",
    "recommend",
]
