"""Request validation at the server edge: each bad field gets a message naming the field
and the limit; good requests become the TaskSpec / GenerateSpec the executor runs."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.api.v1 import inflection_pb2 as pb
from orchestrator.config import LimitsConfig
from orchestrator.domain import ErrorCode, GenerateSpec, Mode, TaskSpec
from orchestrator.executor.driver import TaskFailed
from orchestrator.server.servicer import _Invalid, generate_spec, task_spec

LIMITS = LimitsConfig(max_tokens_per_call=100, max_input_chars=50)
STEPS = ("planner", "worker", "synthesizer")
VOCAB = 256
MAX_MODEL_LEN = 1000


class FakeContext:
    """The one thing validation asks of a gRPC context: the RPC's remaining time."""

    def __init__(self, remaining: float | None = None) -> None:
        self._remaining = remaining

    def time_remaining(self) -> float | None:
        return self._remaining


def step_names(agent: str) -> tuple[str, ...] | None:
    return STEPS if agent == "plan_execute" else None


def task(remaining: float | None = None, **fields: Any) -> TaskSpec:
    options: dict[str, Any] = {"agent": "plan_execute", "input": "plan a trip"}
    options.update(fields)
    context: Any = FakeContext(remaining)
    return task_spec(pb.TaskRequest(**options), LIMITS, context, step_names)


def generate(remaining: float | None = None, **fields: Any) -> GenerateSpec:
    context: Any = FakeContext(remaining)
    return generate_spec(
        pb.GenerateRequest(**fields), LIMITS, VOCAB, context, max_model_len=MAX_MODEL_LEN
    )


def sampling(**fields: Any) -> pb.SamplingOptions:
    return pb.SamplingOptions(**fields)


def test_minimal_task_request_gets_the_defaults() -> None:
    spec = task()
    assert spec.agent == "plan_execute"
    assert spec.input == "plan a trip"
    assert spec.mode is Mode.SYNTHETIC
    assert (spec.temperature, spec.top_p) == (1.0, 1.0)
    assert spec.max_tokens is None
    assert spec.ignore_eos is None  # the mode decides
    assert spec.seed is None
    assert spec.deadline_s is None
    assert spec.step_max_tokens == ()


def test_full_task_request_maps_through() -> None:
    spec = task(
        mode=pb.MODE_LIVE,
        sampling=sampling(temperature=0.0, top_p=0.5, max_tokens=100, ignore_eos=True),
        seed=2**40,
        deadline_ms=1500,
        step_max_tokens={"worker": 1, "planner": 100},
    )
    assert spec.mode is Mode.LIVE
    assert (spec.temperature, spec.top_p, spec.max_tokens) == (0.0, 0.5, 100)
    assert spec.ignore_eos is True
    assert spec.seed == 2**40
    assert spec.deadline_s == pytest.approx(1.5)
    assert spec.step_max_tokens == (("planner", 100), ("worker", 1))


