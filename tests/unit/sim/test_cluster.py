"""The fast-forward cluster simulation as a user of `inflection simulate` sees it: every
task that arrives completes with docs/metrics.md accounting, runs repeat exactly, arrival
processes have the documented shapes, overload shows in the latency and the SLO verdict,
prefix caching and the timeline report what happened, and bad input fails with a message
that says what is wrong."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from orchestrator.config import ConfigError
from orchestrator.domain import TaskResult
from orchestrator.sim.catalog import CatalogError
from orchestrator.sim.cluster import ClusterSimulation, SimulationResult
from orchestrator.sim.config import SimulationConfig, load_simulation_config
from orchestrator.sim.perf import SimConfigError
from orchestrator.workload.arrivals import ArrivalConfig, ArrivalProcess, arrivals
from orchestrator.workload.traces import TraceError, read_trace

# plan_execute (agents/library.py): planner (64 out) -> 3 workers (48 out each) ->
# synthesizer (64 out, the answer).
PLAN_EXECUTE_CALLS = 5
PLAN_EXECUTE_CRITICAL_PATH = 3
PLAN_EXECUTE_ANSWER_TOKENS = 64
PLAN_EXECUTE_OUTPUT_TOKENS = 64 + 3 * 48 + 64


# ---- factories --------------------------------------------------------------------------


def sim_config(**fields: Any) -> SimulationConfig:
    """A small run: one replica, ten simulated seconds, plan_execute at 2 tasks/s, no
    warm-up; keyword arguments replace whole top-level sections."""
    raw: dict[str, Any] = {
        "replicas": 1,
        "duration_s": 10.0,
        "warmup_s": 0.0,
        "sample_interval_s": 1.0,
        "arrival": {"process": "poisson", "rate": 2.0},
        "workload": {"mix": {"plan_execute": 1.0}},
    }
    raw.update(fields)
    return SimulationConfig.model_validate(raw)


def run(**fields: Any) -> SimulationResult:
    return ClusterSimulation(sim_config(**fields)).run()


def write_trace(tmp_path: Path, rows: Iterable[dict[str, Any] | str]) -> Path:
    """A JSONL trace; strings are written as they are (for malformed lines)."""
    path = tmp_path / "trace.jsonl"
    lines = [r if isinstance(r, str) else orjson.dumps(r).decode() for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def trace_config(path: Path, **fields: Any) -> dict[str, Any]:
    return {"process": "trace", "trace": str(path), **fields}


def arrival_times(
    process: str, rate: float, duration_s: float, seed: int = 0, **kw: Any
) -> list[float]:
    config = ArrivalConfig(process=ArrivalProcess(process), rate=rate, **kw)
    return [a.at for a in arrivals(config, duration_s, seed)]


def dispersion(times: list[float], duration_s: float, window_s: float) -> float:
    """Variance / mean of arrivals per window (1 for a Poisson process)."""
    bins = int(duration_s / window_s)
    counts, _ = np.histogram(times, bins=bins, range=(0.0, duration_s))
    return float(counts.var() / counts.mean())


def all_calls(results: Iterable[TaskResult]) -> list[Any]:
    return [c for r in results for c in r.calls]


@cache
def light_run() -> SimulationResult:
    """Two replicas well below capacity, with an SLO they meet; shared by the tests that
    only read it (simulating costs wall time)."""
    return run(
        replicas=2,
        duration_s=10.0,
        arrival={"process": "poisson", "rate": 4.0},
        slo={"task_latency_p99": 5.0},
    )


# ---- every task completes, with docs/metrics.md accounting --------------------------------------


def test_every_arriving_task_completes_under_light_load() -> None:
    result = light_run()
    arrived = len(arrival_times("poisson", 4.0, 10.0, seed=0))
    assert arrived > 20
    assert result.failed == 0 and result.summary.failed_tasks == 0
    assert len(result.results) == result.summary.tasks == arrived
    assert result.calls == arrived * PLAN_EXECUTE_CALLS
    assert result.summary.llm_calls_per_task == PLAN_EXECUTE_CALLS


def test_task_usage_follows_the_metric_definitions() -> None:
    for task in light_run().results:
        u = task.usage
        calls = task.calls
        prompt = sum(c.usage.prompt_tokens for c in calls)
        cached = sum(c.usage.cached_prompt_tokens for c in calls)
        output = sum(c.usage.output_tokens for c in calls)
        [answer] = [c for c in calls if c.step == "synthesizer"]
        assert u.llm_calls == len(calls) == PLAN_EXECUTE_CALLS
        assert (u.prompt_tokens_total, u.cached_tokens_total) == (prompt, cached)
        assert u.output_tokens_total == output == PLAN_EXECUTE_OUTPUT_TOKENS
        assert u.final_output_tokens == answer.usage.output_tokens == PLAN_EXECUTE_ANSWER_TOKENS
        assert u.token_amplification == pytest.approx(
            (prompt + output) / (u.user_input_tokens + u.final_output_tokens)
        )
        assert u.output_amplification == pytest.approx(output / u.final_output_tokens)
        assert u.prefix_hit_rate == pytest.approx(cached / prompt)
        assert u.critical_path_calls == PLAN_EXECUTE_CRITICAL_PATH
        # The answer streams last: its first token comes before the task ends.
        assert 0 < u.task_ttft < u.task_latency
        assert all(0 <= c.usage.cached_prompt_tokens <= c.usage.prompt_tokens for c in calls)
        # An agent re-reads its context: more tokens processed than the user sees.
        assert u.token_amplification > 1


def test_run_aggregates_match_the_tasks() -> None:
    result = light_run()
    summary = result.summary
    calls = all_calls(result.results)
    output = sum(c.usage.output_tokens for c in calls)
    prompt = sum(c.usage.prompt_tokens for c in calls)
    cached = sum(c.usage.cached_prompt_tokens for c in calls)
    assert summary.output_tps * summary.duration_s == pytest.approx(output)
    assert summary.processed_tps * summary.duration_s == pytest.approx(prompt + output)
    assert summary.prefix_hit_rate == pytest.approx(cached / prompt)
    assert summary.tasks_per_s == pytest.approx(summary.tasks / summary.duration_s)


# ---- determinism --------------------------------------------------------------------------


def test_the_same_config_and_seed_give_the_same_run() -> None:
    a = run(seed=7, duration_s=5.0)
    b = run(seed=7, duration_s=5.0)
    assert a.summary == b.summary
    assert a.timeline == b.timeline
    assert [r.usage for r in a.results] == [r.usage for r in b.results]


def test_a_different_seed_gives_different_arrivals() -> None:
    one, two = (arrival_times("poisson", 5.0, 10.0, seed=s) for s in (1, 2))
    assert one != two
    assert run(seed=1, duration_s=5.0).summary != run(seed=2, duration_s=5.0).summary


# ---- arrival processes ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_poisson_arrival_count_is_rate_times_duration(seed: int) -> None:
    rate, duration = 50.0, 100.0
    times = arrival_times("poisson", rate, duration, seed)
    expected = rate * duration
    assert abs(len(times) - expected) < 4 * math.sqrt(expected)  # 4 Poisson sd
    assert times == sorted(times) and times[0] >= 0 and times[-1] < duration


def test_constant_arrivals_are_evenly_spaced_within_the_duration() -> None:
    rate, duration = 4.0, 5.0  # a gap of 0.25 s adds up without rounding
    times = arrival_times("constant", rate, duration)
    gap = 1 / rate
    assert 0 <= times[0] <= gap
    assert np.diff(times) == pytest.approx([gap] * (len(times) - 1))
    expected = [t for k in range(100) if (t := times[0] + k * gap) < duration]
    assert times == pytest.approx(expected)


def test_constant_arrival_count_does_not_depend_on_rounding() -> None:
    cases = [(10.0, 1.0), (10.0, 2.0), (10.0, 3.0), (7.0, 1.0), (4.0, 5.0)]
    offsets = {len(arrival_times("constant", r, d)) - round(r * d) for r, d in cases}
    assert len(offsets) == 1, offsets


def test_gamma_arrivals_with_cv_3_are_burstier_than_poisson() -> None:
    duration = 400.0
    poisson = arrival_times("poisson", 20.0, duration, seed=3)
    gamma = arrival_times("gamma", 20.0, duration, seed=3, cv=3.0)
    # Same mean rate (within the gamma count's wider spread: sd ~ cv * sqrt(n))...
    assert abs(len(gamma) - 20.0 * duration) < 4 * 3.0 * math.sqrt(20.0 * duration)
    # ...but far more variable counts per window (a renewal process tends to cv^2 = 9).
    assert dispersion(gamma, duration, 5.0) > 3.0
    assert dispersion(gamma, duration, 5.0) > 3 * dispersion(poisson, duration, 5.0)


def test_trace_arrivals_come_at_timestamp_over_speedup(tmp_path: Path) -> None:
    path = write_trace(tmp_path, [{"timestamp": 0}, {"timestamp": 1500}, {"timestamp": 4000}])
    got = list(read_trace(path, speedup=2.0, duration_s=10.0))
    assert [a.at for a in got] == pytest.approx([0.0, 0.75, 2.0])
    assert all(a.agent is None and a.input_tokens is None for a in got)


def test_trace_entries_past_the_duration_are_ignored(tmp_path: Path) -> None:
    path = write_trace(tmp_path, [{"timestamp": t} for t in (0, 1000, 2000, 5000, 9000)])
    result = run(duration_s=3.0, arrival=trace_config(path))
    assert result.summary.tasks == 3 and result.failed == 0


def test_trace_agent_and_input_length_are_used(tmp_path: Path) -> None:
    path = write_trace(
        tmp_path,
        [
            {"timestamp": 0, "agent": "react", "input_length": 10},
            {"timestamp": 500, "agent": "plan_execute", "input_length": 200},
            {"timestamp": 1000, "agent": "react", "input_length": 200},
        ],
    )
    assert [(a.agent, a.input_tokens) for a in read_trace(path, 1.0, 10.0)] == [
        ("react", 10),
        ("plan_execute", 200),
        ("react", 200),
    ]
    result = run(
        duration_s=5.0,
        arrival=trace_config(path),
        workload={"mix": {"plan_execute": 1.0, "react": 1.0}},
    )
    by_agent = sorted((r.agent, r.usage.user_input_tokens) for r in result.results)
    assert [a for a, _ in by_agent] == ["plan_execute", "react", "react"]
    short, long = by_agent[1][1], by_agent[2][1]
    assert long > 10 * short  # the input lengths come from the trace, not the workload
    assert result.failed == 0


def test_trace_input_length_is_the_user_input_in_tokens(tmp_path: Path) -> None:
    path = write_trace(tmp_path, [{"timestamp": 0, "input_length": 100}])
    [task] = run(duration_s=2.0, arrival=trace_config(path)).results
    assert task.usage.user_input_tokens == pytest.approx(100, rel=0.1)


def test_workload_input_tokens_mean_is_the_user_input_in_tokens() -> None:
    result = run(
        duration_s=3.0,
        arrival={"process": "constant", "rate": 1.0},
        workload={"mix": {"plan_execute": 1.0}, "input_tokens_mean": 64, "input_tokens_sigma": 0},
    )
    assert [r.usage.user_input_tokens for r in result.results] == [64, 64]


def test_trace_agent_outside_the_mix_runs_or_is_rejected(tmp_path: Path) -> None:
    path = write_trace(tmp_path, [{"timestamp": 0, "agent": "react"}])
    try:
        result = run(duration_s=2.0, arrival=trace_config(path))
    except (ConfigError, TraceError) as exc:
        assert "react" in str(exc)
    else:
        assert result.failed == 0 and [r.agent for r in result.results] == ["react"]


def test_an_out_of_order_trace_is_sorted_or_rejected(tmp_path: Path) -> None:
    path = write_trace(tmp_path, [{"timestamp": t} for t in (5000, 1000, 30000, 2000)])
    try:
        result = run(duration_s=20.0, arrival=trace_config(path))
    except TraceError as exc:
        assert "trace.jsonl:2" in str(exc)
    else:
        assert result.summary.tasks == 3


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("{not json", "not JSON"),
        ('{"agent": "react"}', "no timestamp"),
        ('{"timestamp": "soon"}', "timestamp not a number"),
        ('{"timestamp": -5}', "negative timestamp"),
        ('{"timestamp": 10, "input_length": 0}', "input_length < 1"),
        ("[1, 2]", "not an object"),
    ],
)
def test_a_malformed_trace_line_names_its_file_and_line(
    tmp_path: Path, line: str, why: str
) -> None:
    path = write_trace(tmp_path, [{"timestamp": 0}, {"timestamp": 5}, line])
    with pytest.raises(TraceError, match=r"trace\.jsonl:3: "):
        run(duration_s=5.0, arrival=trace_config(path))


def test_a_missing_trace_file_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"nope\.jsonl"):
        run(arrival=trace_config(tmp_path / "nope.jsonl"))


# ---- load -----------------------------------------------------------------------------------


def test_overload_raises_latency_and_misses_the_slo_that_light_load_meets() -> None:
    # A replica running four sequences at a time saturates at a rate cheap to simulate;
    # without admission control every task is let in.
    def at(rate: float) -> SimulationResult:
        return run(
            arrival={"process": "poisson", "rate": rate},
            engine={"max_num_seqs": 4},
            slo={"task_latency_p99": 5.0},
            admission={"enabled": False},
        )

    light, heavy = at(1.0), at(20.0)
    assert light.slo_met is True and light.failed == 0
    assert heavy.slo_met is False
    assert heavy.summary.task_latency.p99 > 5 * light.summary.task_latency.p99
    # The backlog drains long after arrivals stop.
    assert heavy.simulated_s > 2 * 10.0
    # Most of the heavy run's tasks miss the bound; all of the light run's meet it.
    assert heavy.goodput_tasks_per_s < 0.5 * heavy.summary.tasks_per_s
    assert light.goodput_tasks_per_s == pytest.approx(light.summary.tasks_per_s)
    for result in (light, heavy):
        assert 0 <= result.goodput_tasks_per_s <= result.summary.tasks_per_s


def test_adaptive_admission_refuses_the_excess_and_keeps_the_latency_of_the_admitted() -> None:
    # The replica of the test above serves about 2 tasks a second.
    def at(rate: float, admission: bool = True) -> SimulationResult:
        return run(
            arrival={"process": "poisson", "rate": rate},
            engine={"max_num_seqs": 4},
            duration_s=60.0,
            admission={"enabled": admission, "adaptive": True},
        )

    capacity = at(3.0, admission=False).summary.tasks_per_s
    light, at_capacity, overload = at(1.0), at(capacity), at(10 * capacity)
    assert light.refused == 0
    assert overload.refused > 5 * overload.summary.tasks  # the excess, told at once
    assert overload.failed == overload.refused  # nothing fails but what is refused
    assert overload.summary.task_latency.p99 <= 2 * at_capacity.summary.task_latency.p99
    assert overload.summary.tasks_per_s >= 0.9 * capacity
    assert overload.simulated_s < 60.0 + 2 * at_capacity.summary.task_latency.p99  # no backlog


def test_no_slo_gives_no_verdict() -> None:
    assert run(duration_s=3.0).slo_met is None


def test_a_run_that_measured_no_task_does_not_claim_the_slo() -> None:
    result = run(duration_s=5.0, warmup_s=10.0, slo={"task_latency_p99": 5.0})
    assert result.summary.tasks == 0
    assert result.slo_met is not True


# ---- prefix caching --------------------------------------------------------------------------


def test_growing_agent_context_hits_the_prefix_cache() -> None:
    assert light_run().summary.prefix_hit_rate > 0.2


def test_without_prefix_caching_nothing_is_cached() -> None:
    result = run(
        replicas=2,
        duration_s=5.0,
        arrival={"process": "poisson", "rate": 4.0},
        engine={"enable_prefix_caching": False},
    )
    assert result.summary.tasks > 0
    assert result.summary.prefix_hit_rate == 0
    assert all(c.usage.cached_prompt_tokens == 0 for c in all_calls(result.results))


# ---- the timeline -----------------------------------------------------------------------------


def test_timeline_samples_each_interval_for_every_replica() -> None:
    result = run(
        replicas=3,
        duration_s=6.0,
        sample_interval_s=0.5,
        arrival={"process": "poisson", "rate": 6.0},
    )
    timeline = result.timeline
    samples = timeline.samples
    assert timeline.replicas == result.replica_names and len(timeline.replicas) == 3
    assert [s.t for s in samples] == pytest.approx([0.5 * (k + 1) for k in range(len(samples))])
    assert all(s.interval == 0.5 for s in samples)
    # The timeline covers the whole run, drain included.
    assert samples[-1].t >= result.simulated_s > 6.0
    for s in samples:
        assert len(s.kv_usage) == len(s.queue_depth) == len(s.running) == 3
        assert all(0.0 <= k <= 1.0 for k in s.kv_usage)
        assert all(q >= 0 for q in s.queue_depth) and all(n >= 0 for n in s.running)
    assert any(k > 0 for s in samples for k in s.kv_usage)
    calls = all_calls(result.results)
    assert sum(s.output_tokens for s in samples) == sum(c.usage.output_tokens for c in calls)
    assert sum(s.tasks_completed for s in samples) == result.summary.tasks
    for s in samples:
        if s.tasks_completed:
            assert s.task_latency is not None and s.task_ttft is not None
            assert s.task_latency.p50 <= s.task_latency.p90 <= s.task_latency.p99
        else:
            assert s.task_latency is None and s.task_ttft is None


# ---- routing ----------------------------------------------------------------------------------


def test_round_robin_spreads_calls_evenly_over_replicas() -> None:
    result = run(
        replicas=3,
        duration_s=5.0,
        arrival={"process": "poisson", "rate": 5.0},
        routing={"policy": "round_robin"},
    )
    per_replica = Counter(c.replica for c in all_calls(result.results))
    assert set(per_replica) == set(result.replica_names)
    assert sum(per_replica.values()) == result.calls
    assert max(per_replica.values()) - min(per_replica.values()) <= 1


def test_an_unknown_routing_policy_is_rejected_naming_the_choices(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text("routing: {policy: least_loadd}\n")
    with pytest.raises(ConfigError, match=r"routing\.policy.*least_load"):
        load_simulation_config(path)


# ---- bad input ---------------------------------------------------------------------------------


def test_an_unknown_agent_in_the_mix_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="nope") as err:
        ClusterSimulation(sim_config(workload={"mix": {"nope": 1.0}}))
    assert "plan_execute" in str(err.value) and "react" in str(err.value)


def test_an_unknown_gpu_lists_the_known_ones() -> None:
    with pytest.raises(CatalogError, match="tpu9") as err:
        ClusterSimulation(sim_config(engine={"gpu": "tpu9"}))
    assert "h100" in str(err.value) and "b200" in str(err.value)


def test_a_model_that_does_not_fit_says_so_in_gib() -> None:
    with pytest.raises(SimConfigError, match="GiB") as err:
        ClusterSimulation(sim_config(engine={"gpu": "h100", "model": "llama-3.1-70b"}))
    assert "does not fit" in str(err.value)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("arrival:\n  rate: -1\n", "arrival.rate"),
        ("replicas: many\n", "replicas"),
        ("replica: 2\n", "replica"),
        ("engine:\n  max_model_len: 8\n", "engine.max_model_len"),
        ("arrival:\n  process: trace\n", "arrival"),
    ],
)
def test_a_malformed_config_field_names_the_file_and_field(
    tmp_path: Path, text: str, field: str
) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"sim\.yaml") as err:
        load_simulation_config(path)
    assert f"{field}:" in str(err.value)


def test_not_yaml_and_a_missing_file_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("replicas: [1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_simulation_config(bad)
    with pytest.raises(ConfigError, match=r"gone\.yaml: cannot read"):
        load_simulation_config(tmp_path / "gone.yaml")


def test_the_example_config_loads() -> None:
    config = load_simulation_config(Path(__file__).parents[3] / "cluster" / "sim-example.yaml")
    assert config.replicas == 8 and config.engine.gpu == "h100"


def test_a_task_longer_than_the_context_fails_and_the_rest_complete(tmp_path: Path) -> None:
    path = write_trace(
        tmp_path,
        [
            {"timestamp": 0, "input_length": 10},
            {"timestamp": 100, "input_length": 2000},  # ~4,000 tokens: over 1,024
            {"timestamp": 200, "input_length": 10},
        ],
    )
    result = run(duration_s=5.0, arrival=trace_config(path), engine={"max_model_len": 1024})
    assert result.failed == 1 and result.summary.failed_tasks == 1
    assert result.summary.tasks == 2
    assert all(r.usage.llm_calls == PLAN_EXECUTE_CALLS for r in result.results)
