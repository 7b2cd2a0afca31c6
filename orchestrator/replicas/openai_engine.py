"""`OpenAIEndpoint`: one existing OpenAI-compatible server (vLLM's `api_server`, or any
server speaking its completions API) used as a replica, over HTTP from the orchestrator
process.

A `CallRequest` becomes one streamed POST `/v1/completions` with the token-id prompt;
the SSE stream becomes `CallDelta`s and one `CallResult` whose timings are measured by
this client (the server reports none), folded by orchestrator.openai_stream (which the
load generator's OpenAI target reads its streams with too). Load statistics come from the server's
Prometheus `/metrics` (vLLM's metric names), health from `/health`.

HTTP failures map to `EngineError` codes the executor acts on: a refused or dropped
connection, a 5xx or a hung server is UNAVAILABLE (the call is retried on another
replica), a 400 is INVALID_ARGUMENT, running out of the call's deadline is
DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from orchestrator.domain import CallDelta, CallRequest, CallResult, EngineStats, ErrorCode
from orchestrator.openai_api import ServerURL, completions_body, error_message
from orchestrator.openai_stream import StreamError, StreamFault, StreamFold, sse_data
from orchestrator.replicas.engine import EngineError

# vLLM's Prometheus sample names (v1 engine) that routing reads.
WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
KV_USAGE = "vllm:kv_cache_usage_perc"
PREFIX_QUERIES = "vllm:prefix_cache_queries_total"
PREFIX_HITS = "vllm:prefix_cache_hits_total"
REQUESTS_DONE = "vllm:request_success_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
CACHE_CONFIG = "vllm:cache_config_info"


def endpoint_name(url: str) -> str:
    """A replica's name from its URL: host:port, plus the path when there is one."""
    return ServerURL.parse(url).name


def completion_body(call: CallRequest, model: str, *, send_priority: bool) -> dict[str, Any]:
    """The JSON body of POST /v1/completions for one call; its priority only with
    `send_priority`."""
    priority = call.priority if send_priority else None
    return completions_body(model, call.prompt_token_ids, call.sampling, priority)


def error_for_status(name: str, status: int, body: str) -> EngineError:
    """The EngineError for a non-200 answer to a completion request."""
    detail = error_message(body, 500) or f"HTTP {status}"
    where = f"endpoint {name}"
    if status in (400, 413, 422):
        return EngineError(ErrorCode.INVALID_ARGUMENT, f"{where} refused the call: {detail}")
    if status == 429:
        return EngineError(ErrorCode.UNAVAILABLE, f"{where} is overloaded (429): {detail}")
    if status >= 500:
        return EngineError(ErrorCode.UNAVAILABLE, f"{where} failed ({status}): {detail}")
    # 401/403 (a wrong API key), 404 (a model it does not serve): a configuration error
    # that another attempt will not fix.
    return EngineError(ErrorCode.INTERNAL, f"{where} answered {status}: {detail}")


def stream_error(error: object) -> EngineError:
    """The EngineError for an error chunk in the middle of a stream (vLLM sends one with
    the HTTP code it would have answered): 4xx is the call's fault; a 5xx or no code is
    the server's (its engine died, say), so the call is retried on another replica."""
    message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, int) and 400 <= code < 500:
        return EngineError(ErrorCode.INVALID_ARGUMENT, f"the server refused the call: {message}")
    return EngineError(ErrorCode.UNAVAILABLE, f"the server failed the call: {message}")


def stream_fault_error(name: str, error: StreamError) -> EngineError:
    """The EngineError for a stream that `StreamFold` refused: one cut short is retried on
    another replica; a chunk that is not one is a fault of the server's another attempt
    will not fix."""
    if error.fault is StreamFault.ERROR:
        return stream_error(error.error)
    if error.fault is StreamFault.UNFINISHED:
        return EngineError(ErrorCode.UNAVAILABLE, "the stream ended before the call finished")
    return EngineError(ErrorCode.INTERNAL, f"endpoint {name} streamed a bad chunk: {error}")


