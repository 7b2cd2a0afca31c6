"""One SLO grammar and meaning for simulate, plan and load (orchestrator/workload/slo.py)."""

from __future__ import annotations

import math

import pytest

from orchestrator.domain import TaskResult, TaskUsage
from orchestrator.report import summarize
from orchestrator.workload.slo import SloConfig, parse_slo, slo_checks


def test_both_spellings_users_type_parse_to_one_config() -> None:
    # The planner's percentile bounds and the load generator's per-task ones, any case.
    assert parse_slo("task_ttft_p90=500ms, task_latency_p99=60s") == SloConfig(
        task_ttft_p90=0.5, task_latency_p99=60.0
    )
    assert parse_slo("task_ttft_s=5, task_latency=30S,call_tpot_p99=100ms") == SloConfig(
        task_ttft=5.0, task_latency=30.0, call_tpot_p99=0.1
    )
    assert parse_slo(" ").is_empty()


def test_text_round_trips() -> None:
    slo = parse_slo("task_ttft_p90=5s,task_latency=30s")
    assert parse_slo(slo.text()) == slo


def test_a_task_meets_the_tightest_bound_of_each_metric() -> None:
    slo = SloConfig(task_ttft=5.0, task_ttft_p90=2.0, task_latency_p99=10.0, call_tpot_p99=0.05)
    assert slo.ttft_bound == 2.0 and slo.latency_bound == 10.0
    assert slo.met_by_task(1.5, 9.0, (0.01, 0.02))
    assert not slo.met_by_task(2.5, 9.0)  # over the p90 bound, under the bare one
    assert not slo.met_by_task(None, 9.0)  # no answer token: no TTFT to meet a bound
    assert not slo.met_by_task(1.5, 11.0)
    assert not slo.met_by_task(1.5, 9.0, (0.01, 0.2))
    assert SloConfig().met_by_task(None, 1e9) and SloConfig().latency_bound == math.inf


def result(ttft: float, latency: float, answer_tokens: int = 8) -> TaskResult:
    usage = TaskUsage(4, answer_tokens, 1, 0, 0, 10, 0, answer_tokens, 1.0, 1.0, 0.0, 1, ttft,
                      latency, 0.0)  # fmt: skip
    return TaskResult("t", "a", "", usage, ())


def test_run_checks_use_the_percentile_or_every_task() -> None:
    summary = summarize([result(1.0, 2.0), result(2.0, 4.0), result(3.0, 30.0)], 10.0)
    checks = slo_checks(parse_slo("task_ttft_p90=5s,task_latency=20s"), summary)
    assert [(c.label, c.met) for c in checks] == [
        ("task TTFT p90", True),
        ("task latency max", False),  # the slowest task took 30 s
    ]
    assert checks[1].value_s == 30.0


def test_task_ttft_leaves_out_tasks_with_no_answer_token() -> None:
    # TaskUsage.task_ttft is 0.0 without an answer token: not a TTFT of 0 (docs/metrics.md).
    summary = summarize([result(2.0, 3.0), result(0.0, 3.0, answer_tokens=0)], 10.0)
    assert summary.task_ttft.p50 == 2.0 and summary.task_latency.p50 == 3.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("task_ttft_p50=1s", "unknown bound 'task_ttft_p50'"),
        ("task_ttft=1s,task_ttft_s=2s", "given twice"),
        ("call_tpot_p99=-1ms", "positive"),
    ],
)
def test_errors_name_the_option(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="--slo") as err:
        parse_slo(text)
    assert message in str(err.value)
