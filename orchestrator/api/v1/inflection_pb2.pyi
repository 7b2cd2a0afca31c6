from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_SYNTHETIC: _ClassVar[Mode]
    MODE_LIVE: _ClassVar[Mode]

class StepKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_KIND_UNSPECIFIED: _ClassVar[StepKind]
    STEP_KIND_LLM: _ClassVar[StepKind]
    STEP_KIND_TOOL: _ClassVar[StepKind]

class ReplicaState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICA_STATE_UNSPECIFIED: _ClassVar[ReplicaState]
    REPLICA_STATE_STARTING: _ClassVar[ReplicaState]
    REPLICA_STATE_READY: _ClassVar[ReplicaState]
    REPLICA_STATE_UNHEALTHY: _ClassVar[ReplicaState]
    REPLICA_STATE_STOPPED: _ClassVar[ReplicaState]
MODE_UNSPECIFIED: Mode
MODE_SYNTHETIC: Mode
MODE_LIVE: Mode
STEP_KIND_UNSPECIFIED: StepKind
STEP_KIND_LLM: StepKind
STEP_KIND_TOOL: StepKind
REPLICA_STATE_UNSPECIFIED: ReplicaState
REPLICA_STATE_STARTING: ReplicaState
REPLICA_STATE_READY: ReplicaState
REPLICA_STATE_UNHEALTHY: ReplicaState
REPLICA_STATE_STOPPED: ReplicaState

class SamplingOptions(_message.Message):
    __slots__ = ("temperature", "top_p", "max_tokens", "ignore_eos")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    IGNORE_EOS_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    max_tokens: int
    ignore_eos: bool
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., max_tokens: _Optional[int] = ..., ignore_eos: _Optional[bool] = ...) -> None: ...

class TaskRequest(_message.Message):
    __slots__ = ("agent", "input", "sampling", "seed", "deadline_ms", "mode", "step_max_tokens")
    class StepMaxTokensEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    AGENT_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    STEP_MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    agent: str
    input: str
    sampling: SamplingOptions
    seed: int
    deadline_ms: int
    mode: Mode
    step_max_tokens: _containers.ScalarMap[str, int]
    def __init__(self, agent: _Optional[str] = ..., input: _Optional[str] = ..., sampling: _Optional[_Union[SamplingOptions, _Mapping]] = ..., seed: _Optional[int] = ..., deadline_ms: _Optional[int] = ..., mode: _Optional[_Union[Mode, str]] = ..., step_max_tokens: _Optional[_Mapping[str, int]] = ...) -> None: ...

class CallUsage(_message.Message):
    __slots__ = ("prompt_tokens", "cached_prompt_tokens", "output_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    cached_prompt_tokens: int
    output_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., cached_prompt_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ...) -> None: ...

class CallTimings(_message.Message):
    __slots__ = ("queue_time", "ttft", "tpot", "itl", "e2e", "dispatch_to_result")
    QUEUE_TIME_FIELD_NUMBER: _ClassVar[int]
    TTFT_FIELD_NUMBER: _ClassVar[int]
    TPOT_FIELD_NUMBER: _ClassVar[int]
    ITL_FIELD_NUMBER: _ClassVar[int]
    E2E_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_TO_RESULT_FIELD_NUMBER: _ClassVar[int]
    queue_time: float
    ttft: float
    tpot: float
    itl: _containers.RepeatedScalarFieldContainer[float]
    e2e: float
    dispatch_to_result: float
    def __init__(self, queue_time: _Optional[float] = ..., ttft: _Optional[float] = ..., tpot: _Optional[float] = ..., itl: _Optional[_Iterable[float]] = ..., e2e: _Optional[float] = ..., dispatch_to_result: _Optional[float] = ...) -> None: ...

class CallRecord(_message.Message):
    __slots__ = ("call_id", "step", "branch", "replica", "usage", "timings", "finish_reason", "after")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    BRANCH_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    step: str
    branch: int
    replica: str
    usage: CallUsage
    timings: CallTimings
    finish_reason: str
    after: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, call_id: _Optional[str] = ..., step: _Optional[str] = ..., branch: _Optional[int] = ..., replica: _Optional[str] = ..., usage: _Optional[_Union[CallUsage, _Mapping]] = ..., timings: _Optional[_Union[CallTimings, _Mapping]] = ..., finish_reason: _Optional[str] = ..., after: _Optional[_Iterable[str]] = ...) -> None: ...

