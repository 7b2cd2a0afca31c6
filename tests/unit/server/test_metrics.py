"""`Metrics` (orchestrator/server/metrics.py) as an observer, pure: what a scrape shows
after tasks and calls end, and that every name follows Prometheus' conventions."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from orchestrator.domain import (
    CallResult,
    CallTimings,
    CallUsage,
    ClusterStatus,
    FinishReason,
    ReplicaState,
    ReplicaStatus,
    TaskUsage,
)
from orchestrator.executor.observer import TaskOutcome
from orchestrator.server.metrics import Metrics


def usage(latency: float, amplification: float) -> TaskUsage:
    return TaskUsage(
        user_input_tokens=10,
        final_output_tokens=4,
        llm_calls=5,
        retried_calls=0,
        tool_calls=0,
        prompt_tokens_total=200,
        cached_tokens_total=50,
        output_tokens_total=40,
        token_amplification=amplification,
        output_amplification=4.0,
        prefix_hit_rate=0.25,
        critical_path_calls=3,
        task_ttft=latency / 2,
        task_latency=latency,
        orchestration_overhead=0.01,
    )


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_tasks_are_counted_by_agent_and_outcome_and_only_completed_ones_timed() -> None:
    metrics = Metrics()
    metrics.task_ended("react", TaskOutcome.OK, usage(2.0, 20.0))
    metrics.task_ended("react", TaskOutcome.OK, usage(4.0, 30.0))
    metrics.task_ended("react", TaskOutcome.DEADLINE_EXCEEDED, usage(9.0, 99.0))
    metrics.task_ended("chat", TaskOutcome.RESOURCE_EXHAUSTED, None)
    got = samples(metrics)
    ok = (("agent", "react"), ("outcome", "ok"))
    assert got[("inflection_tasks_total", ok)] == 2
    late = (("agent", "react"), ("outcome", "deadline_exceeded"))
    assert got[("inflection_tasks_total", late)] == 1
    refused = (("agent", "chat"), ("outcome", "resource_exhausted"))
    assert got[("inflection_tasks_total", refused)] == 1
    react = (("agent", "react"),)
    assert got[("inflection_task_latency_seconds_count", react)] == 2
    assert got[("inflection_task_latency_seconds_sum", react)] == 6.0
    assert got[("inflection_task_token_amplification_sum", react)] == 50.0
    # A failed task's partial usage counts in the token totals, not in the timings.
    output = (("agent", "react"), ("kind", "output"))
    assert got[("inflection_task_tokens_total", output)] == 120


def test_calls_by_replica_with_their_engine_timings() -> None:
    metrics = Metrics()
    result = CallResult(
        call_id="c1",
        token_ids=(1, 2, 3),
        text="abc",
        finish_reason=FinishReason.LENGTH,
        usage=CallUsage(prompt_tokens=10, cached_prompt_tokens=0, output_tokens=3),
        timings=CallTimings(queue_time=0.02, ttft=0.1, tpot=0.01, itl=(0.01, 0.01), e2e=0.12),
    )
    metrics.call_routed("replica-0")
    metrics.call_ended("replica-0", result, TaskOutcome.OK)
    metrics.call_routed("replica-1")
    metrics.call_ended("replica-1", None, TaskOutcome.UNAVAILABLE)
    got = samples(metrics)
    r0 = (("replica", "replica-0"),)
    assert got[("inflection_routing_decisions_total", r0)] == 1
    assert got[("inflection_call_ttft_seconds_sum", r0)] == 0.1
    assert got[("inflection_call_queue_seconds_sum", r0)] == 0.02
    assert got[("inflection_call_tpot_seconds_count", r0)] == 1
    failed = (("outcome", "unavailable"), ("replica", "replica-1"))
    assert got[("inflection_calls_total", failed)] == 1
    assert ("inflection_call_ttft_seconds_count", (("replica", "replica-1"),)) not in got


def test_replica_gauges_follow_the_last_status_read() -> None:
    metrics = Metrics()

    def status(state: ReplicaState, waiting: int) -> ClusterStatus:
        replica = ReplicaStatus(
            name="replica-0",
            state=state,
            engine="sim",
            model="m",
            node="n",
            unfinished_requests=waiting + 3,
            in_flight_calls=4,
            calls_served=10,
            output_tokens_served=100,
            waiting_requests=waiting,
            running_requests=3,
            kv_usage=0.5,
            prefix_hit_rate=0.75,
            replacements=1,
        )
        return ClusterStatus(replicas=(replica,), model="m", max_model_len=4096)

    metrics.read_status(status(ReplicaState.READY, 2))
    metrics.read_admission(queued=7, refused=3, wait_limit_s=1.5)
    got = samples(metrics)
    r0 = (("replica", "replica-0"),)
    assert got[("inflection_replica_healthy", r0)] == 1
    assert got[("inflection_replica_waiting_requests", r0)] == 2
    assert got[("inflection_replica_kv_usage_ratio", r0)] == 0.5
    assert got[("inflection_replica_replacements", r0)] == 1
    assert got[("inflection_admission_queued_tasks", ())] == 7
    assert got[("inflection_admission_wait_limit_seconds", ())] == 1.5
    metrics.read_status(status(ReplicaState.UNHEALTHY, 0))
    got = samples(metrics)
    assert got[("inflection_replica_healthy", r0)] == 0
    assert got[("inflection_replica_waiting_requests", r0)] == 0


def test_every_name_follows_prometheus_conventions() -> None:
    metrics = Metrics()
    text = metrics.exposition().decode()
    families = list(text_string_to_metric_families(text))
    assert len(families) >= 20
    for family in families:
        assert re.fullmatch(r"inflection_[a-z_]+", family.name), family.name
        assert not re.search(r"_(ms|milliseconds|percent)$", family.name), family.name
        if family.type == "histogram" and "seconds" not in family.name:
            assert family.name.endswith(("_amplification", "_calls")), family.name


def test_the_readme_table_lists_exactly_what_metrics_exports() -> None:
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    section = readme.split("### Prometheus: `/metrics`", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(inflection_\w+)` \| (\w+) \|", section, re.M)
    documented = set(rows)
    families = text_string_to_metric_families(Metrics().exposition().decode())
    exported = {(f.name + ("_total" if f.type == "counter" else ""), f.type) for f in families}
    assert documented == exported
