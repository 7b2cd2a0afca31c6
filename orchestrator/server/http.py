"""The OpenAI-compatible front door: an aiohttp server in the orchestrator's own event
loop, beside grpc.aio, so that any OpenAI client (the official `openai` SDK, curl, tools
built on either) can run agent tasks and plain generations.

- `GET /v1/models`: every agent (`"inflection": {"kind": "agent"}`), then the served
  model (`"kind": "model"`).
- `POST /v1/chat/completions`: `model` names an agent; the last user message is the
  task's input. The answer comes back whole or streamed as server-sent events; `usage`
  is the task's totals over all its LLM calls, and `inflection.usage` its full TaskUsage.
- `POST /v1/completions`: one plain generation on the served model (`model` is its name).

Requests are validated by the gRPC servicer's own checks (`task_spec`, `generate_spec`)
and run through the executor exactly as the servicer runs them. Every failure leaves in
OpenAI's error shape, `{"error": {"message", "type", "param", "code"}}`; the pure
mapping functions here are unit tested on their own.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

import grpc
import orjson
from aiohttp import web

from agents.dsl import Llm, walk
from orchestrator.api.v1 import inflection_pb2 as pb
from orchestrator.config import LimitsConfig
from orchestrator.convert import shorten
from orchestrator.domain import (
    AnswerDelta,
    CallRecord,
    CallUsage,
    ErrorCode,
    FinishReason,
    GenerateSpec,
    TaskCompleted,
    TaskResult,
    TaskSpec,
    TaskUsage,
)
from orchestrator.executor.driver import TaskFailed
from orchestrator.executor.executor import Executor
from orchestrator.server.auth import AuthFailures, lockout_message
from orchestrator.server.servicer import MESSAGE_CHARS, _Invalid, generate_spec, task_spec

log = logging.getLogger(__name__)

OWNER: Final = "inflection"
_UINT32: Final = 2**32
_UINT64: Final = 2**64

# How each failure of a task or generation leaves: HTTP status, OpenAI error type, code.
ERROR_OF: Final[dict[ErrorCode, tuple[int, str, str]]] = {
    ErrorCode.INVALID_ARGUMENT: (400, "invalid_request_error", "invalid_value"),
    ErrorCode.NOT_FOUND: (404, "invalid_request_error", "model_not_found"),
    ErrorCode.DEADLINE_EXCEEDED: (504, "timeout_error", "deadline_exceeded"),
    ErrorCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error", "resource_exhausted"),
    ErrorCode.UNAVAILABLE: (503, "server_error", "unavailable"),
    ErrorCode.INTERNAL: (500, "server_error", "internal_error"),
}


@dataclass(slots=True)
class HttpError(Exception):
    """A request that ends with an error response in OpenAI's shape."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # further fields of "error"

    def body(self) -> dict[str, Any]:
        error = {
            "message": shorten(self.message, MESSAGE_CHARS),
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }
        return {"error": error | self.extra}

    def response(self) -> web.Response:
        return web.Response(
            status=self.status,
            body=orjson.dumps(self.body()),
            content_type="application/json",
            headers=self.headers,
        )


def bad_request(message: str, param: str | None = None) -> HttpError:
    return HttpError(400, message, param=param, code="invalid_value" if param else None)


def error_from(exc: _Invalid | TaskFailed, param: str | None = None) -> HttpError:
    """The servicer's validation failure or a failed task, as an OpenAI error."""
    if isinstance(exc, _Invalid):
        return bad_request(str(exc), param)
    status, kind, code = ERROR_OF[exc.code]
    headers: dict[str, str] = {}
    if exc.retry_after_s is not None:
        # Retry-After in whole seconds (HTTP); retry-after-ms, which the openai SDK
        # also honours, to the millisecond.
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        headers["retry-after-ms"] = str(round(exc.retry_after_s * 1000))
    extra = {"inflection": {"usage": exc.usage}} if exc.usage is not None else {}
    if exc.code is ErrorCode.NOT_FOUND:
        param = "model"
    return HttpError(status, exc.message, kind, param, code, headers, extra)


