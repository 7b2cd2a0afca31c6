"""Typed plain data that the layers exchange: calls, their usage and timings, tasks and
their events.

Nothing here imports grpc, Ray or vLLM, so the SDK, the executor, the replicas and the
load generator can all share these types. Proto messages never travel past the server
edge; these dataclasses do (and they pickle, so they cross Ray too).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Mode(enum.Enum):
    """How a task's token counts are decided."""

    # Every call generates exactly its max_tokens and fan-outs have their fixed width,
    # so the same request always costs the same tokens (load tests, benchmarks).
    SYNTHETIC = "synthetic"
    # Calls stop at end-of-sequence and fan-out follows the model's plan.
    LIVE = "live"


class FinishReason(enum.Enum):
    LENGTH = "length"  # max_tokens reached
    STOP = "stop"  # end-of-sequence or a stop string
    ABORT = "abort"  # aborted by the orchestrator (cancel or deadline)


class ErrorCode(enum.Enum):
    """Why a task or call failed; the server maps each to a gRPC status code."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNAVAILABLE = "unavailable"  # no healthy replica, or a replica died mid-call
    INTERNAL = "internal"  # the engine failed in a way the caller cannot fix


@dataclass(slots=True, frozen=True)
class Sampling:
    """Sampling parameters of one call."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    # True: generate exactly max_tokens (synthetic mode); False: stop at end-of-sequence.
    ignore_eos: bool = False
    seed: int | None = None


@dataclass(slots=True, frozen=True)
class CallRequest:
    """One generation request for one replica."""

    call_id: str
    # Token ids, not text: decoding and re-encoding text does not preserve token counts,
    # and a growing agent context must be an exact prefix of later prompts.
    prompt_token_ids: tuple[int, ...]
    sampling: Sampling
    # Lower is served first when the engine runs a priority scheduler; 0 otherwise.
    priority: int = 0
    # The task's remaining budget at dispatch, seconds; the engine aborts the call when
    # it runs out (the executor also cancels it). None: no deadline.
    deadline_s: float | None = None
    # The task the call belongs to ("" for a plain generation): routing keeps a task's
    # steps together.
    task_id: str = ""


@dataclass(slots=True, frozen=True)
class CallDelta:
    """Newly generated output of a streaming call."""

    token_ids: tuple[int, ...]
    text: str


@dataclass(slots=True, frozen=True)
class CallUsage:
    prompt_tokens: int
    cached_prompt_tokens: int  # prompt tokens served from the prefix cache
    output_tokens: int


@dataclass(slots=True, frozen=True)
class CallTimings:
    """Engine-side timings in seconds (docs/metrics.md, per call)."""

    queue_time: float  # engine arrival -> first scheduled
    ttft: float  # engine arrival -> first output token
    tpot: float | None  # (e2e - ttft) / (output_tokens - 1); None when output_tokens <= 1
    itl: tuple[float, ...]  # gaps between consecutive output deltas
    e2e: float  # engine arrival -> last output token


@dataclass(slots=True, frozen=True)
class CallResult:
    """What a replica returns for a finished call."""

    call_id: str
    token_ids: tuple[int, ...]
    text: str
    finish_reason: FinishReason
    usage: CallUsage
    timings: CallTimings


@dataclass(slots=True, frozen=True)
class CallRecord:
    """A finished call as the task's accounting sees it."""

    call_id: str
    step: str  # step name in the program
    branch: int  # index within a fan-out; 0 when the step does not fan out
    replica: str
    usage: CallUsage
    timings: CallTimings
    finish_reason: FinishReason
    after: tuple[str, ...]  # call_ids this call depended on (the executed graph's edges)
    # Orchestrator's own dispatch -> result time; minus timings.e2e = its overhead.
    dispatch_to_result: float


@dataclass(slots=True, frozen=True)
class ToolRecord:
    """A finished tool step."""

    tool_id: str
    step: str  # step name in the program
    branch: int
    tool: str  # the registered tool's name, or "simulated"
    ok: bool  # False: the tool reported an error (the agent still sees it)
    elapsed: float  # seconds, as the executor measured it
    result_tokens: int  # tokens the result added to the task's context
    after: tuple[str, ...]  # ids of the calls and tools this one depended on


@dataclass(slots=True, frozen=True)
class TaskUsage:
    """Per-task accounting, each field exactly as docs/metrics.md defines it."""

    user_input_tokens: int
    final_output_tokens: int
    llm_calls: int
    retried_calls: int
    tool_calls: int
    prompt_tokens_total: int
    cached_tokens_total: int
    output_tokens_total: int
    token_amplification: float
    output_amplification: float
    prefix_hit_rate: float
    critical_path_calls: int
    task_ttft: float  # accepted -> first answer token sent; 0.0 if no answer token
    task_latency: float  # accepted -> completed
    orchestration_overhead: float


