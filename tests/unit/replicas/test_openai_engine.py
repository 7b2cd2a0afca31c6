"""`backend: openai` without vLLM: `OpenAIEndpoint` and `OpenAIPool` against an
in-process aiohttp server that speaks vLLM's completions SSE, /v1/models, /health and
/metrics (field names as vLLM 0.32's api_server sends them). Covers the request body,
the SSE parser, usage and cached tokens, metrics parsing, error mapping, health
transitions and the start-up refusals. The real servers are in
tests/integration/test_openai_replicas.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from pydantic import ValidationError

from orchestrator.config import DeploymentConfig, ReplicasConfig
from orchestrator.domain import (
    CallDelta,
    CallRequest,
    CallResult,
    ErrorCode,
    FinishReason,
    ReplicaState,
    Sampling,
)
from orchestrator.openai_stream import StreamError, StreamFault
from orchestrator.replicas.engine import EngineError
from orchestrator.replicas.openai_engine import (
    OpenAIEndpoint,
    completion_body,
    endpoint_name,
    error_for_status,
    make_session,
    stats_from_metrics,
    stream_error,
    stream_fault_error,
)
from orchestrator.replicas.openai_pool import EndpointStartError, OpenAIPool
from orchestrator.server.app import StartupError, openai_tokenizer
from tests.polling import async_wait_until

MODEL = "tiny"

METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny"} 2.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.25
# HELP vllm:prefix_cache_queries Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="tiny"} 400.0
vllm:prefix_cache_queries_created{engine="0",model_name="tiny"} 1.7e+09
# HELP vllm:prefix_cache_hits Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="tiny"} 300.0
# HELP vllm:generation_tokens Number of generation tokens processed.
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{engine="0",model_name="tiny"} 64.0
# HELP vllm:request_success Count of successfully processed requests.
# TYPE vllm:request_success counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="tiny"} 1.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="tiny"} 7.0
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="128",engine="0",num_gpu_blocks="8192"} 1.0
"""


def _chunk(**fields: Any) -> bytes:
    base = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": MODEL}
    return b"data: " + orjson.dumps({**base, **fields}) + b"\n\n"


def _choice(text: str, ids: list[int], finish: str | None = None) -> dict[str, Any]:
    return {
        "index": 0,
        "text": text,
        "logprobs": None,
        "finish_reason": finish,
        "stop_reason": None,
        "prompt_token_ids": None,
        "token_ids": ids,
    }


