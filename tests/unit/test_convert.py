"""Domain <-> proto conversion: what the server sends is what the SDK gets back."""

from __future__ import annotations

from typing import TypeVar

import pytest
from google.protobuf.message import Message

from orchestrator.api.v1 import inflection_pb2 as pb
from orchestrator.convert import (
    agent_from_pb,
    agent_to_pb,
    cluster_from_pb,
    cluster_to_pb,
    event_from_pb,
    event_to_pb,
    generate_output_from_pb,
    generate_output_to_pb,
    record_from_pb,
    record_to_pb,
    shorten,
    task_result_from_pb,
    task_result_to_pb,
)
from orchestrator.domain import (
    AgentInfo,
    AgentStepInfo,
    AnswerDelta,
    CallRecord,
    ClusterStatus,
    FinishReason,
    GenerateOutput,
    ReplicaState,
    ReplicaStatus,
    StepFinished,
    StepKind,
    StepStarted,
    TaskAccepted,
    TaskCompleted,
    TaskEvent,
    TaskResult,
    TaskUsage,
    ToolRecord,
)

from .factories import call_record, tool_record


def usage() -> TaskUsage:
    return TaskUsage(
        user_input_tokens=12,
        final_output_tokens=64,
        llm_calls=5,
        retried_calls=1,
        tool_calls=2,
        prompt_tokens_total=5_000_000_000,  # beyond 32 bits: the proto field is uint64
        cached_tokens_total=1234,
        output_tokens_total=272,
        token_amplification=13.25,
        output_amplification=4.25,
        prefix_hit_rate=0.625,
        critical_path_calls=3,
        task_ttft=0.75,
        task_latency=2.5,
        orchestration_overhead=-0.125,
    )


def records() -> tuple[CallRecord, ...]:
    return (
        call_record("t-planner-0", step="planner", output=1, tpot=None),
        call_record("t-worker-1", ["t-planner-0"], step="worker", branch=1, cached=7, tpot=0.5),
        CallRecord(
            call_id="t-synth-0",
            step="synthesizer",
            branch=0,
            replica="replica-1",
            usage=call_record("x").usage,
            timings=call_record("x", tpot=0.0).timings,
            finish_reason=FinishReason.ABORT,
            after=("t-planner-0", "t-worker-1"),
            dispatch_to_result=0.25,
        ),
    )


def tools() -> tuple[ToolRecord, ...]:
    return (
        tool_record("t-lookup-1", ["t-planner-0"], elapsed=0.25, result_tokens=40),
        tool_record("t-calc-2", (), tool="calculator", ok=False, result_tokens=0, elapsed=0.0),
    )


def result() -> TaskResult:
    return TaskResult(
        task_id="task-1",
        agent="plan_execute",
        answer="héllo ✓",
        usage=usage(),
        calls=records(),
        tools=tools(),
    )


M = TypeVar("M", bound=Message)


def wire(message: M) -> M:
    """Through bytes, as a client would see it."""
    return type(message).FromString(message.SerializeToString())


def test_task_result_round_trips() -> None:
    back = task_result_from_pb(wire(task_result_to_pb(result())))
    assert back == result()


def test_tpot_none_and_zero_stay_distinct() -> None:
    none, zero = records()[0], records()[2]
    assert none.timings.tpot is None and zero.timings.tpot == 0.0
    assert record_from_pb(record_to_pb(none)).timings.tpot is None
    assert record_from_pb(record_to_pb(zero)).timings.tpot == 0.0
    assert not record_to_pb(none).timings.HasField("tpot")


@pytest.mark.parametrize(
    "event",
    [
        TaskAccepted(task_id="task-1", agent="plan_execute"),
        StepStarted(call_id="t-worker-2", step="worker", branch=2, replica="replica-0"),
        StepStarted(call_id="t-lookup-1", step="lookup", branch=1, replica="", kind=StepKind.TOOL),
        StepFinished(records()[1]),
        StepFinished(records()[0]),
        StepFinished(call=None, tool=tools()[0]),
        StepFinished(call=None, tool=tools()[1]),
        AnswerDelta(text="Hel", token_ids=(72, 101, 108)),
        AnswerDelta(text="", token_ids=()),
        TaskCompleted(result()),
    ],
    ids=lambda e: type(e).__name__,
)
def test_every_task_event_round_trips(event: TaskEvent) -> None:
    assert event_from_pb(wire(event_to_pb(event))) == event