def stats_from_metrics(text: str, prior: EngineStats | None = None) -> EngineStats:
    """Routing's statistics from a Prometheus text exposition of vLLM's metrics. Values
    of several engines (data parallel) are summed; KV usage is their mean."""
    from prometheus_client.parser import text_string_to_metric_families

    sums: dict[str, float] = {}
    kv: list[float] = []
    block_size = 0
    blocks = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == KV_USAGE:
                kv.append(sample.value)
            elif sample.name == CACHE_CONFIG:
                block_size = _int_label(sample.labels, "block_size") or block_size
                blocks += _int_label(sample.labels, "num_gpu_blocks")
            elif sample.name.startswith("vllm:"):
                sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    waiting = int(sums.get(WAITING, 0))
    running = int(sums.get(RUNNING, 0))
    return EngineStats(
        unfinished_requests=waiting + running,
        calls_served=int(sums.get(REQUESTS_DONE, 0)),
        output_tokens_served=int(sums.get(GENERATION_TOKENS, 0)),
        waiting_requests=waiting,
        running_requests=running,
        kv_usage=sum(kv) / len(kv) if kv else 0.0,
        prefix_queries=int(sums.get(PREFIX_QUERIES, 0)),
        prefix_hits=int(sums.get(PREFIX_HITS, 0)),
        kv_block_tokens=block_size or (prior.kv_block_tokens if prior else 16),
        kv_capacity_blocks=blocks,
    )


def _int_label(labels: dict[str, str], key: str) -> int:
    try:
        return int(labels.get(key, "") or 0)
    except ValueError:
        return 0


@dataclass(slots=True, frozen=True)
class ServedModel:
    id: str
    max_model_len: int | None


_CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)


