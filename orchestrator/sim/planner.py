"""The capacity planner: for each GPU type and tensor-parallel degree, the highest task
rate one replica sustains within a task-level SLO, and what that costs.

Each candidate rate is a fast-forward simulation of a few replicas under Poisson
arrivals of the workload; a doubling search brackets the highest rate that meets the SLO
and bisection narrows it. Power and price turn the result into tokens per joule and
dollars per million output tokens (SIMULATION.md, "Power and cost").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from orchestrator.config import SimEngineConfig
from orchestrator.sim.build import build_replica
from orchestrator.sim.catalog import Catalog, CatalogError, load_catalog
from orchestrator.sim.cluster import (
    ArrivalConfig,
    SimulationConfig,
    SimulationResult,
    SloConfig,
    WorkloadConfig,
    simulate,
)
from orchestrator.sim.perf import PerfModel, SimConfigError

TP_CHOICES = (1, 2, 4, 8)


@dataclass(slots=True, frozen=True)
class PlanQuery:
    model: str
    gpus: tuple[str, ...]
    workload: WorkloadConfig
    slo: SloConfig
    target_rate: float = 100.0  # tasks/s the fleet must sustain
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
    gpus_needed: int  # for PlanQuery.target_rate (0 when the SLO cannot be met)
    tokens_per_joule: float
    usd_per_gpu_hour: float | None
    usd_per_million_tokens: float | None
    task_ttft_p90: float  # seconds, at the planned rate
    task_latency_p99: float
    trials: int


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


def plan(query: PlanQuery, progress: Callable[[str], None] | None = None) -> list[PlanRow]:
    catalog: Catalog = load_catalog(query.catalogs)
    catalog.model(query.model)  # unknown names fail before any simulation
    for gpu in query.gpus:
        catalog.gpu(gpu)
    if query.slo == SloConfig():
        raise SimConfigError("give at least one SLO bound, e.g. task_latency_p99=60s")
    rows: list[PlanRow] = []
    for gpu in query.gpus:
        for tp in query.tps or TP_CHOICES:
            engine = _engine(query, gpu, tp)
            try:
                perf = PerfModel(build_replica(engine, catalog).perf.hw)
            except SimConfigError as exc:
                if query.tps:
                    rows.append(_unfit(gpu, tp, str(exc)))
                continue
            if progress:
                progress(f"{gpu} tp={tp}")
            cache: dict[float, SimulationResult] = {}

            def meets(
                rate: float,
                engine: SimEngineConfig = engine,
                cache: dict[float, SimulationResult] = cache,
            ) -> bool:
                result = _trial(query, engine, rate)
                cache[rate] = result
                return _meets(result)

            rate, trials = highest_rate(meets, start=1.0, steps=query.search_steps)
            rows.append(_row(query, catalog, perf, gpu, tp, rate, cache.get(rate), trials))
    return rows


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
    usd = 1e6 * price * tp / (3600.0 * output_tps_replica) if price else None
    return PlanRow(
        gpu=gpu,
        tp=tp,
        fits=True,
        reason="",
        rate_per_replica=rate,
        tasks_per_s_per_gpu=rate / tp,
        output_tps_per_gpu=output_tps_replica / tp,
        gpus_needed=math.ceil(query.target_rate / rate) * tp,
        tokens_per_joule=output_tps_replica / watts,
        usd_per_gpu_hour=price,
        usd_per_million_tokens=usd,
        task_ttft_p90=summary.task_ttft.p90,
        task_latency_p99=summary.task_latency.p99,
        trials=trials,
    )


def parse_slo(text: str) -> SloConfig:
    """'task_ttft_p90=5s,task_latency_p99=60s' (units s or ms) -> SloConfig."""
    fields: dict[str, float] = {}
    known = sorted(SloConfig.model_fields)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in SloConfig.model_fields:
            raise ValueError(f"--slo: {part!r} is not NAME=VALUE with NAME one of {known}")
        value = value.strip().lower()
        scale = 1.0
        if value.endswith("ms"):
            value, scale = value[:-2], 1e-3
        elif value.endswith("s"):
            value = value[:-1]
        try:
            seconds = float(value) * scale
        except ValueError:
            raise ValueError(f"--slo: {part!r}: {value!r} is not a number of seconds") from None
        if seconds <= 0:
            raise ValueError(f"--slo: {part!r}: the bound must be positive")
        fields[name] = seconds
    return SloConfig(**fields)


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


__all__ = ["CatalogError", "PlanQuery", "PlanRow", "parse_mix", "parse_slo", "plan"]
