"""Per-task accounting, checked against the definitions in docs/metrics.md."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.domain import CallRecord, TaskUsage, ToolRecord
from orchestrator.executor.accounting import critical_path_calls, critical_path_time, task_usage

from ..factories import call_record, tool_record


def usage_of(
    records: list[CallRecord],
    *,
    user_input_tokens: int = 10,
    final_output_tokens: int = 5,
    task_latency: float = 2.0,
) -> TaskUsage:
    return task_usage(
        records,
        user_input_tokens=user_input_tokens,
        final_output_tokens=final_output_tokens,
        task_ttft=0.5,
        task_latency=task_latency,
    )


def diamond(e2e: dict[str, float] | None = None) -> list[CallRecord]:
    """a -> (b, c) -> d."""
    e2e = e2e or {}
    return [
        call_record("a", e2e=e2e.get("a", 0.1)),
        call_record("b", ["a"], e2e=e2e.get("b", 0.1)),
        call_record("c", ["a"], e2e=e2e.get("c", 0.1)),
        call_record("d", ["b", "c"], e2e=e2e.get("d", 0.1)),
    ]


def test_totals_and_ratios_follow_metrics_md() -> None:
    records = [
        call_record("a", prompt=100, cached=0, output=20),
        call_record("b", ["a"], prompt=150, cached=100, output=30),
        call_record("c", ["b"], prompt=250, cached=200, output=5),
    ]
    usage = usage_of(records, user_input_tokens=40, final_output_tokens=5)
    assert usage.llm_calls == 3
    assert usage.prompt_tokens_total == 500
    assert usage.cached_tokens_total == 300
    assert usage.output_tokens_total == 55
    # (prompt_total + output_total) / (user_input + final_output)
    assert usage.token_amplification == pytest.approx((500 + 55) / (40 + 5))
    assert usage.output_amplification == pytest.approx(55 / 5)
    assert usage.prefix_hit_rate == pytest.approx(300 / 500)
    assert usage.user_input_tokens == 40
    assert usage.final_output_tokens == 5
    assert (usage.task_ttft, usage.task_latency) == (0.5, 2.0)
    assert (usage.retried_calls, usage.tool_calls) == (0, 0)


def test_retries_and_tool_calls_are_reported_as_given() -> None:
    usage = task_usage(
        [call_record("a")],
        user_input_tokens=1,
        final_output_tokens=1,
        task_ttft=0.0,
        task_latency=1.0,
        retried_calls=2,
        tools=[tool_record("t1", ["a"]), tool_record("t2", ["a"]), tool_record("t3")],
    )
    assert (usage.llm_calls, usage.retried_calls, usage.tool_calls) == (1, 2, 3)


def test_critical_path_of_a_diamond_counts_one_branch() -> None:
    assert critical_path_calls(diamond()) == 3
    assert usage_of(diamond()).critical_path_calls == 3


def test_critical_path_of_parallel_calls_is_one() -> None:
    records = [call_record(f"w{i}") for i in range(5)]
    assert critical_path_calls(records) == 1


def test_critical_path_follows_the_longest_chain_not_the_first() -> None:
    # a -> d directly, and a -> b -> c -> d.
    records = [
        call_record("a"),
        call_record("b", ["a"]),
        call_record("c", ["b"]),
        call_record("d", ["a", "c"]),
        call_record("e", ["a"]),
    ]
    assert critical_path_calls(records) == 4


def test_overhead_is_latency_minus_the_slowest_chain() -> None:
    records = diamond({"a": 0.2, "b": 0.1, "c": 0.7, "d": 0.3})
    assert critical_path_time(records) == pytest.approx(0.2 + 0.7 + 0.3)
    usage = usage_of(records, task_latency=1.5)
    assert usage.orchestration_overhead == pytest.approx(1.5 - 1.2)


def test_slowest_chain_may_have_fewer_calls_than_the_longest() -> None:
    records = [
        call_record("a", e2e=0.1),
        call_record("b", ["a"], e2e=0.1),
        call_record("c", ["b"], e2e=0.1),
        call_record("slow", e2e=2.0),
    ]
    usage = usage_of(records, task_latency=2.5)
    assert usage.critical_path_calls == 3
    assert usage.orchestration_overhead == pytest.approx(0.5)


def test_dependencies_on_calls_outside_the_records_are_ignored() -> None:
    records = [call_record("b", ["not-recorded"], e2e=0.4)]
    assert critical_path_calls(records) == 1
    assert critical_path_time(records) == pytest.approx(0.4)


def test_no_calls_gives_zeros_not_division_errors() -> None:
    usage = usage_of([], user_input_tokens=0, final_output_tokens=0, task_latency=0.25)
    assert usage.llm_calls == 0
    assert usage.critical_path_calls == 0
    assert usage.token_amplification == 0.0
    assert usage.output_amplification == 0.0
    assert usage.prefix_hit_rate == 0.0
    assert usage.orchestration_overhead == pytest.approx(0.25)


def test_zero_final_output_and_zero_prompt_give_zero_ratios() -> None:
    records = [call_record("a", prompt=0, cached=0, output=7)]
    usage = usage_of(records, user_input_tokens=3, final_output_tokens=0)
    assert usage.output_amplification == 0.0
    assert usage.prefix_hit_rate == 0.0
    assert usage.token_amplification == pytest.approx(7 / 3)


# ---- tool steps on the critical path ------------------------------------------------


def test_tool_time_counts_toward_the_chain_but_tools_are_not_calls() -> None:
    # a -> lookup -> b: the tool sits between two calls.
    records = [call_record("a", e2e=0.2), call_record("b", ["lookup"], e2e=0.3)]
    tools = [tool_record("lookup", ["a"], elapsed=0.5)]
    usage = task_usage(
        records,
        user_input_tokens=10,
        final_output_tokens=5,
        task_ttft=0.5,
        task_latency=1.5,
        tools=tools,
    )
    assert usage.llm_calls == 2
    assert usage.tool_calls == 1
    # The tool links a to b, so both calls are on one chain ...
    assert usage.critical_path_calls == 2
    assert critical_path_calls(records, tools) == 2
    # ... and its time is not orchestration overhead.
    assert critical_path_time(records, tools) == pytest.approx(0.2 + 0.5 + 0.3)
    assert usage.orchestration_overhead == pytest.approx(1.5 - 1.0)


def test_without_its_tools_the_chain_is_broken() -> None:
    records = [call_record("a", e2e=0.2), call_record("b", ["lookup"], e2e=0.3)]
    assert critical_path_calls(records) == 1
    assert critical_path_time(records) == pytest.approx(0.3)


def test_a_slow_tool_makes_its_branch_the_critical_path() -> None:
    # plan -> (fast call | slow tool -> short call) -> answer
    records = [
        call_record("plan", e2e=0.1),
        call_record("fast", ["plan"], e2e=0.4),
        call_record("short", ["slow"], e2e=0.1),
        call_record("answer", ["fast", "short"], e2e=0.2),
    ]
    tools = [tool_record("slow", ["plan"], elapsed=2.0)]
    assert critical_path_time(records, tools) == pytest.approx(0.1 + 2.0 + 0.1 + 0.2)
    # By call count, both branches hold one call on the way to the answer.
    assert critical_path_calls(records, tools) == 3


def test_a_chain_of_tools_alone_counts_no_calls() -> None:
    tools = [tool_record("t1", elapsed=0.3), tool_record("t2", ["t1"], elapsed=0.4)]
    usage = task_usage(
        [],
        user_input_tokens=1,
        final_output_tokens=0,
        task_ttft=0.0,
        task_latency=1.0,
        tools=tools,
    )
    assert (usage.llm_calls, usage.tool_calls, usage.critical_path_calls) == (0, 2, 0)
    assert usage.orchestration_overhead == pytest.approx(1.0 - 0.7)


def test_long_chains_do_not_exhaust_the_recursion_limit() -> None:
    records = [call_record("c0")] + [call_record(f"c{i}", [f"c{i - 1}"]) for i in range(1, 5000)]
    assert critical_path_calls(records) == 5000


@st.composite
def call_graphs(draw: st.DrawFn) -> tuple[list[CallRecord], list[ToolRecord]]:
    """Random DAGs of calls and tool steps: each may depend on any earlier ones."""
    count = draw(st.integers(min_value=0, max_value=25))
    kinds = [draw(st.booleans()) for _ in range(count)]  # True: a tool step
    records: list[CallRecord] = []
    tools: list[ToolRecord] = []
    for i in range(count):
        after = draw(st.lists(st.integers(0, i - 1), max_size=4, unique=True)) if i else []
        deps = [f"n{j}" for j in after]
        if kinds[i]:
            tools.append(tool_record(f"n{i}", deps, elapsed=draw(st.floats(0.0, 10.0))))
            continue
        prompt = draw(st.integers(0, 5000))
        records.append(
            call_record(
                f"n{i}",
                deps,
                prompt=prompt,
                cached=draw(st.integers(0, prompt)),
                output=draw(st.integers(0, 500)),
                e2e=draw(st.floats(0.0, 10.0)),
            )
        )
    return draw(st.permutations(records)), draw(st.permutations(tools))


@settings(max_examples=150, deadline=None)
@given(graph=call_graphs(), latency=st.floats(0.0, 100.0))
def test_usage_properties_on_random_call_graphs(
    graph: tuple[list[CallRecord], list[ToolRecord]], latency: float
) -> None:
    records, tools = graph
    usage = task_usage(
        records,
        user_input_tokens=10,
        final_output_tokens=5,
        task_ttft=0.5,
        task_latency=latency,
        tools=tools,
    )
    assert usage.llm_calls == len(records)
    assert usage.tool_calls == len(tools)
    assert usage.prompt_tokens_total == sum(r.usage.prompt_tokens for r in records)
    assert usage.cached_tokens_total == sum(r.usage.cached_prompt_tokens for r in records)
    assert usage.output_tokens_total == sum(r.usage.output_tokens for r in records)
    assert 0.0 <= usage.prefix_hit_rate <= 1.0
    assert 0 <= usage.critical_path_calls <= usage.llm_calls
    if records:
        assert usage.critical_path_calls >= 1
    weights = [r.timings.e2e for r in records] + [t.elapsed for t in tools]
    slowest = critical_path_time(records, tools)
    assert max(weights, default=0.0) <= slowest + 1e-9
    assert slowest <= sum(weights) + 1e-9
    # Tool steps only ever lengthen the slowest chain.
    assert critical_path_time(records) <= slowest + 1e-9
    assert usage.orchestration_overhead == pytest.approx(latency - slowest)