def test_ignore_eos_false_is_kept_as_an_explicit_choice() -> None:
    assert task(sampling=sampling(ignore_eos=False)).ignore_eos is False


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"agent": ""}, "agent: required"),
        ({"input": ""}, "input: must not be empty"),
        ({"input": " \n\t "}, "input: must not be empty"),
        ({"input": "x" * 51}, "input: 51 characters, over the limit of 50"),
        ({"sampling": sampling(max_tokens=0)}, "sampling.max_tokens: must be between 1 and 100"),
        ({"sampling": sampling(max_tokens=101)}, "sampling.max_tokens: must be between 1 and 100"),
        (
            {"sampling": sampling(temperature=-0.1)},
            "sampling.temperature: must be between 0 and 10",
        ),
        (
            {"sampling": sampling(temperature=10.5)},
            "sampling.temperature: must be between 0 and 10",
        ),
        (
            {"sampling": sampling(temperature=float("nan"))},
            "sampling.temperature: must be between 0 and 10",
        ),
        ({"sampling": sampling(top_p=0.0)}, "sampling.top_p: must be in (0, 1]"),
        ({"sampling": sampling(top_p=1.01)}, "sampling.top_p: must be in (0, 1]"),
        (
            {"step_max_tokens": {"critic": 5}},
            "step_max_tokens: agent 'plan_execute' has no step 'critic' "
            "(its llm steps: planner, worker, synthesizer)",
        ),
        (
            {"step_max_tokens": {"worker": 0}},
            "step_max_tokens['worker']: must be between 1 and 100, got 0",
        ),
        (
            {"step_max_tokens": {"worker": 101}},
            "step_max_tokens['worker']: must be between 1 and 100, got 101",
        ),
        ({"deadline_ms": 0}, "deadline_ms: must be positive when set"),
        ({"mode": 7}, "mode: unknown value 7"),
    ],
)
def test_bad_task_requests_name_the_field_and_the_limit(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(_Invalid) as invalid:
        task(**fields)
    assert str(invalid.value).startswith(message)


def test_out_of_range_values_are_echoed() -> None:
    with pytest.raises(_Invalid, match=r"got 101$"):
        task(sampling=sampling(max_tokens=101))
    with pytest.raises(_Invalid, match=r"got 1\.5$"):
        task(sampling=sampling(top_p=1.5))


def test_limits_themselves_are_accepted() -> None:
    spec = task(
        input="x" * 50,
        sampling=sampling(max_tokens=1, temperature=10.0, top_p=1.0),
        step_max_tokens={"worker": 100},
        deadline_ms=1,
    )
    assert spec.max_tokens == 1
    assert spec.temperature == 10.0


def test_unknown_agent_is_not_found() -> None:
    with pytest.raises(TaskFailed) as failed:
        task(agent="nope")
    assert failed.value.code is ErrorCode.NOT_FOUND
    assert "'nope'" in failed.value.message


@pytest.mark.parametrize("length", [20_000, 1_000_000])
def test_a_huge_agent_name_is_quoted_short(length: int) -> None:
    with pytest.raises(TaskFailed) as failed:
        task(agent="a" * length)
    assert failed.value.code is ErrorCode.NOT_FOUND
    message = failed.value.message
    assert f"'{'a' * 80}… ({length} chars)' does not exist" in message
    assert len(message) < 200


@pytest.mark.parametrize(
    ("tokens", "field"), [(5, "step_max_tokens: agent 'plan_execute' has no step"), (0, "")]
)
def test_a_huge_step_name_is_quoted_short(tokens: int, field: str) -> None:
    name = "worker" if not field else "w" * 50_000
    with pytest.raises(_Invalid) as invalid:
        task(step_max_tokens={name: tokens})
    assert field in str(invalid.value)
    assert len(str(invalid.value)) < 200


@pytest.mark.parametrize(
    ("deadline_ms", "remaining", "expected"),
    [
        (None, None, None),
        (2000, None, 2.0),
        # The RPC's deadline less a margin of min(50 ms, 10%), for the status to arrive.
        (None, 3.5, 3.45),
        (2000, 3.5, 2.0),
        (5000, 0.25, 0.225),
    ],
)
def test_tighter_of_deadline_ms_and_the_grpc_deadline_wins(
    deadline_ms: int | None, remaining: float | None, expected: float | None
) -> None:
    fields = {} if deadline_ms is None else {"deadline_ms": deadline_ms}
    assert task(remaining, **fields).deadline_s == expected
    assert generate(remaining, prompt="hi", **fields).deadline_s == expected


def test_generate_with_a_text_prompt_gets_the_defaults() -> None:
    spec = generate(prompt="hello")
    assert spec.prompt == "hello"
    assert spec.prompt_token_ids == ()
    assert spec.sampling.max_tokens == 16
    assert spec.sampling.ignore_eos is False
    assert (spec.sampling.temperature, spec.sampling.top_p) == (1.0, 1.0)
    assert spec.sampling.seed is None


def test_a_prompt_that_just_fits_the_context_is_accepted() -> None:
    spec = generate(prompt_token_ids=[255] * 984)
    assert len(spec.prompt_token_ids) == 984
    assert generate(prompt="hi", sampling=sampling(max_tokens=100)).prompt == "hi"


def test_generate_with_token_ids_maps_through() -> None:
    spec = generate(
        prompt_token_ids=[0, 5, 255],
        sampling=sampling(max_tokens=100, ignore_eos=True, temperature=0.0),
        seed=9,
    )
    assert spec.prompt_token_ids == (0, 5, 255)
    assert spec.sampling.max_tokens == 100
    assert spec.sampling.ignore_eos is True
    assert spec.sampling.temperature == 0.0
    assert spec.sampling.seed == 9


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "prompt / prompt_token_ids: give exactly one of them"),
        (
            {"prompt": "hi", "prompt_token_ids": [1]},
            "prompt / prompt_token_ids: give exactly one of them",
        ),
        ({"prompt": "x" * 51}, "prompt: 51 characters, over the limit of 50"),
        (
            {"prompt_token_ids": [1, 2, 256]},
            "prompt_token_ids[2]: 256 is outside the vocabulary (size 256)",
        ),
        (
            {"prompt": "hi", "sampling": sampling(max_tokens=101)},
            "sampling.max_tokens: must be between 1 and 100",
        ),
        (
            {"prompt": "hi", "sampling": sampling(max_tokens=0)},
            "sampling.max_tokens: must be between 1 and 100",
        ),
        ({"prompt": "hi", "sampling": sampling(top_p=0.0)}, "sampling.top_p: must be in (0, 1]"),
        (
            {"prompt": "hi", "sampling": sampling(temperature=11.0)},
            "sampling.temperature: must be between 0 and 10",
        ),
        ({"prompt": "hi", "deadline_ms": 0}, "deadline_ms: must be positive when set"),
        (
            {"prompt_token_ids": [1] * 985},
            "prompt_token_ids: 985 tokens plus max_tokens 16 exceed the model's "
            "max_model_len of 1000",
        ),
        (
            {"prompt_token_ids": [1] * 901, "sampling": sampling(max_tokens=100)},
            "prompt_token_ids: 901 tokens plus max_tokens 100 exceed the model's "
            "max_model_len of 1000",
        ),
        # The size is checked before any per-token work: a million ids are refused for
        # their number, not walked through for the bad one at the end.
        (
            {"prompt_token_ids": [1] * 1_000_000 + [10_000]},
            "prompt_token_ids: 1000001 tokens plus max_tokens 16 exceed",
        ),
    ],
)
def test_bad_generate_requests_name_the_field_and_the_limit(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(_Invalid) as invalid:
        generate(**fields)
    assert str(invalid.value).startswith(message)