class ToolRecord(_message.Message):
    __slots__ = ("tool_id", "step", "branch", "tool", "ok", "elapsed", "result_tokens", "after")
    TOOL_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    BRANCH_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_FIELD_NUMBER: _ClassVar[int]
    RESULT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    tool_id: str
    step: str
    branch: int
    tool: str
    ok: bool
    elapsed: float
    result_tokens: int
    after: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tool_id: _Optional[str] = ..., step: _Optional[str] = ..., branch: _Optional[int] = ..., tool: _Optional[str] = ..., ok: _Optional[bool] = ..., elapsed: _Optional[float] = ..., result_tokens: _Optional[int] = ..., after: _Optional[_Iterable[str]] = ...) -> None: ...

class TaskUsage(_message.Message):
    __slots__ = ("user_input_tokens", "final_output_tokens", "llm_calls", "retried_calls", "tool_calls", "prompt_tokens_total", "cached_tokens_total", "output_tokens_total", "token_amplification", "output_amplification", "prefix_hit_rate", "critical_path_calls", "task_ttft", "task_latency", "orchestration_overhead")
    USER_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINAL_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LLM_CALLS_FIELD_NUMBER: _ClassVar[int]
    RETRIED_CALLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CACHED_TOKENS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    TOKEN_AMPLIFICATION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_AMPLIFICATION_FIELD_NUMBER: _ClassVar[int]
    PREFIX_HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_PATH_CALLS_FIELD_NUMBER: _ClassVar[int]
    TASK_TTFT_FIELD_NUMBER: _ClassVar[int]
    TASK_LATENCY_FIELD_NUMBER: _ClassVar[int]
    ORCHESTRATION_OVERHEAD_FIELD_NUMBER: _ClassVar[int]
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
    task_ttft: float
    task_latency: float
    orchestration_overhead: float
    def __init__(self, user_input_tokens: _Optional[int] = ..., final_output_tokens: _Optional[int] = ..., llm_calls: _Optional[int] = ..., retried_calls: _Optional[int] = ..., tool_calls: _Optional[int] = ..., prompt_tokens_total: _Optional[int] = ..., cached_tokens_total: _Optional[int] = ..., output_tokens_total: _Optional[int] = ..., token_amplification: _Optional[float] = ..., output_amplification: _Optional[float] = ..., prefix_hit_rate: _Optional[float] = ..., critical_path_calls: _Optional[int] = ..., task_ttft: _Optional[float] = ..., task_latency: _Optional[float] = ..., orchestration_overhead: _Optional[float] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "agent", "answer", "usage", "calls", "tools")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    agent: str
    answer: str
    usage: TaskUsage
    calls: _containers.RepeatedCompositeFieldContainer[CallRecord]
    tools: _containers.RepeatedCompositeFieldContainer[ToolRecord]
    def __init__(self, task_id: _Optional[str] = ..., agent: _Optional[str] = ..., answer: _Optional[str] = ..., usage: _Optional[_Union[TaskUsage, _Mapping]] = ..., calls: _Optional[_Iterable[_Union[CallRecord, _Mapping]]] = ..., tools: _Optional[_Iterable[_Union[ToolRecord, _Mapping]]] = ...) -> None: ...

class TaskAccepted(_message.Message):
    __slots__ = ("task_id", "agent")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    agent: str
    def __init__(self, task_id: _Optional[str] = ..., agent: _Optional[str] = ...) -> None: ...

class StepStarted(_message.Message):
    __slots__ = ("call_id", "step", "branch", "replica", "kind")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    BRANCH_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    step: str
    branch: int
    replica: str
    kind: StepKind
    def __init__(self, call_id: _Optional[str] = ..., step: _Optional[str] = ..., branch: _Optional[int] = ..., replica: _Optional[str] = ..., kind: _Optional[_Union[StepKind, str]] = ...) -> None: ...

class StepFinished(_message.Message):
    __slots__ = ("call", "tool")
    CALL_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    call: CallRecord
    tool: ToolRecord
    def __init__(self, call: _Optional[_Union[CallRecord, _Mapping]] = ..., tool: _Optional[_Union[ToolRecord, _Mapping]] = ...) -> None: ...

