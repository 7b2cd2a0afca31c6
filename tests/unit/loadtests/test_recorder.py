"""TaskRecorder: a RunTask event stream folded into the sample and step entries a user
reports, with client-side TTFT and latency."""

from __future__ import annotations

from loadtests.metrics import StepEntry, StepFold, TaskRecorder
from orchestrator.api.v1 import inflection_pb2 as pb
from orchestrator.convert import record_from_pb, task_usage_from_pb, tool_from_pb


def call_event(step: str, e2e: float, output: int, tpot: float | None) -> pb.TaskEvent:
    timings = pb.CallTimings(e2e=e2e)
    if tpot is not None:
        timings.tpot = tpot
    record = pb.CallRecord(
        step=step, usage=pb.CallUsage(output_tokens=output, prompt_tokens=10), timings=timings
    )
    return pb.TaskEvent(step_finished=pb.StepFinished(call=record))


def test_stream_to_sample() -> None:
    recorder = TaskRecorder("plan_execute", sent_at=100.0)
    usage = pb.TaskUsage(
        user_input_tokens=32,
        final_output_tokens=16,
        llm_calls=2,
        prompt_tokens_total=400,
        cached_tokens_total=100,
        output_tokens_total=96,
        token_amplification=10.33,
    )
    events = [
        (100.1, pb.TaskEvent(accepted=pb.TaskAccepted(task_id="t", agent="plan_execute"))),
        (100.2, pb.TaskEvent(step_started=pb.StepStarted(step="planner"))),
        (100.5, call_event("planner", 0.3, 80, 0.004)),
        (
            100.6,
            pb.TaskEvent(
                step_finished=pb.StepFinished(tool=pb.ToolRecord(step="search", elapsed=0.05))
            ),
        ),
        (100.7, pb.TaskEvent(answer_delta=pb.AnswerDelta(text="a"))),
        (100.8, pb.TaskEvent(answer_delta=pb.AnswerDelta(text="b"))),
        (100.9, call_event("answer", 0.2, 1, None)),
        (101.0, pb.TaskEvent(completed=pb.TaskResult(usage=usage))),
    ]
    entries = [e for t, msg in events if (e := recorder.on_event(msg, t)) is not None]
    assert entries == [
        StepEntry("planner", 0.3, 80),
        StepEntry("search", 0.05, 0),
        StepEntry("answer", 0.2, 1),
    ]
    assert recorder.result is not None
    sample = recorder.sample(101.1, 5000.0, "OK", recorder.result.usage)
    assert sample.ok and sample.status == "OK" and sample.completed_at == 5000.0
    assert abs(sample.task_ttft - 0.6) < 1e-9  # type: ignore[operator]
    assert abs(sample.task_latency - 1.0) < 1e-9
    assert sample.call_tpots == (0.004,)
    assert (sample.llm_calls, sample.prompt_tokens, sample.cached_tokens) == (2, 400, 100)
    assert (sample.output_tokens, sample.token_amplification) == (96, 10.33)


def test_failure_before_acceptance_keeps_partial_usage() -> None:
    recorder = TaskRecorder("react", sent_at=10.0)
    sample = recorder.sample(12.0, 99.0, "DEADLINE_EXCEEDED", pb.TaskUsage(llm_calls=3))
    assert not sample.ok and sample.status == "DEADLINE_EXCEEDED"
    assert sample.llm_calls == 3 and sample.task_ttft is None and sample.task_latency == 2.0
    empty = TaskRecorder("react", sent_at=10.0).sample(11.0, 99.0, "UNAVAILABLE", None)
    assert empty.output_tokens == 0 and empty.token_amplification == 0.0


def test_domain_steps_fold_as_their_grpc_messages() -> None:
    """The OpenAI target's user folds the driver's StepFinished records (domain objects)
    with the same StepFold as the gRPC user folds their messages: the same samples."""
    timings = pb.CallTimings(queue_time=0.01, ttft=0.05, e2e=0.4, tpot=0.012)
    call = pb.CallRecord(
        step="planner",
        branch=2,
        replica="replica-1",
        usage=pb.CallUsage(prompt_tokens=120, cached_prompt_tokens=64, output_tokens=30),
        timings=timings,
        finish_reason="stop",
    )
    tool = pb.ToolRecord(step="search", tool="web", ok=True, elapsed=0.2, result_tokens=40)
    usage = pb.TaskUsage(llm_calls=1, prompt_tokens_total=120, token_amplification=4.0)
    grpc = TaskRecorder("react", sent_at=100.0)
    grpc.on_event(pb.TaskEvent(step_finished=pb.StepFinished(call=call)), 100.5)
    grpc.on_event(pb.TaskEvent(step_finished=pb.StepFinished(tool=tool)), 100.9)
    domain = StepFold("react", sent_at=100.0)
    record = record_from_pb(call)
    entries = [
        domain.add_llm(record, record.timings.tpot, record.finish_reason.value, 100.5),
        domain.add_tool(tool_from_pb(tool), 100.9),
    ]
    assert entries == [StepEntry("planner", 0.4, 30), StepEntry("search", 0.2, 0)]
    expected = grpc.sample(101.0, 5000.0, "OK", usage)
    got = domain.task_sample(
        5000.0, "OK", task_usage_from_pb(usage), task_ttft=None, task_latency=1.0
    )
    assert got == expected
    assert got.calls[0].finish == "stop" and got.calls[1].finish == "ok"
    bare = StepFold("react", sent_at=100.0, keep_calls=False)
    bare.add_llm(record, record.timings.tpot, "stop", 100.5)
    assert bare.calls == [] and bare.tpots == [0.012]