@dataclass(slots=True, frozen=True)
class TaskSpec:
    """A validated task request, as the executor receives it."""

    agent: str
    input: str
    mode: Mode = Mode.SYNTHETIC
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = None  # cap on every call's output length
    ignore_eos: bool | None = None  # None: the mode decides
    seed: int | None = None
    deadline_s: float | None = None  # budget from acceptance
    # Output tokens per call of a named step; overrides the program's default.
    step_max_tokens: tuple[tuple[str, int], ...] = ()


@dataclass(slots=True, frozen=True)
class TaskResult:
    task_id: str
    agent: str
    answer: str
    usage: TaskUsage
    calls: tuple[CallRecord, ...]
    tools: tuple[ToolRecord, ...] = ()


# Task events, in the order a client sees them.


@dataclass(slots=True, frozen=True)
class TaskAccepted:
    task_id: str
    agent: str


class StepKind(enum.Enum):
    LLM = "llm"
    TOOL = "tool"


@dataclass(slots=True, frozen=True)
class StepStarted:
    call_id: str  # the call's id, or the tool step's id
    step: str
    branch: int
    replica: str  # "" for a tool step
    kind: StepKind = StepKind.LLM


@dataclass(slots=True, frozen=True)
class StepFinished:
    call: CallRecord | None  # set for an LLM step
    tool: ToolRecord | None = None  # set for a tool step


@dataclass(slots=True, frozen=True)
class AnswerDelta:
    text: str
    token_ids: tuple[int, ...]


@dataclass(slots=True, frozen=True)
class TaskCompleted:
    result: TaskResult


TaskEvent = TaskAccepted | StepStarted | StepFinished | AnswerDelta | TaskCompleted


class ReplicaState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    STOPPED = "stopped"


@dataclass(slots=True, frozen=True)
class EngineStats:
    """Live load of one engine, read inside the replica (routing's view of it)."""

    unfinished_requests: int  # requests the engine holds (waiting + running)
    calls_served: int  # calls that finished (aborted ones excluded)
    output_tokens_served: int
    waiting_requests: int = 0  # admitted to the engine, not yet scheduled (queue depth)
    running_requests: int = 0  # in the running batch
    kv_usage: float = 0.0  # fraction of the KV cache's blocks in use, 0..1
    # Cumulative prompt tokens looked up in the prefix cache and how many of them hit.
    prefix_queries: int = 0
    prefix_hits: int = 0
    kv_block_tokens: int = 16  # tokens per KV block
    kv_capacity_blocks: int = 0  # KV blocks the engine has (0: unknown)
    # Cumulative prefix-cache blocks evicted to make room (0 when the engine does not
    # report it; vLLM's stats do not).
    evicted_blocks: int = 0

    @property
    def prefix_hit_rate(self) -> float:
        return self.prefix_hits / self.prefix_queries if self.prefix_queries else 0.0


@dataclass(slots=True, frozen=True)
class ReplicaStatus:
    name: str
    state: ReplicaState
    engine: str  # "vllm"
    model: str
    node: str  # Ray node id hosting the replica
    unfinished_requests: int
    in_flight_calls: int  # calls the orchestrator has outstanding on this replica
    calls_served: int
    output_tokens_served: int
    last_error: str = ""
    waiting_requests: int = 0  # engine queue depth
    running_requests: int = 0
    kv_usage: float = 0.0  # 0..1
    prefix_hit_rate: float = 0.0  # the engine's, cumulative
    replacements: int = 0  # times the pool replaced a dead actor of this replica


@dataclass(slots=True, frozen=True)
class ClusterStatus:
    replicas: tuple[ReplicaStatus, ...]
    model: str
    max_model_len: int


@dataclass(slots=True, frozen=True)
class AgentStepInfo:
    name: str
    kind: str  # llm | tool | parallel | loop
    path: str  # where it sits in the program, e.g. "body[1].body[0]"
    mean_tokens: float  # llm: mean max_tokens; tool: mean result tokens; else 0
    mean_count: float  # parallel: mean branches; loop: mean iterations; else 1


@dataclass(slots=True, frozen=True)
class AgentInfo:
    name: str
    description: str
    source: str  # the published shape the program follows
    steps: tuple[AgentStepInfo, ...]
    # Per task in synthetic mode, by Monte Carlo over the program (estimate.py), for a
    # 32-token input:
    expected_llm_calls: float
    expected_token_amplification: float


@dataclass(slots=True, frozen=True)
class GenerateSpec:
    """A validated plain generation request."""

    prompt: str  # used when prompt_token_ids is empty
    prompt_token_ids: tuple[int, ...]
    sampling: Sampling
    deadline_s: float | None = None


@dataclass(slots=True, frozen=True)
class GenerateOutput:
    """One chunk of a Generate stream; `call` is set on the last one only."""

    text: str
    token_ids: tuple[int, ...]
    call: CallRecord | None = field(default=None)