class AnswerDelta(_message.Message):
    __slots__ = ("text", "token_ids")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    text: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, text: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("accepted", "step_started", "step_finished", "answer_delta", "completed")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    STEP_STARTED_FIELD_NUMBER: _ClassVar[int]
    STEP_FINISHED_FIELD_NUMBER: _ClassVar[int]
    ANSWER_DELTA_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    accepted: TaskAccepted
    step_started: StepStarted
    step_finished: StepFinished
    answer_delta: AnswerDelta
    completed: TaskResult
    def __init__(self, accepted: _Optional[_Union[TaskAccepted, _Mapping]] = ..., step_started: _Optional[_Union[StepStarted, _Mapping]] = ..., step_finished: _Optional[_Union[StepFinished, _Mapping]] = ..., answer_delta: _Optional[_Union[AnswerDelta, _Mapping]] = ..., completed: _Optional[_Union[TaskResult, _Mapping]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("prompt", "prompt_token_ids", "sampling", "seed", "deadline_ms")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    sampling: SamplingOptions
    seed: int
    deadline_ms: int
    def __init__(self, prompt: _Optional[str] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ..., sampling: _Optional[_Union[SamplingOptions, _Mapping]] = ..., seed: _Optional[int] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class GenerateChunk(_message.Message):
    __slots__ = ("text", "token_ids", "call")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    text: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    call: CallRecord
    def __init__(self, text: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ..., call: _Optional[_Union[CallRecord, _Mapping]] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentStep(_message.Message):
    __slots__ = ("name", "kind", "path", "mean_tokens", "mean_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MEAN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MEAN_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    path: str
    mean_tokens: float
    mean_count: float
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., path: _Optional[str] = ..., mean_tokens: _Optional[float] = ..., mean_count: _Optional[float] = ...) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("name", "description", "steps", "expected_llm_calls", "expected_token_amplification", "source")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_LLM_CALLS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_TOKEN_AMPLIFICATION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    steps: _containers.RepeatedCompositeFieldContainer[AgentStep]
    expected_llm_calls: float
    expected_token_amplification: float
    source: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[AgentStep, _Mapping]]] = ..., expected_llm_calls: _Optional[float] = ..., expected_token_amplification: _Optional[float] = ..., source: _Optional[str] = ...) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentInfo]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentInfo, _Mapping]]] = ...) -> None: ...

class GetClusterStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReplicaStatus(_message.Message):
    __slots__ = ("name", "state", "engine", "model", "node", "unfinished_requests", "in_flight_calls", "calls_served", "output_tokens_served", "last_error", "waiting_requests", "running_requests", "kv_usage", "prefix_hit_rate", "replacements")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    UNFINISHED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_CALLS_FIELD_NUMBER: _ClassVar[int]
    CALLS_SERVED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_SERVED_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    WAITING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    KV_USAGE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    REPLACEMENTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: ReplicaState
    engine: str
    model: str
    node: str
    unfinished_requests: int
    in_flight_calls: int
    calls_served: int
    output_tokens_served: int
    last_error: str
    waiting_requests: int
    running_requests: int
    kv_usage: float
    prefix_hit_rate: float
    replacements: int
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[ReplicaState, str]] = ..., engine: _Optional[str] = ..., model: _Optional[str] = ..., node: _Optional[str] = ..., unfinished_requests: _Optional[int] = ..., in_flight_calls: _Optional[int] = ..., calls_served: _Optional[int] = ..., output_tokens_served: _Optional[int] = ..., last_error: _Optional[str] = ..., waiting_requests: _Optional[int] = ..., running_requests: _Optional[int] = ..., kv_usage: _Optional[float] = ..., prefix_hit_rate: _Optional[float] = ..., replacements: _Optional[int] = ...) -> None: ...

class ClusterStatus(_message.Message):
    __slots__ = ("replicas", "max_model_len", "model")
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_LEN_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaStatus]
    max_model_len: int
    model: str
    def __init__(self, replicas: _Optional[_Iterable[_Union[ReplicaStatus, _Mapping]]] = ..., max_model_len: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...