def test_event_without_payload_is_an_error() -> None:
    with pytest.raises(ValueError, match="no known payload"):
        event_from_pb(pb.TaskEvent())


def test_shorten_keeps_short_values_and_cuts_long_ones_saying_how_long() -> None:
    assert shorten("plan_execute") == "plan_execute"
    assert shorten("x" * 80) == "x" * 80
    assert shorten("x" * 1_000_000) == "x" * 80 + "… (1000000 chars)"
    assert shorten("abcdef", 3) == "abc… (6 chars)"


def test_an_unknown_finish_reason_is_an_error_with_a_short_message() -> None:
    message = record_to_pb(records()[0])
    message.finish_reason = "z" * 100_000
    with pytest.raises(ValueError, match="unknown finish_reason") as failed:
        record_from_pb(message)
    assert len(str(failed.value)) < 200


def test_a_step_started_without_a_kind_reads_as_an_llm_step() -> None:
    # Servers from before tool steps existed never set the field.
    message = pb.TaskEvent(step_started=pb.StepStarted(call_id="c", step="s", replica="r"))
    event = event_from_pb(message)
    assert isinstance(event, StepStarted)
    assert event.kind is StepKind.LLM


def test_a_task_result_without_tools_round_trips() -> None:
    plain = TaskResult("task-2", "plan_execute", "ok", usage(), records())
    assert task_result_from_pb(wire(task_result_to_pb(plain))) == plain


@pytest.mark.parametrize(
    "output",
    [
        GenerateOutput(text="abc", token_ids=(97, 98, 99)),
        GenerateOutput(text="", token_ids=(), call=records()[1]),
    ],
)
def test_generate_output_round_trips(output: GenerateOutput) -> None:
    assert generate_output_from_pb(wire(generate_output_to_pb(output))) == output


def test_cluster_status_round_trips_every_replica_state() -> None:
    status = ClusterStatus(
        replicas=tuple(
            ReplicaStatus(
                name=f"replica-{i}",
                state=state,
                engine="vllm",
                model="tiny",
                node=f"node-{i}",
                unfinished_requests=i,
                in_flight_calls=2 * i,
                calls_served=10**10 + i,
                output_tokens_served=10**11,
                last_error="boom" if state is ReplicaState.UNHEALTHY else "",
            )
            for i, state in enumerate(ReplicaState)
        ),
        model="tiny",
        max_model_len=4096,
    )
    assert cluster_from_pb(wire(cluster_to_pb(status))) == status


def test_unknown_replica_state_reads_as_unhealthy() -> None:
    message = pb.ClusterStatus(replicas=[pb.ReplicaStatus(name="r", state=0)])
    assert cluster_from_pb(message).replicas[0].state is ReplicaState.UNHEALTHY


def test_agent_info_round_trips() -> None:
    agent = AgentInfo(
        name="plan_execute",
        description="planner -> workers -> synthesizer",
        source="Wang et al. 2023",
        steps=(
            AgentStepInfo("planner", "llm", "body[0]", mean_tokens=64.0, mean_count=1.0),
            AgentStepInfo("workers", "parallel", "body[1]", mean_tokens=0.0, mean_count=3.5),
            AgentStepInfo("worker", "llm", "body[1].body[0]", mean_tokens=48.25, mean_count=1.0),
            AgentStepInfo("lookup", "tool", "body[2]", mean_tokens=400.0, mean_count=1.0),
            AgentStepInfo("rounds", "loop", "body[3]", mean_tokens=0.0, mean_count=2.0),
            AgentStepInfo("synthesizer", "llm", "body[4]", mean_tokens=64.0, mean_count=1.0),
        ),
        expected_llm_calls=5.75,
        expected_token_amplification=12.5,
    )
    assert agent_from_pb(wire(agent_to_pb(agent))) == agent
