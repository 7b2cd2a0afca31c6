"""The capacity planner: the rate search finds a threshold wherever it starts, the
command-line parsers reject what they cannot use, and `plan()` rows add up the way
docs/simulation.md ("Power and cost") says: a faster GPU sustains more tasks per replica,
GPUs needed, $ per million tokens and tokens per joule follow from the row's own numbers,
and a model that does not fit says why."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest

from orchestrator.config import SimEngineConfig
from orchestrator.sim.build import hardware
from orchestrator.sim.catalog import CatalogError
from orchestrator.sim.cluster import SimulationResult, simulate
from orchestrator.sim.config import SimulationConfig
from orchestrator.sim.perf import PerfModel, SimConfigError
from orchestrator.sim.planner import (
    DEFAULT_HEADROOM,
    PlanQuery,
    PlanRow,
    TrialDone,
    highest_rate,
    parse_mix,
    parse_prices,
    plan,
)
from orchestrator.workload.arrivals import ArrivalConfig
from orchestrator.workload.mix import WorkloadConfig
from orchestrator.workload.slo import SloConfig, parse_slo

# ---- factories --------------------------------------------------------------------------


def query(**fields: Any) -> PlanQuery:
    """A cheap plan: one replica, 5 simulated seconds per trial, two bisection steps,
    llama-3.1-8b at tp=1 on H100 and B200, plan_execute within a 3 s task-latency p99.
    (Each trial's cost grows with the rate tried; these settings keep a plan of two GPUs
    to a few seconds.)"""
    base: dict[str, Any] = {
        "model": "llama-3.1-8b",
        "gpus": ("h100", "b200"),
        "workload": WorkloadConfig(mix={"plan_execute": 1.0}),
        "slo": SloConfig(task_latency_p99=3.0),
        "tps": (1,),
        "replicas": 1,
        "duration_s": 5.0,
        "warmup_s": 1.25,
        "search_steps": 2,
    }
    base.update(fields)
    return PlanQuery(**base)


def counting(meets: Callable[[float], bool]) -> tuple[Callable[[float], bool], list[float]]:
    tried: list[float] = []

    def wrapped(rate: float) -> bool:
        tried.append(rate)
        return meets(rate)

    return wrapped, tried


@cache
def h100_b200_plan() -> tuple[list[PlanRow], list[TrialDone], list[tuple[int, PlanRow]]]:
    """The rows of the cheap plan, its progress events, and each row with the number of
    events seen when it arrived."""
    events: list[TrialDone] = []
    arrived: list[tuple[int, PlanRow]] = []
    rows = plan(query(), progress=events.append, on_row=lambda r: arrived.append((len(events), r)))
    assert [(r.gpu, r.tp) for r in rows] == [("h100", 1), ("b200", 1)]
    return rows, events, arrived


def h100_b200_rows() -> dict[str, PlanRow]:
    return {r.gpu: r for r in h100_b200_plan()[0]}


def reproduce_trial(q: PlanQuery, row: PlanRow) -> tuple[SimEngineConfig, SimulationResult]:
    """The planner's simulation at the row's rate, run again through the public API."""
    engine = SimEngineConfig(
        gpu=row.gpu, model=q.model, tensor_parallel_size=row.tp, max_model_len=q.max_model_len
    )
    config = SimulationConfig(
        replicas=q.replicas,
        engine=engine,
        workload=q.workload,
        arrival=ArrivalConfig(rate=row.rate_per_replica * q.replicas),
        duration_s=q.duration_s,
        warmup_s=q.warmup_s,
        sample_interval_s=q.duration_s,
        slo=q.slo,
        seed=q.seed,
    )
    return engine, simulate(config)


# ---- highest_rate -------------------------------------------------------------------------


@pytest.mark.parametrize("start", [1.0, 0.3, 5.0, 7.3, 40.0, 1000.0])
@pytest.mark.parametrize("steps", [4, 8])
def test_highest_rate_finds_the_threshold_from_any_start(start: float, steps: int) -> None:
    threshold = 7.3
    meets, tried = counting(lambda r: r <= threshold)
    rate, trials = highest_rate(meets, start=start, steps=steps)
    assert trials == len(tried)
    assert rate <= threshold  # never reports a rate that failed
    assert meets(rate)
    # Bracketing gives [t/2, t] at worst (a factor of two), bisection halves it `steps` times.
    assert threshold - rate <= threshold / 2**steps + 1e-9


def test_more_bisection_steps_give_a_closer_rate() -> None:
    coarse, _ = highest_rate(lambda r: r <= 7.3, start=1.0, steps=2)
    fine, _ = highest_rate(lambda r: r <= 7.3, start=1.0, steps=10)
    assert coarse < fine <= 7.3
    assert 7.3 - fine < 0.01


def test_highest_rate_is_zero_when_nothing_passes() -> None:
    meets, tried = counting(lambda r: False)
    assert highest_rate(meets, start=1.0, steps=6) == (0.0, len(tried))
    assert len(tried) <= 12  # gives up instead of halving forever


def test_highest_rate_stops_doubling_when_everything_passes() -> None:
    meets, tried = counting(lambda r: True)
    rate, _ = highest_rate(meets, start=1.0, steps=6)
    assert rate >= 1000 and len(tried) < 30


# ---- parsers --------------------------------------------------------------------------------


def test_parse_slo_reads_seconds_and_milliseconds() -> None:
    assert parse_slo("task_ttft_p90=500ms, task_latency_p99=60s") == SloConfig(
        task_ttft_p90=0.5, task_latency_p99=60.0
    )
    assert parse_slo("task_latency_p90=2.5") == SloConfig(task_latency_p90=2.5)
    assert parse_slo("task_ttft_p99=1500MS") == SloConfig(task_ttft_p99=1.5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("latency_p99=5s", "task_latency_p99"),  # unknown name: the known ones are listed
        ("task_latency_p99", "NAME=VALUE"),
        ("task_latency_p99=soon", "not a duration"),
        ("task_latency_p99=5min", "not a duration"),
        ("task_latency_p99=0s", "positive"),
        ("task_latency_p99=-3s", "positive"),
    ],
)
def test_parse_slo_rejects_what_it_cannot_use(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="--slo") as err:
        parse_slo(text)
    assert message in str(err.value)


def test_parse_mix_reads_names_and_weights() -> None:
    assert parse_mix("plan_execute") == {"plan_execute": 1.0}
    assert parse_mix("react:2, plan_execute:0.5") == {"react": 2.0, "plan_execute": 0.5}


@pytest.mark.parametrize(("text", "message"), [("react:lots", "not a number"), (" , ", "at least")])
def test_parse_mix_rejects_bad_weights_and_empty_mixes(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="--workload") as err:
        parse_mix(text)
    assert message in str(err.value)


def test_parse_prices_reads_gpu_equals_dollars() -> None:
    assert parse_prices(["H100=2.5", "b200 = 5"]) == {"h100": 2.5, "b200": 5.0}


@pytest.mark.parametrize("item", ["h100", "h100=cheap", "=", "h100:2"])
def test_parse_prices_rejects_malformed_items(item: str) -> None:
    with pytest.raises(ValueError, match="--price"):
        parse_prices([item])


# ---- plan() -------------------------------------------------------------------------------


def test_b200_sustains_a_higher_rate_per_replica_than_h100() -> None:
    rows = h100_b200_rows()
    h100, b200 = rows["h100"], rows["b200"]
    assert h100.fits and b200.fits and h100.reason == b200.reason == ""
    assert h100.rate_per_replica > 0
    # 2.3x the HBM bandwidth and BF16 FLOPs of an H100.
    assert b200.rate_per_replica > 1.5 * h100.rate_per_replica
    assert b200.output_tps_per_gpu > h100.output_tps_per_gpu
    for row in rows.values():
        assert row.trials >= 3
        assert 0 < row.task_latency_p99 <= 3.0  # the SLO held at the planned rate


def test_gpus_needed_and_per_gpu_figures_follow_from_the_rate() -> None:
    q = query()
    assert q.headroom == DEFAULT_HEADROOM == 0.8
    for row in h100_b200_rows().values():
        # Every replica runs at `headroom` of the highest rate meeting the SLO.
        replicas = math.ceil(q.target_rate / (row.rate_per_replica * q.headroom))
        assert row.gpus_needed == replicas * row.tp
        assert row.tasks_per_s_per_gpu == pytest.approx(row.rate_per_replica / row.tp)


def test_fleet_costs_are_the_simulation_md_formula_over_the_sized_fleet() -> None:
    q = query()
    for row in h100_b200_rows().values():
        assert row.usd_per_gpu_hour is not None and row.usd_per_gpu_hour > 0
        fleet = row.gpus_needed * row.usd_per_gpu_hour
        assert row.fleet_usd_per_hour == pytest.approx(fleet)
        assert row.usd_per_1k_tasks == pytest.approx(1e3 * fleet / (3600.0 * q.target_rate))
        # 1e6 * $/GPU-hour * GPUs / (3600 * output tok/s), the fleet's output at the target.
        output_per_task = row.output_tps_per_gpu * row.tp / row.rate_per_replica
        expected = 1e6 * fleet / (3600.0 * q.target_rate * output_per_task)
        assert row.usd_per_million_tokens == pytest.approx(expected)


def test_progress_reports_every_trial_and_rows_arrive_as_they_finish() -> None:
    rows, events, arrived = h100_b200_plan()
    assert [r for _, r in arrived] == rows
    assert {(e.gpu, e.config, e.configs) for e in events} == {("h100", 0, 2), ("b200", 1, 2)}
    for seen, row in arrived:
        # Handed over right after its own last trial, before the next search starts.
        assert events[seen - 1].gpu == row.gpu
        assert all(e.gpu != row.gpu for e in events[seen:])
        trials = [e.trial for e in events if e.gpu == row.gpu]
        assert trials == list(range(1, row.trials + 1))
        assert max(e.rate for e in events if e.gpu == row.gpu and e.met) == row.rate_per_replica


def test_price_overrides_change_the_cost_and_nothing_else() -> None:
    q = query(gpus=("h100",), prices={"h100": 10.0})
    [row] = plan(q)
    base = h100_b200_rows()["h100"]
    assert base.usd_per_million_tokens is not None and base.usd_per_gpu_hour is not None
    assert row.usd_per_gpu_hour == 10.0
    assert row.rate_per_replica == base.rate_per_replica
    assert row.usd_per_million_tokens == pytest.approx(
        base.usd_per_million_tokens * 10.0 / base.usd_per_gpu_hour
    )


def test_tokens_per_joule_is_output_rate_over_board_power() -> None:
    q = query()
    for row in h100_b200_rows().values():
        engine, result = reproduce_trial(q, row)
        output_tps = result.summary.output_tps / q.replicas
        assert row.output_tps_per_gpu * row.tp == pytest.approx(output_tps)
        watts = PerfModel(hardware(engine)).power_w(result.gpu_utilization)
        assert row.tokens_per_joule == pytest.approx(output_tps / watts)
        # Power sits between idle and TDP, so tok/J is bounded by the datasheet.
        gpu = hardware(engine).gpu
        assert output_tps / (gpu.tdp_w * row.tp) <= row.tokens_per_joule
        assert row.tokens_per_joule <= output_tps / (gpu.idle_w * row.tp)


def test_a_model_that_does_not_fit_gives_a_row_saying_why() -> None:
    [row] = plan(query(model="llama-3.1-70b", gpus=("h100",), tps=(1,)))
    assert (row.gpu, row.tp, row.fits) == ("h100", 1, False)
    assert "GiB" in row.reason and "does not fit" in row.reason
    assert row.rate_per_replica == 0 and row.gpus_needed == 0 and row.trials == 0


def test_unknown_gpu_lists_the_known_ones() -> None:
    with pytest.raises(CatalogError, match="tpu9") as err:
        plan(query(gpus=("h100", "tpu9")))
    assert "b200" in str(err.value)


def test_unknown_model_is_a_catalog_error() -> None:
    with pytest.raises(CatalogError, match="llama-9"):
        plan(query(model="llama-9"))


def test_no_slo_is_refused() -> None:
    with pytest.raises(SimConfigError, match="SLO"):
        plan(query(slo=SloConfig()))


def test_an_slo_no_rate_can_meet_gives_a_row_without_a_rate() -> None:
    [row] = plan(query(gpus=("h100",), slo=SloConfig(task_latency_p99=0.5)))
    assert row.fits and row.rate_per_replica == 0 and row.gpus_needed == 0
