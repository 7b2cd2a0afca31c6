"""The Agentic steps tab: the per-step figures that left Locust's own table (where they
inflated its RPS) are shown per agent and step from the tasks' call records."""

from __future__ import annotations

from loadtests.metrics import CallSample, TaskSample
from loadtests.webui import NO_STEPS, STEP_COLUMNS, step_rows


def call(step: str, elapsed: float, kind: str = "llm") -> CallSample:
    return CallSample(
        kind=kind,
        step=step,
        branch=0,
        target="replica-0" if kind == "llm" else "search",
        at_s=elapsed,
        elapsed_s=elapsed,
        output_tokens=40 if kind == "llm" else 0,
        queue_s=0.01 if kind == "llm" else None,
        ttft_s=0.05 if kind == "llm" else None,
    )


def task(agent: str, calls: tuple[CallSample, ...]) -> TaskSample:
    return TaskSample(
        completed_at=1000.0,
        agent=agent,
        ok=True,
        status="OK",
        llm_calls=sum(c.kind == "llm" for c in calls),
        prompt_tokens=500,
        cached_tokens=0,
        output_tokens=100,
        user_input_tokens=32,
        final_output_tokens=10,
        token_amplification=10.0,
        task_ttft=0.5,
        task_latency=1.0,
        call_tpots=(),
        calls=calls,
    )


def test_one_row_per_agent_and_step_in_ms() -> None:
    samples = [
        task("plan_execute", (call("planner", 0.2), call("worker", 0.3), call("worker", 0.5))),
        task("plan_execute", (call("planner", 0.4), call("worker", 0.3), call("worker", 0.5))),
        task("react", (call("think", 0.1), call("search", 0.02, kind="tool"))),
    ]
    rows = step_rows(samples)
    assert all(list(row) == [key for key, _ in STEP_COLUMNS] for row in rows)
    by_step = {(r["agent"], r["step"]): r for r in rows}
    assert list(by_step) == [
        ("plan_execute", "planner"),
        ("plan_execute", "worker"),
        ("react", "search"),
        ("react", "think"),
    ]
    worker = by_step["plan_execute", "worker"]
    assert worker["runs"] == 4 and worker["elapsed_p50_ms"] == 400
    assert worker["queue_p50_ms"] == 10 and worker["ttft_p50_ms"] == 50
    assert by_step["plan_execute", "planner"]["elapsed_p50_ms"] == 300
    tool = by_step["react", "search"]
    assert tool["kind"] == "tool" and tool["elapsed_p50_ms"] == 20 and tool["queue_p50_ms"] == "-"


def test_without_call_records_the_tab_says_how_to_get_them() -> None:
    rows = step_rows([task("react", ())])
    assert len(rows) == 1 and rows[0]["step"] == NO_STEPS
