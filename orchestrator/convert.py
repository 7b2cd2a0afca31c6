"""Conversion between the API's protobuf messages and the domain dataclasses.

The server converts at its edge; the SDK converts what it receives, so both sides of the
wire speak `orchestrator.domain` types. Importing this module imports protobuf only.
"""

from __future__ import annotations

from orchestrator.api.v1 import inflection_pb2 as pb
from orchestrator.domain import (
    AgentInfo,
    AgentStepInfo,
    AnswerDelta,
    CallRecord,
    CallTimings,
    CallUsage,
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

# Longest client value quoted back in a status message: enough to recognise it. A status
# message travels in a trailer, and gRPC clients refuse trailers over 8 KiB by default
# (RESOURCE_EXHAUSTED instead of the real status), so echoes must stay short.
ECHO_CHARS = 80


def shorten(value: str, limit: int = ECHO_CHARS) -> str:
    """`value` cut to `limit` characters for an error message, saying how long it was."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}… ({len(value)} chars)"


_REPLICA_STATE_TO_PB = {
    ReplicaState.STARTING: pb.REPLICA_STATE_STARTING,
    ReplicaState.READY: pb.REPLICA_STATE_READY,
    ReplicaState.UNHEALTHY: pb.REPLICA_STATE_UNHEALTHY,
    ReplicaState.STOPPED: pb.REPLICA_STATE_STOPPED,
}
_REPLICA_STATE_FROM_PB = {v: k for k, v in _REPLICA_STATE_TO_PB.items()}


def usage_to_pb(usage: CallUsage) -> pb.CallUsage:
    return pb.CallUsage(
        prompt_tokens=usage.prompt_tokens,
        cached_prompt_tokens=usage.cached_prompt_tokens,
        output_tokens=usage.output_tokens,
    )


def usage_from_pb(msg: pb.CallUsage) -> CallUsage:
    return CallUsage(
        prompt_tokens=msg.prompt_tokens,
        cached_prompt_tokens=msg.cached_prompt_tokens,
        output_tokens=msg.output_tokens,
    )


def record_to_pb(record: CallRecord) -> pb.CallRecord:
    t = record.timings
    timings = pb.CallTimings(
        queue_time=t.queue_time,
        ttft=t.ttft,
        itl=list(t.itl),
        e2e=t.e2e,
        dispatch_to_result=record.dispatch_to_result,
    )
    if t.tpot is not None:
        timings.tpot = t.tpot
    return pb.CallRecord(
        call_id=record.call_id,
        step=record.step,
        branch=record.branch,
        replica=record.replica,
        usage=usage_to_pb(record.usage),
        timings=timings,
        finish_reason=record.finish_reason.value,
        after=list(record.after),
    )


def _finish_reason(value: str) -> FinishReason:
    try:
        return FinishReason(value)
    except ValueError:
        raise ValueError(f"call record with an unknown finish_reason {shorten(value)!r}") from None


def record_from_pb(msg: pb.CallRecord) -> CallRecord:
    t = msg.timings
    return CallRecord(
        call_id=msg.call_id,
        step=msg.step,
        branch=msg.branch,
        replica=msg.replica,
        usage=usage_from_pb(msg.usage),
        timings=CallTimings(
            queue_time=t.queue_time,
            ttft=t.ttft,
            tpot=t.tpot if t.HasField("tpot") else None,
            itl=tuple(t.itl),
            e2e=t.e2e,
        ),
        finish_reason=_finish_reason(msg.finish_reason),
        after=tuple(msg.after),
        dispatch_to_result=t.dispatch_to_result,
    )


def tool_to_pb(record: ToolRecord) -> pb.ToolRecord:
    return pb.ToolRecord(
        tool_id=record.tool_id,
        step=record.step,
        branch=record.branch,
        tool=record.tool,
        ok=record.ok,
        elapsed=record.elapsed,
        result_tokens=record.result_tokens,
        after=list(record.after),
    )


def tool_from_pb(msg: pb.ToolRecord) -> ToolRecord:
    return ToolRecord(
        tool_id=msg.tool_id,
        step=msg.step,
        branch=msg.branch,
        tool=msg.tool,
        ok=msg.ok,
        elapsed=msg.elapsed,
        result_tokens=msg.result_tokens,
        after=tuple(msg.after),
    )


_STEP_KIND_TO_PB = {StepKind.LLM: pb.STEP_KIND_LLM, StepKind.TOOL: pb.STEP_KIND_TOOL}
_STEP_KIND_FROM_PB = {v: k for k, v in _STEP_KIND_TO_PB.items()}

_TASK_USAGE_FIELDS = tuple(TaskUsage.__dataclass_fields__)


def task_usage_to_pb(usage: TaskUsage) -> pb.TaskUsage:
    return pb.TaskUsage(**{name: getattr(usage, name) for name in _TASK_USAGE_FIELDS})


def task_usage_from_pb(msg: pb.TaskUsage) -> TaskUsage:
    return TaskUsage(**{name: getattr(msg, name) for name in _TASK_USAGE_FIELDS})


def task_result_to_pb(result: TaskResult) -> pb.TaskResult:
    return pb.TaskResult(
        task_id=result.task_id,
        agent=result.agent,
        answer=result.answer,
        usage=task_usage_to_pb(result.usage),
        calls=[record_to_pb(c) for c in result.calls],
        tools=[tool_to_pb(t) for t in result.tools],
    )


def task_result_from_pb(msg: pb.TaskResult) -> TaskResult:
    return TaskResult(
        task_id=msg.task_id,
        agent=msg.agent,
        answer=msg.answer,
        usage=task_usage_from_pb(msg.usage),
        calls=tuple(record_from_pb(c) for c in msg.calls),
        tools=tuple(tool_from_pb(t) for t in msg.tools),
    )


def event_to_pb(event: TaskEvent) -> pb.TaskEvent:
    if isinstance(event, TaskAccepted):
        return pb.TaskEvent(accepted=pb.TaskAccepted(task_id=event.task_id, agent=event.agent))
    if isinstance(event, StepStarted):
        return pb.TaskEvent(
            step_started=pb.StepStarted(
                call_id=event.call_id,
                step=event.step,
                branch=event.branch,
                replica=event.replica,
                kind=_STEP_KIND_TO_PB[event.kind],
            )
        )
    if isinstance(event, StepFinished):
        if event.call is not None:
            return pb.TaskEvent(step_finished=pb.StepFinished(call=record_to_pb(event.call)))
        assert event.tool is not None
        return pb.TaskEvent(step_finished=pb.StepFinished(tool=tool_to_pb(event.tool)))
    if isinstance(event, AnswerDelta):
        return pb.TaskEvent(
            answer_delta=pb.AnswerDelta(text=event.text, token_ids=list(event.token_ids))
        )
    return pb.TaskEvent(completed=task_result_to_pb(event.result))


def event_from_pb(msg: pb.TaskEvent) -> TaskEvent:
    kind = msg.WhichOneof("event")
    if kind == "accepted":
        return TaskAccepted(task_id=msg.accepted.task_id, agent=msg.accepted.agent)
    if kind == "step_started":
        s = msg.step_started
        return StepStarted(
            call_id=s.call_id,
            step=s.step,
            branch=s.branch,
            replica=s.replica,
            kind=_STEP_KIND_FROM_PB.get(s.kind, StepKind.LLM),
        )
    if kind == "step_finished":
        finished = msg.step_finished
        if finished.HasField("tool"):
            return StepFinished(call=None, tool=tool_from_pb(finished.tool))
        return StepFinished(record_from_pb(finished.call))
    if kind == "answer_delta":
        return AnswerDelta(text=msg.answer_delta.text, token_ids=tuple(msg.answer_delta.token_ids))
    if kind == "completed":
        return TaskCompleted(task_result_from_pb(msg.completed))
    raise ValueError(f"task event with no known payload ({kind!r})")


def generate_output_to_pb(output: GenerateOutput) -> pb.GenerateChunk:
    chunk = pb.GenerateChunk(text=output.text, token_ids=list(output.token_ids))
    if output.call is not None:
        chunk.call.CopyFrom(record_to_pb(output.call))
    return chunk


def generate_output_from_pb(msg: pb.GenerateChunk) -> GenerateOutput:
    return GenerateOutput(
        text=msg.text,
        token_ids=tuple(msg.token_ids),
        call=record_from_pb(msg.call) if msg.HasField("call") else None,
    )


_AGENT_STEP_FIELDS = tuple(AgentStepInfo.__dataclass_fields__)


def agent_to_pb(agent: AgentInfo) -> pb.AgentInfo:
    return pb.AgentInfo(
        name=agent.name,
        description=agent.description,
        source=agent.source,
        steps=[
            pb.AgentStep(**{name: getattr(s, name) for name in _AGENT_STEP_FIELDS})
            for s in agent.steps
        ],
        expected_llm_calls=agent.expected_llm_calls,
        expected_token_amplification=agent.expected_token_amplification,
    )


def agent_from_pb(msg: pb.AgentInfo) -> AgentInfo:
    return AgentInfo(
        name=msg.name,
        description=msg.description,
        source=msg.source,
        steps=tuple(
            AgentStepInfo(**{name: getattr(s, name) for name in _AGENT_STEP_FIELDS})
            for s in msg.steps
        ),
        expected_llm_calls=msg.expected_llm_calls,
        expected_token_amplification=msg.expected_token_amplification,
    )


# Every ReplicaStatus field but `state` has the same name and type on both sides.
_REPLICA_FIELDS = tuple(f for f in ReplicaStatus.__dataclass_fields__ if f != "state")


def cluster_to_pb(status: ClusterStatus) -> pb.ClusterStatus:
    return pb.ClusterStatus(
        replicas=[
            pb.ReplicaStatus(
                state=_REPLICA_STATE_TO_PB[r.state],
                **{name: getattr(r, name) for name in _REPLICA_FIELDS},
            )
            for r in status.replicas
        ],
        max_model_len=status.max_model_len,
        model=status.model,
    )


def cluster_from_pb(msg: pb.ClusterStatus) -> ClusterStatus:
    return ClusterStatus(
        replicas=tuple(
            ReplicaStatus(
                state=_REPLICA_STATE_FROM_PB.get(r.state, ReplicaState.UNHEALTHY),
                **{name: getattr(r, name) for name in _REPLICA_FIELDS},
            )
            for r in msg.replicas
        ),
        model=msg.model,
        max_model_len=msg.max_model_len,
    )
