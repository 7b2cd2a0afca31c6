"""Per-task accounting, exactly as METRICS.md defines each figure (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.domain import CallRecord, TaskUsage


def _longest_chain(records: Sequence[CallRecord], weight: dict[str, float]) -> float:
    """Largest summed weight over dependency chains of the executed call graph."""
    by_id = {r.call_id: r for r in records}
    best: dict[str, float] = {}

    def visit(call_id: str) -> float:
        if call_id not in best:
            record = by_id[call_id]
            before = [visit(dep) for dep in record.after if dep in by_id]
            best[call_id] = weight[call_id] + max(before, default=0.0)
        return best[call_id]

    return max((visit(r.call_id) for r in records), default=0.0)


def critical_path_calls(records: Sequence[CallRecord]) -> int:
    """LLM calls on the longest dependency chain (by number of calls)."""
    return int(_longest_chain(records, {r.call_id: 1.0 for r in records}))


def critical_path_time(records: Sequence[CallRecord]) -> float:
    """Summed engine e2e along the slowest dependency chain."""
    return _longest_chain(records, {r.call_id: r.timings.e2e for r in records})


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def task_usage(
    records: Sequence[CallRecord],
    *,
    user_input_tokens: int,
    final_output_tokens: int,
    task_ttft: float,
    task_latency: float,
    retried_calls: int = 0,
    tool_calls: int = 0,
) -> TaskUsage:
    prompt = sum(r.usage.prompt_tokens for r in records)
    cached = sum(r.usage.cached_prompt_tokens for r in records)
    output = sum(r.usage.output_tokens for r in records)
    return TaskUsage(
        user_input_tokens=user_input_tokens,
        final_output_tokens=final_output_tokens,
        llm_calls=len(records),
        retried_calls=retried_calls,
        tool_calls=tool_calls,
        prompt_tokens_total=prompt,
        cached_tokens_total=cached,
        output_tokens_total=output,
        token_amplification=_ratio(prompt + output, user_input_tokens + final_output_tokens),
        output_amplification=_ratio(output, final_output_tokens),
        prefix_hit_rate=_ratio(cached, prompt),
        critical_path_calls=critical_path_calls(records),
        task_ttft=task_ttft,
        task_latency=task_latency,
        orchestration_overhead=task_latency - critical_path_time(records),
    )
