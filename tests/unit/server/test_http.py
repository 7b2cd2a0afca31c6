"""The OpenAI-compatible front door's pure mappings (request -> TaskSpec or GenerateSpec,
usage, errors) and its HTTP edge (auth before the body, bad JSON, size limit, OpenAI's
error shape) on a stub executor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from agents import BUILTIN_PROGRAMS
from orchestrator.config import LimitsConfig
from orchestrator.domain import ErrorCode, Mode, TaskUsage
from orchestrator.executor.driver import TaskFailed
from orchestrator.server.http import (
    ERROR_OF,
    FrontDoor,
    HttpError,
    chat_task_spec,
    completion_generate_spec,
    error_from,
    models_list,
    return_token_ids,
    sse,
    stream_options,
    task_openai_usage,
    user_input,
)
from orchestrator.server.servicer import _Invalid

LIMITS = LimitsConfig(max_tokens_per_call=1024)
USER = [{"role": "user", "content": "Plan a trip."}]


def steps(agent: str) -> tuple[str, ...] | None:
    return {"plan_execute": ("planner", "worker", "synthesizer")}.get(agent)


def chat(**body: Any) -> Any:
    return chat_task_spec({"model": "plan_execute", "messages": USER, **body}, LIMITS, steps)


def test_a_chat_request_maps_to_the_task_it_runs() -> None:
    spec = chat(max_tokens=32, temperature=0.5, top_p=0.9, seed=7)
    assert (spec.agent, spec.input, spec.mode) == ("plan_execute", "Plan a trip.", Mode.SYNTHETIC)
    assert (spec.max_tokens, spec.temperature, spec.top_p, spec.seed) == (32, 0.5, 0.9, 7)
    assert spec.deadline_s is None and spec.step_max_tokens == ()
    assert chat(max_tokens=32, max_completion_tokens=8).max_tokens == 8  # the newer name wins
    defaults = chat()
    assert (defaults.max_tokens, defaults.temperature, defaults.seed) == (None, 1.0, None)


def test_inflection_options_ride_in_the_extension_object() -> None:
    ext = {"mode": "live", "step_max_tokens": {"worker": 5}, "deadline_ms": 1500}
    spec = chat(inflection=ext | {"ignore_eos": True})
    assert spec.mode is Mode.LIVE and spec.ignore_eos is True
    assert spec.step_max_tokens == (("worker", 5),)
    assert spec.deadline_s == pytest.approx(1.5)


def test_the_input_is_the_last_user_messages_text() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "trailing"},
    ]
    assert user_input(messages) == "a\nb"


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"messages": []}, "messages", "non-empty"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages", "role 'user'"),
        ({"messages": [{"role": "user", "content": "  "}]}, "messages", "empty"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages",
            "text parts",
        ),
        ({"max_tokens": 0}, "max_tokens", "between 1 and 1024"),
        ({"max_tokens": 5000}, "max_tokens", "1024"),
        ({"max_tokens": "8"}, "max_tokens", "integer"),
        ({"max_tokens": True}, "max_tokens", "integer"),
        ({"temperature": 3}, "temperature", "between 0 and 2"),
        ({"top_p": 0}, "top_p", "(0, 1]"),
        ({"seed": -1}, "seed", "between 0"),
        ({"n": 2}, "n", "only 1"),
        ({"inflection": {"mode": "fast"}}, "inflection", "'synthetic' or 'live'"),
        ({"inflection": {"deadline": 1}}, "inflection", "unknown option 'deadline'"),
        ({"inflection": {"step_max_tokens": {"critic": 3}}}, None, "no step 'critic'"),
        (
            {"inflection": {"step_max_tokens": {"worker": 0}}},
            "inflection.step_max_tokens['worker']",
            "between 1 and 1024",
        ),
    ],
)
def test_bad_chat_requests_are_400s_naming_the_field(
    body: dict[str, Any], param: str | None, words: str
) -> None:
    with pytest.raises(HttpError) as info:
        chat(**body)
    assert info.value.status == 400 and info.value.type == "invalid_request_error"
    assert info.value.param == param
    assert words in info.value.message


def test_an_unknown_agent_is_model_not_found() -> None:
    with pytest.raises(HttpError) as info:
        chat_task_spec({"model": "nope", "messages": USER}, LIMITS, steps)
    assert (info.value.status, info.value.code, info.value.param) == (
        404,
        "model_not_found",
        "model",
    )
    with pytest.raises(HttpError) as missing:
        chat_task_spec({"messages": USER}, LIMITS, steps)
    assert missing.value.status == 400 and missing.value.param == "model"


def test_a_completion_request_maps_to_a_generation() -> None:
    def spec(**body: Any) -> Any:
        return completion_generate_spec({"model": "m", **body}, "m", LIMITS, 1000, 64)

    text = spec(prompt="Hello", max_tokens=4, seed=1)
    assert (text.prompt, text.prompt_token_ids, text.sampling.max_tokens) == ("Hello", (), 4)
    assert text.sampling.seed == 1 and text.sampling.ignore_eos is False
    assert spec(prompt="Hello").sampling.max_tokens == 16  # OpenAI's default
    assert spec(prompt=[[1, 2, 3]]).prompt_token_ids == (1, 2, 3)  # a batch of one
    assert spec(prompt=["Hi"]).prompt == "Hi"
    # vLLM's and SGLang's top-level ignore_eos, as their clients send it; ours wins.
    assert spec(prompt="Hi", ignore_eos=True).sampling.ignore_eos is True
    both = spec(prompt="Hi", ignore_eos=True, inflection={"ignore_eos": False})
    assert both.sampling.ignore_eos is False
    for bad, words in [
        ({"prompt": "hi", "ignore_eos": "yes"}, "ignore_eos"),
        ({"prompt": [1, 1000]}, "prompt[1]: 1000 is outside the vocabulary"),
        ({"prompt": [1, -1]}, "prompt[1]: -1"),
        ({"prompt": ["a", "b"]}, "one prompt per request"),
        ({"prompt": ""}, "must not be empty"),
        ({"prompt": list(range(60)), "max_tokens": 8}, "max_model_len of 64"),
        ({"prompt": "hi", "echo": True}, "echo"),
    ]:
        with pytest.raises(HttpError) as info:
            spec(**bad)
        assert info.value.status == 400 and words in info.value.message, info.value.message
    with pytest.raises(HttpError) as other:
        spec(model="plan_execute", prompt="hi")
    assert other.value.status == 404 and "'m'" in other.value.message


def test_return_token_ids() -> None:
    assert return_token_ids({"return_token_ids": True}) is True
    assert return_token_ids({}) is False
    with pytest.raises(HttpError) as info:
        return_token_ids({"return_token_ids": 1})
    assert info.value.status == 400 and "return_token_ids" in info.value.message


def test_stream_options() -> None:
    assert stream_options({}) == (False, False)
    assert stream_options({"stream": True}) == (True, False)
    assert stream_options({"stream": True, "stream_options": {"include_usage": True}}) == (
        True,
        True,
    )
    with pytest.raises(HttpError, match="only allowed with stream"):
        stream_options({"stream_options": {"include_usage": True}})


USAGE = TaskUsage(
    user_input_tokens=4,
    final_output_tokens=16,
    llm_calls=5,
    retried_calls=0,
    tool_calls=0,
    prompt_tokens_total=416,
    cached_tokens_total=224,
    output_tokens_total=80,
    token_amplification=24.8,
    output_amplification=5.0,
    prefix_hit_rate=0.54,
    critical_path_calls=3,
    task_ttft=0.02,
    task_latency=0.03,
    orchestration_overhead=0.0,
)


def test_openai_usage_is_the_tasks_totals_over_all_calls() -> None:
    assert task_openai_usage(USAGE) == {
        "prompt_tokens": 416,
        "completion_tokens": 80,
        "total_tokens": 496,
        "prompt_tokens_details": {"cached_tokens": 224},
    }


def test_every_error_code_has_one_http_status() -> None:
    assert set(ERROR_OF) == set(ErrorCode)
    statuses = {code: status for code, (status, _, _) in ERROR_OF.items()}
    assert statuses == {
        ErrorCode.INVALID_ARGUMENT: 400,
        ErrorCode.NOT_FOUND: 404,
        ErrorCode.DEADLINE_EXCEEDED: 504,
        ErrorCode.RESOURCE_EXHAUSTED: 429,
        ErrorCode.UNAVAILABLE: 503,
        ErrorCode.INTERNAL: 500,
    }


def test_a_refusal_says_when_to_retry_and_a_deadline_carries_its_usage() -> None:
    refused = error_from(TaskFailed(ErrorCode.RESOURCE_EXHAUSTED, "full", retry_after_s=1.234))
    assert refused.status == 429 and refused.type == "rate_limit_error"
    assert refused.headers == {"Retry-After": "2", "retry-after-ms": "1234"}
    late = error_from(TaskFailed(ErrorCode.DEADLINE_EXCEEDED, "too slow", USAGE))
    body = orjson.loads(orjson.dumps(late.body()))
    assert body["error"]["code"] == "deadline_exceeded"
    assert body["error"]["inflection"]["usage"]["llm_calls"] == 5
    invalid = error_from(_Invalid("input: must not be empty"))
    assert invalid.body() == {
        "error": {
            "message": "input: must not be empty",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }


def test_models_list_and_sse() -> None:
    listed = models_list(["react", "chat"], "llama")
    assert [m["id"] for m in listed["data"]] == ["chat", "react", "llama"]
    assert listed["data"][0] == {
        "id": "chat",
        "object": "model",
        "created": 0,
        "owned_by": "inflection",
        "inflection": {"kind": "agent"},
    }
    assert sse("[DONE]") == b"data: [DONE]\n\n"
    assert sse({"a": 1}) == b'data: {"a":1}\n\n'


@dataclass
class StubExecutor:
    programs: dict[str, Any] = field(default_factory=lambda: dict(BUILTIN_PROGRAMS))
    max_model_len: int = 64
    reads: int = 0


async def _client(**kwargs: Any) -> TestClient[Any, Any]:
    door = FrontDoor(StubExecutor(), "llama", LIMITS, 1000, **kwargs)  # type: ignore[arg-type]
    client: TestClient[Any, Any] = TestClient(TestServer(door.app()))
    await client.start_server()
    return client


async def test_auth_is_checked_before_the_body_and_errors_keep_openais_shape() -> None:
    client = await _client(auth_token="sekrit", max_body_bytes=2048)
    try:
        refused = await client.post("/v1/chat/completions", data=b"x" * 100_000)
        assert refused.status == 401
        body = await refused.json()
        assert body["error"]["code"] == "invalid_api_key"
        assert "Authorization" in body["error"]["message"]
        wrong = await client.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        assert (await wrong.json())["error"]["message"] == "invalid bearer token"

        auth = {"Authorization": "Bearer sekrit"}
        models = await client.get("/v1/models", headers=auth)
        assert models.status == 200
        assert (await models.json())["data"][-1]["id"] == "llama"
        bad_json = await client.post("/v1/chat/completions", data=b"{oops", headers=auth)
        assert bad_json.status == 400
        assert "not valid JSON" in (await bad_json.json())["error"]["message"]
        not_object = await client.post("/v1/completions", data=b"[1]", headers=auth)
        assert (await not_object.json())["error"]["message"] == "request body must be a JSON object"
        huge = await client.post("/v1/completions", data=b"x" * 10_000, headers=auth)
        assert huge.status == 413 and "2048 bytes" in (await huge.json())["error"]["message"]
        nowhere = await client.get("/v1/nothing", headers=auth)
        assert nowhere.status == 404 and "error" in await nowhere.json()
        wrong_method = await client.get("/v1/chat/completions", headers=auth)
        assert wrong_method.status == 405 and "error" in await wrong_method.json()
        unknown = await client.post(
            "/v1/chat/completions",
            json={"model": "nope", "messages": USER},
            headers=auth,
        )
        assert unknown.status == 404
        assert (await unknown.json())["error"]["code"] == "model_not_found"
    finally:
        await client.close()


async def test_a_taken_http_port_is_one_clear_line_and_a_stopped_door_frees_it() -> None:
    import socket

    from orchestrator.config import DeploymentConfig, ServerConfig
    from orchestrator.server.app import StartupError, check_port, start_http

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            StartupError, match=rf"^port 127.0.0.1:{port} \(server.http_port\) is in use$"
        ):
            check_port(ServerConfig(port=0, http_port=port))
        config = DeploymentConfig(server=ServerConfig(port=0, http_port=port))
        with pytest.raises(StartupError, match="is in use"):
            await start_http(config, StubExecutor(), "llama", 1000)  # type: ignore[arg-type]
    config = DeploymentConfig(server=ServerConfig(port=0, http_port=0))
    runner, bound = await start_http(config, StubExecutor(), "llama", 1000)  # type: ignore[arg-type]
    assert bound > 0
    await runner.cleanup()
    check_port(ServerConfig(port=0, http_port=bound))  # free again
