"""The real path, end to end: SDK -> gRPC -> executor -> Ray actor -> vLLM's CPU build.

Every figure asserted here is what a user reads off a result: token counts that match the
tokenizer and the requested lengths, and usage that adds up call by call."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from agents import Llm, Parallel, plan_execute
from orchestrator.client import (
    AnswerDelta,
    Client,
    StepFinished,
    StepStarted,
    TaskAccepted,
    TaskCompleted,
)
from tests.polling import wait_until

pytestmark = pytest.mark.slow

INPUT = "Compare two GPU clusters for an agentic coding workload."


@pytest.fixture(scope="module")
def tokenizer(live_server):  # type: ignore[no-untyped-def]
    return AutoTokenizer.from_pretrained(live_server.model_dir)


@pytest.fixture
def client(live_server):  # type: ignore[no-untyped-def]
    with Client(live_server.address, timeout=120) as c:
        yield c


def _encode(tokenizer, text: str) -> list[int]:  # type: ignore[no-untyped-def]
    return list(tokenizer.encode(text, add_special_tokens=False))


def test_plan_execute_usage_adds_up_call_by_call(client, tokenizer) -> None:  # type: ignore[no-untyped-def]
    steps = {"planner": 24, "worker": 16, "synthesizer": 20}
    events = list(client.run_task("plan_execute", INPUT, step_max_tokens=steps, seed=7))

    assert isinstance(events[0], TaskAccepted)
    assert isinstance(events[-1], TaskCompleted)
    result = events[-1].result
    finished = [e.call for e in events if isinstance(e, StepFinished)]
    started = [e for e in events if isinstance(e, StepStarted)]
    program = plan_execute()
    assert len(finished) == len(started) == 5
    assert [c.step for c in finished].count("worker") == 3

    # Synthetic mode: every call generated exactly what its step asked for.
    for call in finished:
        assert call.usage.output_tokens == steps[call.step], call
        assert call.finish_reason.value == "length"

    # The result's usage is the sum of what the engine reported, call by call.
    usage = result.usage
    assert usage.llm_calls == 5
    assert usage.prompt_tokens_total == sum(c.usage.prompt_tokens for c in finished)
    assert usage.output_tokens_total == sum(c.usage.output_tokens for c in finished)
    assert usage.cached_tokens_total == sum(c.usage.cached_prompt_tokens for c in finished)
    assert {c.call_id for c in result.calls} == {c.call_id for c in finished}

    # Prompt tokens match the tokenizer: BOS + system + input + the planner's instruction.
    head = [tokenizer.bos_token_id, *_encode(tokenizer, program.system + "\nUser: ")]
    user = _encode(tokenizer, INPUT)
    planner, workers, _ = program.body
    assert isinstance(planner, Llm) and isinstance(workers, Parallel)
    worker_node = workers.body[0]
    assert isinstance(worker_node, Llm)
    planner_prompt = len(head) + len(user) + len(_encode(tokenizer, planner.instruction))
    by_step = {c.step: c for c in finished}
    assert usage.user_input_tokens == len(user)
    assert by_step["planner"].usage.prompt_tokens == planner_prompt
    # Workers extend the planner's prompt with its output and their own instruction.
    worker = next(c for c in finished if c.step == "worker" and c.branch == 0)
    worker_text = worker_node.instruction.replace("{branch}", "1")
    assert worker.usage.prompt_tokens == planner_prompt + 24 + len(_encode(tokenizer, worker_text))

    # Later calls reuse the shared prefix from vLLM's prefix cache.
    assert by_step["synthesizer"].usage.cached_prompt_tokens > 0
    assert usage.prefix_hit_rate == pytest.approx(
        usage.cached_tokens_total / usage.prompt_tokens_total
    )
    assert usage.final_output_tokens == 20
    assert usage.token_amplification == pytest.approx(
        (usage.prompt_tokens_total + usage.output_tokens_total) / (len(user) + 20)
    )
    assert usage.critical_path_calls == 3  # planner -> worker -> synthesizer
    assert 0 < usage.task_ttft <= usage.task_latency

    # Only the answer streams, and the deltas are the answer.
    deltas = [e for e in events if isinstance(e, AnswerDelta)]
    assert sum(len(d.token_ids) for d in deltas) == 20
    assert "".join(d.text for d in deltas) == result.answer


def test_run_returns_the_same_accounting_as_the_stream(client) -> None:  # type: ignore[no-untyped-def]
    result = client.run("plan_execute", INPUT, max_tokens=8)
    assert result.usage.llm_calls == 5
    assert all(c.usage.output_tokens == 8 for c in result.calls)
    assert result.usage.output_tokens_total == 40


def test_generate_streams_exactly_the_requested_tokens(client, tokenizer) -> None:  # type: ignore[no-untyped-def]
    outputs = list(client.generate("The planner writes a plan.", max_tokens=12, ignore_eos=True))
    final = outputs[-1].call
    assert final is not None
    assert sum(len(o.token_ids) for o in outputs) == 12
    assert final.usage.output_tokens == 12
    assert final.usage.prompt_tokens == len(_encode(tokenizer, "The planner writes a plan."))
    assert final.timings.e2e >= final.timings.ttft > 0
    # One engine delta per decode step: 12 tokens, 11 gaps (the replica coalesces what it
    # streams, but the timings are the engine's own).
    assert len(final.timings.itl) == 11


def test_generate_accepts_token_ids(client) -> None:  # type: ignore[no-untyped-def]
    outputs = list(client.generate([5, 6, 7, 8, 9], max_tokens=4, ignore_eos=True))
    assert outputs[-1].call is not None
    assert outputs[-1].call.usage.prompt_tokens == 5


def _unfinished(client: Client) -> int:
    return sum(r.unfinished_requests for r in client.cluster_status().replicas)


def test_cancelling_a_task_aborts_its_engine_requests(client) -> None:  # type: ignore[no-untyped-def]
    served_before = sum(r.calls_served for r in client.cluster_status().replicas)
    # Long workers: left alone they would keep the engine busy for seconds.
    events = client.run_task(
        "plan_execute", INPUT, step_max_tokens={"planner": 4, "worker": 250, "synthesizer": 4}
    )
    workers_started = 0
    for event in events:
        if isinstance(event, StepStarted) and event.step == "worker":
            workers_started += 1
            if workers_started == 3:
                break
    # The engine is working on the three workers (the third one's request is on its way).
    wait_until(
        lambda: _unfinished(client) == 3, timeout=10.0, interval=0.05, what="three workers running"
    )
    events.close()  # the client goes away: the RPC is cancelled
    wait_until(
        lambda: _unfinished(client) == 0, timeout=10.0, interval=0.05, what="the workers aborted"
    )
    # Only the planner finished: the workers were aborted, not run to completion.
    served_after = sum(r.calls_served for r in client.cluster_status().replicas)
    assert served_after == served_before + 1
    # The server keeps serving.
    assert client.run("plan_execute", INPUT, max_tokens=4).usage.llm_calls == 5


def test_concurrent_seeded_tasks_complete(live_server) -> None:  # type: ignore[no-untyped-def]
    """Many seeded tasks at once, so the engine must split their prefills across steps
    (vLLM 0.32's CPU build crashed on split prefills of seeded requests)."""
    import asyncio

    from orchestrator.client import AsyncClient

    async def main() -> list[tuple[int, ...]]:
        async with AsyncClient(live_server.address, timeout=300) as c:
            results = await asyncio.gather(
                *(c.run("plan_execute", INPUT * 5, seed=i, max_tokens=16) for i in range(32))
            )
        return [tuple(call.usage.output_tokens for call in r.calls) for r in results]

    assert asyncio.run(main()) == [(16,) * 5] * 32


def test_same_seed_same_answer(client) -> None:  # type: ignore[no-untyped-def]
    first = client.run("plan_execute", INPUT, seed=42, max_tokens=12)
    second = client.run("plan_execute", INPUT, seed=42, max_tokens=12)
    other = client.run("plan_execute", INPUT, seed=43, max_tokens=12)
    assert first.answer == second.answer
    assert first.answer != other.answer