def make_session() -> aiohttp.ClientSession:
    """The HTTP session of a pool of endpoints. No connection limit (concurrency is the
    executor's and admission's business); idle connections are dropped after 2 s, before
    servers close theirs (uvicorn, which vLLM runs, after 5 s), so a reused connection is
    rarely one the server is closing."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=2.0),
        timeout=aiohttp.ClientTimeout(total=None),
    )


class OpenAIEndpoint:
    """One OpenAI-compatible server, reached over the pool's aiohttp session."""

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        *,
        api_key: str | None = None,
        request_timeout_s: float = 600.0,
        send_priority: bool = False,
    ) -> None:
        self.url = url.rstrip("/")
        self.name = endpoint_name(self.url)
        self.model = ""  # set by the pool once /v1/models answered
        self._session = session
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._request_timeout_s = request_timeout_s
        self._send_priority = send_priority

    async def models(self, timeout_s: float = 5.0) -> list[ServedModel]:
        """The models the server serves (GET /v1/models); raises EngineError."""
        data = await self._get_json("/v1/models", timeout_s)
        out = []
        for entry in data.get("data") or ():
            length = entry.get("max_model_len")
            out.append(ServedModel(str(entry.get("id")), int(length) if length else None))
        return out

    async def healthy(self, timeout_s: float = 5.0) -> bool:
        """Whether GET /health answers 200 within `timeout_s`."""
        try:
            async with self._session.get(
                self.url + "/health",
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                await response.read()
                return response.status == 200
        except (TimeoutError, *_CONNECTION_ERRORS):
            return False

    async def stats(self, prior: EngineStats | None = None, timeout_s: float = 5.0) -> EngineStats:
        """The server's load, scraped from GET /metrics; raises EngineError."""
        text = await self._get_text("/metrics", timeout_s)
        return stats_from_metrics(text, prior)

    async def _get_text(self, path: str, timeout_s: float) -> str:
        try:
            async with self._session.get(
                self.url + path,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                body = await response.text()
                if response.status != 200:
                    raise error_for_status(self.name, response.status, body)
                return body
        except TimeoutError as exc:
            raise EngineError(
                ErrorCode.UNAVAILABLE, f"endpoint {self.name}: no answer to {path}"
            ) from exc
        except _CONNECTION_ERRORS as exc:
            raise EngineError(ErrorCode.UNAVAILABLE, f"endpoint {self.name}: {exc}") from exc

    async def _get_json(self, path: str, timeout_s: float) -> dict[str, Any]:
        text = await self._get_text(path, timeout_s)
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise EngineError(
                ErrorCode.INTERNAL, f"endpoint {self.name}: {path} is not JSON"
            ) from exc
        if not isinstance(data, dict):
            raise EngineError(ErrorCode.INTERNAL, f"endpoint {self.name}: {path} is not an object")
        return data

    async def _post(self, body: bytes, deadline: float) -> aiohttp.ClientResponse:
        headers = {**self._headers, "Content-Type": "application/json"}
        for attempt in (0, 1):
            try:
                async with asyncio.timeout_at(deadline):
                    return await self._session.post(
                        self.url + "/v1/completions", data=body, headers=headers
                    )
            except aiohttp.ClientConnectorError:
                raise  # nothing listens: no second try
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                # A kept-alive connection the server closed as it was reused: the
                # request never got an answer, so once more on a fresh connection.
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def generate(
        self, call: CallRequest, *, stream: bool = True
    ) -> AsyncGenerator[CallDelta | CallResult, None]:
        """Deltas as the server streams them (none when `stream` is False), then one
        CallResult. Cancelling the consumer closes the connection, which makes vLLM
        abort the request."""
        body = orjson.dumps(completion_body(call, self.model, send_priority=self._send_priority))
        started = time.monotonic()
        limit = self._request_timeout_s
        by_deadline = call.deadline_s is not None and call.deadline_s < limit
        if call.deadline_s is not None:
            limit = min(limit, call.deadline_s)
        # An absolute deadline bounding each wait for the server, never a `yield` (a
        # timeout spanning a yield would cancel whatever the consumer awaits meanwhile).
        deadline = asyncio.get_running_loop().time() + limit
        fold = StreamFold(call.call_id, started, usage_required=False)
        try:
            response = await self._post(body, deadline)
            ended = False
            try:
                if response.status != 200:
                    async with asyncio.timeout_at(deadline):
                        text = await response.text()
                    ended = True
                    raise error_for_status(self.name, response.status, text)
                while True:
                    async with asyncio.timeout_at(deadline):
                        line = await response.content.readline()
                    if not line:
                        ended = True
                        break
                    data = sse_data(line)
                    if not data:
                        continue
                    delta = fold.feed(data, time.monotonic())
                    if delta is not None and stream:
                        yield delta
            finally:
                # A stream read to its end returns the connection for reuse; one left
                # early (cancelled, failed) is closed, which aborts the request in vLLM.
                if ended:
                    response.release()
                else:
                    response.close()
        except TimeoutError as exc:
            if by_deadline:
                raise EngineError(
                    ErrorCode.DEADLINE_EXCEEDED,
                    f"call {call.call_id} ran out of its task's deadline ({call.deadline_s:.3f} s)",
                ) from exc
            raise EngineError(
                ErrorCode.UNAVAILABLE,
                f"endpoint {self.name} did not finish call {call.call_id} within "
                f"request_timeout_s ({self._request_timeout_s:g} s)",
            ) from exc
        except StreamError as exc:
            raise stream_fault_error(self.name, exc) from exc
        except _CONNECTION_ERRORS as exc:
            raise EngineError(
                ErrorCode.UNAVAILABLE, f"endpoint {self.name} is unreachable: {exc}"
            ) from exc
        try:
            result = fold.result(time.monotonic())
        except StreamError as exc:
            raise stream_fault_error(self.name, exc) from exc
        yield result


def served_model(models: Iterable[ServedModel], wanted: str | None) -> ServedModel | None:
    """The configured model among those served (the first one when none is configured)."""
    listed = list(models)
    if wanted is None:
        return listed[0] if listed else None
    return next((m for m in listed if m.id == wanted), None)