@dataclass
class FakeServer:
    """What the fake vLLM server answers; tests change it between calls."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    status: int = 200
    error_body: bytes = b""
    health: int = 200
    models: list[dict[str, Any]] = field(
        default_factory=lambda: [{"id": MODEL, "object": "model", "max_model_len": 1024}]
    )
    cached: int = 128
    stall_s: float = 0.0  # pause before the first token
    mid_stream_error: bool = False
    drop_mid_stream: bool = False


FAKE = web.AppKey("fake", FakeServer)


async def _completions(request: web.Request) -> web.StreamResponse:
    fake: FakeServer = request.app[FAKE]
    body = await request.json()
    fake.bodies.append(body)
    fake.headers.append(dict(request.headers))
    if fake.status != 200:
        return web.Response(status=fake.status, body=fake.error_body)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    if fake.stall_s:
        await asyncio.sleep(fake.stall_s)
    n = body["max_tokens"]
    for i in range(n):
        if i == 1 and fake.mid_stream_error:
            await response.write(b'data: {"error": {"message": "engine died", "code": 500}}\n\n')
            return response
        if i == 1 and fake.drop_mid_stream:
            assert request.transport is not None
            request.transport.close()
            return response
        finish = "length" if i == n - 1 else None
        await response.write(_chunk(choices=[_choice(f"t{i}", [100 + i], finish)]))
        await asyncio.sleep(0.001)
    usage = {
        "prompt_tokens": len(body["prompt"]),
        "total_tokens": len(body["prompt"]) + n,
        "completion_tokens": n,
        "prompt_tokens_details": {"cached_tokens": fake.cached},
    }
    await response.write(_chunk(choices=[], usage=usage))
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def _models(request: web.Request) -> web.Response:
    fake: FakeServer = request.app[FAKE]
    return web.json_response({"object": "list", "data": fake.models})


async def _health(request: web.Request) -> web.Response:
    return web.Response(status=request.app[FAKE].health)


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(text=METRICS, content_type="text/plain")


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    server = FakeServer()
    app = web.Application()
    app[FAKE] = server
    app.router.add_post("/v1/completions", _completions)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


def _call(max_tokens: int = 4, **kw: Any) -> CallRequest:
    sampling = Sampling(max_tokens=max_tokens, ignore_eos=True, seed=7, temperature=0.5)
    return CallRequest("c1", (1, 2, 3, 4, 5), sampling, **kw)


async def _collect(endpoint: OpenAIEndpoint, call: CallRequest) -> list[CallDelta | CallResult]:
    return [item async for item in endpoint.generate(call)]


@pytest.fixture
async def endpoint(fake: FakeServer) -> AsyncIterator[OpenAIEndpoint]:
    session = make_session()
    ep = OpenAIEndpoint(fake.url, session, api_key="sekret", send_priority=True)
    ep.model = MODEL
    try:
        yield ep
    finally:
        await session.close()


def test_completion_body_carries_token_ids_and_sampling() -> None:
    call = _call(priority=3)
    body = completion_body(call, MODEL, send_priority=True)
    assert body == {
        "model": MODEL,
        "prompt": [1, 2, 3, 4, 5],
        "max_tokens": 4,
        "temperature": 0.5,
        "top_p": 1.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
        "seed": 7,
        "ignore_eos": True,
        "priority": 3,
    }
    plain = CallRequest("c", (1,), Sampling(max_tokens=2))
    body = completion_body(plain, MODEL, send_priority=False)
    assert "priority" not in body and "ignore_eos" not in body and "seed" not in body


def test_endpoint_names() -> None:
    assert endpoint_name("http://10.0.0.5:8000") == "10.0.0.5:8000"
    assert endpoint_name("https://llm.example.com/team-a") == "llm.example.com:443/team-a"


async def test_stream_gives_deltas_then_a_result_with_usage(
    fake: FakeServer, endpoint: OpenAIEndpoint
) -> None:
    items = await _collect(endpoint, _call(priority=2))
    deltas, result = items[:-1], items[-1]
    assert [d.token_ids for d in deltas if isinstance(d, CallDelta)] == [
        (100,),
        (101,),
        (102,),
        (103,),
    ]
    assert isinstance(result, CallResult)
    assert result.token_ids == (100, 101, 102, 103)
    assert result.text == "t0t1t2t3"
    assert result.finish_reason is FinishReason.LENGTH
    assert result.usage.prompt_tokens == 5
    assert result.usage.cached_prompt_tokens == 128
    assert result.usage.output_tokens == 4
    t = result.timings
    assert 0 < t.ttft <= t.e2e and len(t.itl) == 3 and t.tpot is not None
    assert fake.bodies[0]["priority"] == 2
    assert fake.headers[0]["Authorization"] == "Bearer sekret"


async def test_whole_call_yields_only_the_result(endpoint: OpenAIEndpoint) -> None:
    items = [i async for i in endpoint.generate(_call(), stream=False)]
    assert len(items) == 1 and isinstance(items[0], CallResult)


def test_metrics_map_to_routing_stats() -> None:
    stats = stats_from_metrics(METRICS)
    assert stats.waiting_requests == 2
    assert stats.running_requests == 3
    assert stats.unfinished_requests == 5
    assert stats.kv_usage == 0.25
    assert (stats.prefix_queries, stats.prefix_hits) == (400, 300)
    assert stats.prefix_hit_rate == 0.75
    assert stats.calls_served == 8
    assert stats.output_tokens_served == 64
    assert (stats.kv_block_tokens, stats.kv_capacity_blocks) == (128, 8192)
    # Two engines (data parallel): counts add up, KV usage is their mean.
    two = METRICS + METRICS.replace('engine="0"', 'engine="1"').replace("0.25", "0.75")
    both = stats_from_metrics(
        "\n".join(line for line in two.splitlines() if not line.startswith("#"))
    )
    assert both.waiting_requests == 4 and both.kv_usage == 0.5
    assert stats_from_metrics("").unfinished_requests == 0


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, ErrorCode.INVALID_ARGUMENT),
        (422, ErrorCode.INVALID_ARGUMENT),
        (401, ErrorCode.INTERNAL),
        (404, ErrorCode.INTERNAL),
        (429, ErrorCode.UNAVAILABLE),
        (500, ErrorCode.UNAVAILABLE),
        (503, ErrorCode.UNAVAILABLE),
    ],
)
def test_error_for_status(status: int, code: ErrorCode) -> None:
    body = '{"error": {"message": "max_tokens too large", "code": 400}}'
    error = error_for_status("e", status, body)
    assert error.code is code
    assert "max_tokens too large" in error.message


async def test_http_errors_map_to_codes(fake: FakeServer, endpoint: OpenAIEndpoint) -> None:
    fake.status = 400
    fake.error_body = b'{"error": {"message": "prompt too long", "type": "BadRequestError"}}'
    with pytest.raises(EngineError) as bad:
        await _collect(endpoint, _call())
    assert bad.value.code is ErrorCode.INVALID_ARGUMENT
    assert "prompt too long" in bad.value.message
    fake.status = 503
    with pytest.raises(EngineError) as down:
        await _collect(endpoint, _call())
    assert down.value.code is ErrorCode.UNAVAILABLE


async def test_a_refused_connection_is_unavailable() -> None:
    session = make_session()
    try:
        ep = OpenAIEndpoint("http://127.0.0.1:9", session)  # discard port: nothing listens
        with pytest.raises(EngineError) as refused:
            await _collect(ep, _call())
        assert refused.value.code is ErrorCode.UNAVAILABLE
        assert not await ep.healthy(timeout_s=1.0)
    finally:
        await session.close()


async def test_errors_mid_stream(fake: FakeServer, endpoint: OpenAIEndpoint) -> None:
    fake.mid_stream_error = True
    with pytest.raises(EngineError) as failed:
        await _collect(endpoint, _call())
    # A 5xx error chunk (vLLM's when its engine core died): retried elsewhere.
    assert failed.value.code is ErrorCode.UNAVAILABLE and "engine died" in failed.value.message
    assert stream_error({"message": "bad", "code": 400}).code is ErrorCode.INVALID_ARGUMENT
    assert stream_error("no code").code is ErrorCode.UNAVAILABLE
    # The stream's other faults (orchestrator.openai_stream): cut short, retried
    # elsewhere; a chunk that is not one, a server another attempt will not fix.
    cut = stream_fault_error("e", StreamError(StreamFault.UNFINISHED, "ended"))
    assert cut.code is ErrorCode.UNAVAILABLE
    bad = stream_fault_error("e", StreamError(StreamFault.NOT_JSON, "not JSON: 'x'"))
    assert bad.code is ErrorCode.INTERNAL and "not JSON" in bad.message
    refused = StreamError(StreamFault.ERROR, "error in stream: x", {"message": "x", "code": 400})
    assert stream_fault_error("e", refused).code is ErrorCode.INVALID_ARGUMENT
    fake.mid_stream_error = False
    fake.drop_mid_stream = True
    with pytest.raises(EngineError) as dropped:
        await _collect(endpoint, _call())
    assert dropped.value.code is ErrorCode.UNAVAILABLE


async def test_deadline_and_request_timeout(fake: FakeServer, endpoint: OpenAIEndpoint) -> None:
    fake.stall_s = 1.0
    with pytest.raises(EngineError) as late:
        await _collect(endpoint, _call(deadline_s=0.1))
    assert late.value.code is ErrorCode.DEADLINE_EXCEEDED
    session = make_session()
    try:
        hung = OpenAIEndpoint(fake.url, session, request_timeout_s=0.1)
        hung.model = MODEL
        with pytest.raises(EngineError) as timed_out:
            await _collect(hung, _call())
        assert timed_out.value.code is ErrorCode.UNAVAILABLE
    finally:
        await session.close()


def _replicas(*urls: str, **openai: Any) -> ReplicasConfig:
    return ReplicasConfig.model_validate(
        {
            "backend": "openai",
            "openai": {"endpoints": list(urls), "start_timeout_s": 1.0, **openai},
            "stats_period_s": 0.02,
            "health_period_s": 0.02,
        }
    )


async def test_pool_routes_scrapes_and_recovers(fake: FakeServer) -> None:
    pool = OpenAIPool(_replicas(fake.url + "/v1"))
    await pool.start()
    try:
        assert pool.model == MODEL and pool.max_model_len == 1024
        [view] = pool.views()
        assert view.name == fake.url.removeprefix("http://") and view.healthy
        await async_wait_until(lambda: pool.views()[0].running_requests == 3, 2.0)
        view = pool.views()[0]
        assert (view.waiting_requests, view.kv_usage, view.prefix_hit_rate) == (2, 0.25, 0.75)
        result = await pool.call(view.name, _call())
        assert result.usage.output_tokens == 4
        items = [i async for i in pool.stream(view.name, _call())]
        assert isinstance(items[-1], CallResult)
        status = await pool.status()
        assert status.replicas[0].engine == "openai"
        assert status.replicas[0].running_requests == 3
        # A failed health check marks it unhealthy; a good one brings it back.
        fake.health = 503
        await async_wait_until(lambda: not pool.views()[0].healthy, 2.0)
        assert (await pool.status()).replicas[0].state is ReplicaState.UNHEALTHY
        fake.health = 200
        await async_wait_until(lambda: pool.views()[0].healthy, 2.0)
        # A call that finds the server failing marks it unhealthy at once.
        fake.status = 502
        fake.health = 503
        with pytest.raises(EngineError):
            await pool.call(view.name, _call())
        assert not pool.views()[0].healthy
        assert pool.views()[0].in_flight_calls == 0
    finally:
        await pool.shutdown()


async def test_pool_refuses_an_endpoint_that_is_down_or_serves_another_model(
    fake: FakeServer,
) -> None:
    with pytest.raises(EndpointStartError, match="did not answer /v1/models within 1 s"):
        await OpenAIPool(_replicas("http://127.0.0.1:9")).start()
    with pytest.raises(EndpointStartError, match=r"does not serve model 'other'.*tiny"):
        await OpenAIPool(_replicas(fake.url, model="other")).start()
    with pytest.raises(EndpointStartError, match="INFLECTION_TEST_NO_SUCH_KEY"):
        await OpenAIPool(_replicas(fake.url, api_key_env="INFLECTION_TEST_NO_SUCH_KEY")).start()


def test_config_validates_endpoints() -> None:
    config = _replicas("http://a:8000/v1/", "https://b")
    assert config.openai.endpoints == ("http://a:8000", "https://b")
    with pytest.raises(ValidationError, match=r"needs replicas\.openai\.endpoints"):
        ReplicasConfig.model_validate({"backend": "openai"})
    with pytest.raises(ValidationError, match="expected http://HOST:PORT"):
        _replicas("ftp://a")
    with pytest.raises(ValidationError, match="bad port"):
        _replicas("http://a:99999")
    with pytest.raises(ValidationError, match="listed twice"):
        _replicas("http://a:1", "http://a:1/")


def test_tokenizer_needs_a_local_directory() -> None:
    config = DeploymentConfig.model_validate(
        {"replicas": {"backend": "openai", "openai": {"endpoints": ["http://a:1"]}}}
    )
    with pytest.raises(StartupError, match=r"replicas\.openai\.tokenizer"):
        openai_tokenizer(config, "meta-llama/Llama-3.1-8B-Instruct")


def test_the_shipped_example_config_loads() -> None:
    from pathlib import Path

    from orchestrator.config import Backend, load_config

    repo = Path(__file__).resolve().parents[3]
    config = load_config(repo / "cluster" / "openai-example.yaml")
    assert config.replicas.backend is Backend.OPENAI
    assert config.replicas.openai.endpoints == ("http://127.0.0.1:8001", "http://127.0.0.1:8002")