# ---- reading a JSON body's fields ----


def _int(body: Mapping[str, Any], key: str, lo: int, hi: int, name: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_request(f"{name}: must be an integer, got {_kind(value)}", name)
    if not lo <= value <= hi:
        raise bad_request(f"{name}: must be between {lo} and {hi}, got {value}", name)
    return value


def _number(body: Mapping[str, Any], key: str, lo: float, hi: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise bad_request(f"{key}: must be a number, got {_kind(value)}", key)
    if not lo <= value <= hi:
        raise bad_request(f"{key}: must be between {lo:g} and {hi:g}, got {value}", key)
    return float(value)


def _bool(body: Mapping[str, Any], key: str, name: str) -> bool | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise bad_request(f"{name}: must be true or false, got {_kind(value)}", name)
    return value


def _kind(value: object) -> str:
    if isinstance(value, str):
        return f"the string {shorten(value)!r}"
    return {dict: "an object", list: "an array", bool: "a boolean"}.get(type(value), "a number")


def _model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model: required (GET /v1/models lists the names)", "model")
    return model


def _only_one(body: Mapping[str, Any]) -> None:
    """Options of OpenAI's API the front door does not offer, refused rather than ignored."""
    if body.get("n", 1) != 1:
        raise bad_request("n: only 1 is supported", "n")
    if body.get("best_of", 1) not in (1, None):
        raise bad_request("best_of: only 1 is supported", "best_of")
    if body.get("echo"):
        raise bad_request("echo: not supported", "echo")
    if body.get("logprobs") not in (None, False):
        raise bad_request("logprobs: not supported", "logprobs")
    if body.get("suffix") is not None:
        raise bad_request("suffix: not supported", "suffix")


def _extension(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """Inflection's own options: the body's `inflection` object (openai SDK: extra_body)."""
    ext = body.get("inflection")
    if ext is None:
        return {}
    if not isinstance(ext, dict):
        raise bad_request(f"inflection: must be an object, got {_kind(ext)}", "inflection")
    known = {"mode", "step_max_tokens", "deadline_ms", "ignore_eos"}
    unknown = sorted(set(ext) - known)
    if unknown:
        raise bad_request(
            f"inflection: unknown option {shorten(unknown[0])!r} "
            f"(known: {', '.join(sorted(known))})",
            "inflection",
        )
    return cast(Mapping[str, Any], ext)


def _sampling(body: Mapping[str, Any], limits: LimitsConfig) -> pb.SamplingOptions:
    sampling = pb.SamplingOptions()
    max_tokens = _int(
        body, "max_completion_tokens", 1, limits.max_tokens_per_call, "max_completion_tokens"
    )
    if max_tokens is None:
        max_tokens = _int(body, "max_tokens", 1, limits.max_tokens_per_call, "max_tokens")
    if max_tokens is not None:
        sampling.max_tokens = max_tokens
    temperature = _number(body, "temperature", 0.0, 2.0)
    if temperature is not None:
        sampling.temperature = temperature
    top_p = _number(body, "top_p", 0.0, 1.0)
    if top_p is not None:
        if top_p == 0.0:
            raise bad_request("top_p: must be in (0, 1], got 0", "top_p")
        sampling.top_p = top_p
    ignore_eos = _bool(_extension(body), "ignore_eos", "inflection.ignore_eos")
    if ignore_eos is None:  # vLLM's and SGLang's top-level extension, as their clients send it
        ignore_eos = _bool(body, "ignore_eos", "ignore_eos")
    if ignore_eos is not None:
        sampling.ignore_eos = ignore_eos
    return sampling


def _seed_and_deadline(
    body: Mapping[str, Any], request: pb.TaskRequest | pb.GenerateRequest
) -> None:
    seed = _int(body, "seed", 0, _UINT64 - 1, "seed")
    if seed is not None:
        request.seed = seed
    deadline = _int(_extension(body), "deadline_ms", 1, _UINT32 - 1, "inflection.deadline_ms")
    if deadline is not None:
        request.deadline_ms = deadline


def return_token_ids(body: Mapping[str, Any]) -> bool:
    """vLLM's extension to /v1/completions: each choice carries its output token ids, so
    a client (the load generator's OpenAI target) can grow an agent's context by exact
    ids."""
    return bool(_bool(body, "return_token_ids", "return_token_ids"))


def stream_options(body: Mapping[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage) of a request."""
    stream = _bool(body, "stream", "stream") or False
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not isinstance(options, dict):
        raise bad_request("stream_options: must be an object", "stream_options")
    if not stream:
        raise bad_request("stream_options: only allowed with stream: true", "stream_options")
    include = _bool(options, "include_usage", "stream_options.include_usage")
    return stream, bool(include)


def user_input(messages: object) -> str:
    """The task's input: the text of the last user message (string content, or the text
    parts of a content array joined by newlines)."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages: must be a non-empty array", "messages")
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if not isinstance(message, dict):
            raise bad_request(f"messages[{index}]: must be an object", "messages")
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise bad_request(
                        f"messages[{index}].content: only text parts are supported", "messages"
                    )
                piece = part.get("text")
                if not isinstance(piece, str):
                    raise bad_request(
                        f"messages[{index}].content: a text part needs a string 'text'", "messages"
                    )
                texts.append(piece)
            text = "\n".join(texts)
        else:
            raise bad_request(
                f"messages[{index}].content: must be a string or an array of text parts",
                "messages",
            )
        if not text.strip():
            raise bad_request(f"messages[{index}].content: must not be empty", "messages")
        return text
    raise bad_request("messages: no message with role 'user' (its text is the input)", "messages")


class _NoRpcDeadline:
    """Stands in for the gRPC context of the servicer's checks: HTTP has no RPC deadline."""

    def time_remaining(self) -> float | None:
        return None


_NO_RPC_DEADLINE = cast("grpc.aio.ServicerContext[Any, Any]", _NoRpcDeadline())


def chat_task_spec(
    body: Mapping[str, Any],
    limits: LimitsConfig,
    step_names: Callable[[str], tuple[str, ...] | None],
) -> TaskSpec:
    """A chat completion request -> the task it runs (raises HttpError)."""
    agent = _model(body)
    if step_names(agent) is None:
        raise HttpError(
            404,
            f"model {shorten(agent)!r} is not an agent of this server (GET /v1/models lists them)",
            param="model",
            code="model_not_found",
        )
    _only_one(body)
    text = user_input(body.get("messages"))
    if len(text) > limits.max_input_chars:
        raise bad_request(
            f"messages: the last user message has {len(text)} characters, over the limit "
            f"of {limits.max_input_chars}",
            "messages",
        )
    ext = _extension(body)
    request = pb.TaskRequest(agent=agent, input=text, sampling=_sampling(body, limits))
    _seed_and_deadline(body, request)
    mode = ext.get("mode")
    if mode is not None:
        modes = {"synthetic": pb.MODE_SYNTHETIC, "live": pb.MODE_LIVE}
        if mode not in modes:
            raise bad_request("inflection.mode: must be 'synthetic' or 'live'", "inflection")
        request.mode = modes[mode]
    steps = ext.get("step_max_tokens")
    if steps is not None:
        if not isinstance(steps, dict):
            raise bad_request("inflection.step_max_tokens: must be an object", "inflection")
        for name in steps:
            label = f"inflection.step_max_tokens[{shorten(name)!r}]"
            tokens = _int(steps, name, 1, limits.max_tokens_per_call, label)
            if tokens is not None:
                request.step_max_tokens[name] = tokens
    try:
        return task_spec(request, limits, _NO_RPC_DEADLINE, step_names)
    except (_Invalid, TaskFailed) as exc:
        raise error_from(exc) from None


def completion_generate_spec(
    body: Mapping[str, Any],
    model: str,
    limits: LimitsConfig,
    vocab_size: int,
    max_model_len: int,
) -> GenerateSpec:
    """A completion request -> the plain generation it runs (raises HttpError)."""
    name = _model(body)
    if name != model:
        raise HttpError(
            404,
            f"model {shorten(name)!r} is not served here: /v1/completions generates with "
            f"{model!r} (agents run through /v1/chat/completions)",
            param="model",
            code="model_not_found",
        )
    _only_one(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    request = pb.GenerateRequest(sampling=_sampling(body, limits))
    _seed_and_deadline(body, request)
    if isinstance(prompt, str):
        if not prompt:
            raise bad_request("prompt: must not be empty", "prompt")
        request.prompt = prompt
    elif isinstance(prompt, list) and prompt:
        if not all(type(t) is int for t in prompt):
            raise bad_request(
                "prompt: a string, or an array of token ids (one prompt per request)", "prompt"
            )
        ids = cast(list[int], prompt)
        if min(ids) < 0 or max(ids) >= vocab_size:
            position, token = next((i, t) for i, t in enumerate(ids) if not 0 <= t < vocab_size)
            raise bad_request(
                f"prompt[{position}]: {token} is outside the vocabulary (size {vocab_size})",
                "prompt",
            )
        if len(ids) > max_model_len:
            raise bad_request(
                f"prompt: {len(ids)} tokens, over the model's max_model_len of {max_model_len}",
                "prompt",
            )
        request.prompt_token_ids.extend(ids)
    else:
        raise bad_request(
            "prompt: required, a string or an array of token ids (one prompt per request)",
            "prompt",
        )
    try:
        return generate_spec(
            request, limits, vocab_size, _NO_RPC_DEADLINE, max_model_len=max_model_len
        )
    except _Invalid as exc:
        raise error_from(exc, "prompt") from None


# ---- responses ----


def openai_usage(prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def task_openai_usage(usage: TaskUsage) -> dict[str, Any]:
    """A task's usage as OpenAI's: its totals over every LLM call of the task (not only
    the answer's), which is what the task cost."""
    return openai_usage(
        usage.prompt_tokens_total, usage.cached_tokens_total, usage.output_tokens_total
    )


def call_openai_usage(usage: CallUsage) -> dict[str, Any]:
    return openai_usage(usage.prompt_tokens, usage.cached_prompt_tokens, usage.output_tokens)


def finish_reason(reason: FinishReason | None) -> str:
    return "length" if reason is FinishReason.LENGTH else "stop"


def answer_finish(result: TaskResult, answer_id: str | None) -> str:
    answer = next((c for c in result.calls if c.call_id == answer_id), None)
    return finish_reason(answer.finish_reason if answer is not None else None)


def chat_completion(result: TaskResult, finish: str, created: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{result.task_id}",
        "object": "chat.completion",
        "created": created,
        "model": result.agent,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.answer, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": task_openai_usage(result.usage),
        "inflection": {"task_id": result.task_id, "usage": result.usage},
    }


def chat_chunk(
    task_id: str, agent: str, created: int, delta: dict[str, Any], finish: str | None
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{task_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": agent,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def completion_object(
    completion_id: str, model: str, created: int, text: str, finish: str | None
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
    }


def models_list(agents: list[str], model: str) -> dict[str, Any]:
    def entry(name: str, kind: str) -> dict[str, Any]:
        return {
            "id": name,
            "object": "model",
            "created": 0,
            "owned_by": OWNER,
            "inflection": {"kind": kind},
        }

    return {
        "object": "list",
        "data": [entry(a, "agent") for a in sorted(agents)] + [entry(model, "model")],
    }


def sse(data: object) -> bytes:
    """One server-sent event carrying a JSON object (or the literal [DONE])."""
    payload = data.encode() if isinstance(data, str) else orjson.dumps(data)
    return b"data: " + payload + b"\n\n"


# ---- the server ----


@dataclass(slots=True)
class FrontDoor:
    """The HTTP application: routes, auth, error shape."""

    executor: Executor
    model: str  # the served model's name (the id of /v1/completions)
    limits: LimitsConfig
    vocab_size: int
    auth_token: str | None = None
    max_body_bytes: int = 1024**2
    # Failed authentications per client address; the gRPC server's, so that both
    # listeners of one server lock a guesser out together.
    auth_failures: AuthFailures = field(default_factory=AuthFailures)
    clock: Callable[[], float] = time.time

    def steps_of(self, agent: str) -> tuple[str, ...] | None:
        program = self.executor.programs.get(agent)
        if program is None:
            return None
        return tuple(n.name for _, n in walk(program.body) if isinstance(n, Llm))

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[self._guard])
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        return app

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        try:
            # Before the handler, so a refused request's body is never read.
            self._authenticate(request)
            response: web.StreamResponse = await handler(request)
            return response
        except HttpError as exc:
            return exc.response()
        except web.HTTPException as exc:  # no such route, wrong method, body too large
            kind = "invalid_request_error" if exc.status < 500 else "server_error"
            message = {
                404: f"no route {request.method} {shorten(request.path)}",
                405: f"{request.method} is not allowed on {shorten(request.path)}",
                413: f"request body over the limit of {self.max_body_bytes} bytes",
            }.get(exc.status, exc.reason)
            return HttpError(exc.status, message, kind).response()
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:  # the last line of defence: never a traceback
            log.exception("internal error while serving %s %s", request.method, request.path)
            return HttpError(
                500,
                f"internal error ({type(exc).__name__}); see the server log",
                "server_error",
                code="internal_error",
            ).response()

    def _authenticate(self, request: web.Request) -> None:
        if self.auth_token is None:
            return
        peer = request.remote or "unknown"
        # A peer locked out is refused before its token is looked at (auth.py says why).
        retry_after_s = self.auth_failures.locked_out(peer)
        if retry_after_s is not None:
            raise HttpError(
                429,
                lockout_message(peer, retry_after_s),
                "rate_limit_error",
                code="resource_exhausted",
                headers={
                    "Retry-After": str(max(1, math.ceil(retry_after_s))),
                    "retry-after-ms": str(round(retry_after_s * 1000)),
                },
            )
        given = request.headers.get("Authorization", "")
        # aiohttp decodes header bytes with surrogateescape: encode them back the same way.
        given_bytes = given.encode("utf-8", "surrogateescape")
        if hmac.compare_digest(given_bytes, f"Bearer {self.auth_token}".encode()):
            return
        where = f"{request.method} {shorten(request.path)}"
        if not given:
            message = "missing Authorization header; send 'Authorization: Bearer <token>'"
            self.auth_failures.record(peer, where, "no token")
        else:
            message = "invalid bearer token"
            self.auth_failures.record(peer, where, message)
        raise HttpError(401, message, code="invalid_api_key")

    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise bad_request(f"request body is not valid JSON ({exc})") from None
        if not isinstance(body, dict):
            raise bad_request("request body must be a JSON object")
        return cast(dict[str, Any], body)

    async def _models(self, request: web.Request) -> web.Response:
        return _json(models_list(list(self.executor.programs), self.model))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        spec = chat_task_spec(body, self.limits, self.steps_of)
        stream, include_usage = stream_options(body)
        created = int(self.clock())
        try:
            task = self.executor.prepare(spec)
        except TaskFailed as exc:
            raise error_from(exc) from None
        if not stream:
            result: TaskResult | None = None
            events = self.executor.run(task, stream_answer=False)
            try:
                async for event in events:
                    if isinstance(event, TaskCompleted):
                        result = event.result
            except TaskFailed as exc:
                raise error_from(exc) from None
            finally:
                await events.aclose()
            if result is None:
                raise error_from(TaskFailed(ErrorCode.INTERNAL, "task ended without a result"))
            return _json(chat_completion(result, answer_finish(result, task.answer_id), created))

        events = self.executor.run(task)
        try:
            # Admission first: a refused task still gets its status (429), not a stream.
            try:
                await anext(events)
            except TaskFailed as exc:
                raise error_from(exc) from None
            response = await _start_stream(request)

            def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
                out = chat_chunk(task.task_id, spec.agent, created, delta, finish)
                if include_usage:
                    out["usage"] = None
                return out

            await response.write(sse(chunk({"role": "assistant", "content": ""})))
            try:
                async for event in events:
                    if isinstance(event, AnswerDelta) and event.text:
                        await response.write(sse(chunk({"content": event.text})))
                    elif isinstance(event, TaskCompleted):
                        result = event.result
                        last = chunk({}, answer_finish(result, task.answer_id))
                        last["inflection"] = {"task_id": result.task_id, "usage": result.usage}
                        await response.write(sse(last))
                        if include_usage:
                            tail = chat_chunk(task.task_id, spec.agent, created, {}, None)
                            tail["choices"] = []
                            tail["usage"] = task_openai_usage(result.usage)
                            await response.write(sse(tail))
            except TaskFailed as exc:
                # Headers are gone: the error goes as an event, as OpenAI sends it.
                await response.write(sse(error_from(exc).body()))
            await response.write(sse("[DONE]"))
            await response.write_eof()
            return response
        finally:
            # A client gone mid-stream cancels this handler: aclose aborts the task's calls.
            await events.aclose()

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        spec = completion_generate_spec(
            body, self.model, self.limits, self.vocab_size, self.executor.max_model_len
        )
        stream, include_usage = stream_options(body)
        token_ids = return_token_ids(body)
        created = int(self.clock())
        completion_id = f"cmpl-{uuid.uuid4().hex[:24]}"
        outputs = self.executor.generate(spec)
        try:
            if not stream:
                texts: list[str] = []
                ids: list[int] = []
                record: CallRecord | None = None
                try:
                    async for output in outputs:
                        texts.append(output.text)
                        ids.extend(output.token_ids)
                        record = output.call or record
                except TaskFailed as exc:
                    raise error_from(exc) from None
                if record is None:
                    raise error_from(TaskFailed(ErrorCode.INTERNAL, "generation ended early"))
                whole = completion_object(
                    completion_id, self.model, created, "".join(texts),
                    finish_reason(record.finish_reason),
                )  # fmt: skip
                if token_ids:
                    whole["choices"][0]["token_ids"] = ids
                whole["usage"] = call_openai_usage(record.usage)
                whole["inflection"] = {"call": record}
                return _json(whole)
            first = await _first(outputs)
            response = await _start_stream(request)
            try:
                async for output in _chain(first, outputs):
                    if output.text or (token_ids and output.token_ids):
                        piece = completion_object(
                            completion_id, self.model, created, output.text, None
                        )
                        if token_ids:
                            piece["choices"][0]["token_ids"] = list(output.token_ids)
                        await response.write(sse(piece))
                    if output.call is not None:
                        last = completion_object(
                            completion_id, self.model, created, "",
                            finish_reason(output.call.finish_reason),
                        )  # fmt: skip
                        if token_ids:
                            last["choices"][0]["token_ids"] = []
                        last["inflection"] = {"call": output.call}
                        await response.write(sse(last))
                        if include_usage:
                            tail = completion_object(completion_id, self.model, created, "", None)
                            tail["choices"] = []
                            tail["usage"] = call_openai_usage(output.call.usage)
                            await response.write(sse(tail))
            except TaskFailed as exc:
                await response.write(sse(error_from(exc).body()))
            await response.write(sse("[DONE]"))
            await response.write_eof()
            return response
        finally:
            await outputs.aclose()


async def _first(outputs: AsyncIterator[Any]) -> Any:
    try:
        return await anext(outputs)
    except TaskFailed as exc:
        raise error_from(exc) from None
    except StopAsyncIteration:
        raise error_from(TaskFailed(ErrorCode.INTERNAL, "generation ended early")) from None


async def _chain(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    yield first
    async for item in rest:
        yield item


def _json(data: object) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


async def _start_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    return response


async def serve_http(
    door: FrontDoor, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    """Start the front door on host:port (0: ephemeral), https with `ssl_context`; returns
    its runner (to stop it with `runner.cleanup()`) and the bound port. Raises OSError
    (EADDRINUSE) for a port in use, having released everything."""
    # handler_cancellation: a client that goes away cancels its handler, which aborts
    # the task's calls (aiohttp's default leaves the task running to the end).
    runner = web.AppRunner(
        door.app(), handler_cancellation=True, access_log=None, shutdown_timeout=2.0
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=False, ssl_context=ssl_context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)
