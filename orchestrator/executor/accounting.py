"""Per-task accounting, exactly as docs/metrics.md defines each figure (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.domain import (
    CallRecord,
    CallTimings,
    CallUsage,
    FinishReason,
    TaskUsage,
    ToolRecord,
)


def _longest_chain(edges: dict[str, tuple[str, ...]], weight: dict[str, float]) -> float:
    """Largest summed weight over dependency chains of the executed graph (calls and
    tool steps). Iterative, so long agent loops cannot exhaust the recursion limit."""
    best: dict[str, float] = {}
    for root in edges:
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if node in best:
                continue
            deps = [d for d in edges[node] if d in edges]
            if expanded:
                best[node] = weight[node] + max((best[d] for d in deps), default=0.0)
            else:
                stack.append((node, True))
                stack.extend((d, False) for d in deps if d not in best)
    return max(best.values(), default=0.0)


def _graph(
    records: Sequence[CallRecord], tools: Sequence[ToolRecord]
) -> dict[str, tuple[str, ...]]:
    edges = {r.call_id: r.after for r in records}
    edges.update({t.tool_id: t.after for t in tools})
    return edges


def critical_path_calls(records: Sequence[CallRecord], tools: Sequence[ToolRecord] = ()) -> int:
    """LLM calls on the longest dependency chain (by number of calls)."""
    weight = {r.call_id: 1.0 for r in records} | {t.tool_id: 0.0 for t in tools}
    return int(_longest_chain(_graph(records, tools), weight))


def critical_path_time(records: Sequence[CallRecord], tools: Sequence[ToolRecord] = ()) -> float:
    """Summed engine e2e and tool time along the slowest dependency chain."""
    weight = {r.call_id: r.timings.e2e for r in records} | {t.tool_id: t.elapsed for t in tools}
    return _longest_chain(_graph(records, tools), weight)


def aborted_call(
    call_id: str,
    *,
    step: str,
    branch: int,
    replica: str,
    prompt_tokens: int,
    output_tokens: int,
    after: tuple[str, ...],
    elapsed: float,
) -> CallRecord:
    """The record of a call aborted in flight (deadline, failure of its task): it still
    consumed its prompt and the output tokens that reached the orchestrator, so partial
    usage counts it. The engine's own timings never came back: they read 0."""
    return CallRecord(
        call_id=call_id,
        step=step,
        branch=branch,
        replica=replica,
        usage=CallUsage(prompt_tokens, 0, output_tokens),
        timings=CallTimings(queue_time=0.0, ttft=0.0, tpot=None, itl=(), e2e=0.0),
        finish_reason=FinishReason.ABORT,
        after=after,
        dispatch_to_result=elapsed,
    )


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
    tools: Sequence[ToolRecord] = (),
) -> TaskUsage:
    prompt = sum(r.usage.prompt_tokens for r in records)
    cached = sum(r.usage.cached_prompt_tokens for r in records)
    output = sum(r.usage.output_tokens for r in records)
    return TaskUsage(
        user_input_tokens=user_input_tokens,
        final_output_tokens=final_output_tokens,
        llm_calls=len(records),
        retried_calls=retried_calls,
        tool_calls=len(tools),
        prompt_tokens_total=prompt,
        cached_tokens_total=cached,
        output_tokens_total=output,
        token_amplification=_ratio(prompt + output, user_input_tokens + final_output_tokens),
        output_amplification=_ratio(output, final_output_tokens),
        prefix_hit_rate=_ratio(cached, prompt),
        critical_path_calls=critical_path_calls(records, tools),
        task_ttft=task_ttft,
        task_latency=task_latency,
        orchestration_overhead=task_latency - critical_path_time(records, tools),
    )
