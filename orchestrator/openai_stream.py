"""Folding the streamed answer of an OpenAI-compatible server (server-sent events of
completion or chat-completion chunks) into a `CallResult`.

Pure, no I/O: both clients of such servers read their streams with it, the
orchestrator's `backend: openai` (asyncio, aiohttp: orchestrator.replicas.openai_engine)
and the load generator's OpenAI target (gevent, geventhttpclient: loadtests.openai_http),
and tests feed it payloads and clocks directly.

A stream that is not what the API promises raises `StreamError`, whose `fault` says what
was wrong; each client maps faults to its own errors (`EngineError` codes, the load
generator's failure causes).
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from typing import Any

import orjson

from orchestrator.domain import CallDelta, CallResult, CallTimings, CallUsage, FinishReason

DONE = b"[DONE]"  # the payload that ends an OpenAI stream

_FINISH = {
    "length": FinishReason.LENGTH,
    "stop": FinishReason.STOP,
    "abort": FinishReason.ABORT,
}


class StreamFault(enum.Enum):
    NOT_JSON = "not_json"  # a data: payload that is not JSON
    NOT_A_CHUNK = "not_a_chunk"  # JSON, but not a chunk (not an object, no choices list)
    ERROR = "error"  # the server put an error in the stream (vLLM does, mid-stream)
    UNFINISHED = "unfinished"  # the stream ended before any choice's finish_reason
    NO_USAGE = "no_usage"  # no usage chunk, or one without token counts


class StreamError(Exception):
    """A stream the fold refused; the message is one line."""

    def __init__(self, fault: StreamFault, message: str, error: object = None) -> None:
        super().__init__(fault, message, error)
        self.fault = fault
        self.message = message
        # ERROR: the chunk's `error` value as the server sent it (vLLM: message and code).
        self.error = error

    def __str__(self) -> str:
        return self.message


def sse_data(line: bytes) -> bytes | None:
    """The payload of one SSE line (`data: ...`), None for blank lines, comments and other
    fields (event:, id:, retry:)."""
    line = line.strip()
    if not line.startswith(b"data:"):
        return None
    return line[5:].strip()


@dataclass(slots=True)
class StreamFold:
    """Folds one call's SSE payloads into its CallResult. Times are passed in (seconds on
    one clock), so tests feed payloads and clocks directly."""

    call_id: str
    sent_at: float  # when the request went out; TTFT and E2E count from here
    chat: bool = False  # chat-completion chunks: the text is in choices[].delta.content
    # True: the token counts are the usage chunk's (`stream_options.include_usage`), and a
    # stream without one fails (NO_USAGE). False: without usage the prompt counts 0, and
    # the output counts at least the token ids the stream carried.
    usage_required: bool = True
    token_ids: list[int] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    delta_times: list[float] = field(default_factory=list)  # when each delta arrived
    usage: dict[str, Any] | None = None  # the last usage chunk's
    finish: str | None = None  # a choice's finish_reason, once one had it
    done: bool = False  # data: [DONE] seen

    def feed(self, data: bytes | str, now: float) -> CallDelta | None:
        """One `data:` payload, arrived at `now`; the output it carries, if any. Raises
        StreamError (NOT_JSON, NOT_A_CHUNK, ERROR)."""
        if data == DONE or data == "[DONE]":
            self.done = True
            return None
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise StreamError(StreamFault.NOT_JSON, f"not JSON: {_head(data)}") from None
        if not isinstance(chunk, dict):
            raise StreamError(StreamFault.NOT_A_CHUNK, f"not a JSON object: {_head(data)}")
        error = chunk.get("error")
        if error is not None:  # vLLM reports an error mid-stream as a data chunk
            message = error.get("message", error) if isinstance(error, dict) else error
            raise StreamError(StreamFault.ERROR, f"error in stream: {str(message)[:200]}", error)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise StreamError(StreamFault.NOT_A_CHUNK, f"chunk without choices: {_head(data)}")
        delta: CallDelta | None = None
        for choice in choices:
            if not isinstance(choice, dict):
                raise StreamError(StreamFault.NOT_A_CHUNK, f"bad choice in chunk: {_head(data)}")
            piece = (choice.get("delta") or {}).get("content") if self.chat else choice.get("text")
            ids = choice.get("token_ids")
            new_ids = tuple(int(i) for i in ids) if isinstance(ids, list) else ()
            text = str(piece) if piece else ""
            if text or new_ids:
                self.delta_times.append(now)
                self.text.append(text)
                self.token_ids.extend(new_ids)
                delta = CallDelta(new_ids, text)
            if choice.get("finish_reason"):
                self.finish = str(choice["finish_reason"])
        return delta

    def result(self, ended_at: float | None = None) -> CallResult:
        """The call's result. `ended_at`, when the stream ended, is the E2E of a call that
        streamed no output (None: 0). Raises StreamError (UNFINISHED, NO_USAGE)."""
        if self.finish is None:
            raise StreamError(StreamFault.UNFINISHED, "the stream ended before its last chunk")
        prompt, cached, output = self._counts()
        times = self.delta_times
        if times:
            ttft = times[0] - self.sent_at
            e2e = times[-1] - self.sent_at
        else:
            ttft = 0.0
            e2e = ended_at - self.sent_at if ended_at is not None else 0.0
        tpot = (e2e - ttft) / (output - 1) if output > 1 and times else None
        itl = tuple(b - a for a, b in itertools.pairwise(times))
        return CallResult(
            call_id=self.call_id,
            token_ids=tuple(self.token_ids),
            text="".join(self.text),
            finish_reason=_FINISH.get(self.finish, FinishReason.STOP),
            usage=CallUsage(prompt, cached, output),
            # The server reports no queue time; a client sees it inside TTFT.
            timings=CallTimings(queue_time=0.0, ttft=ttft, tpot=tpot, itl=itl, e2e=e2e),
        )

    def _counts(self) -> tuple[int, int, int]:
        """Prompt, cached prompt and output tokens."""
        usage = self.usage
        counts = _usage_counts(usage) if usage is not None else None
        if counts is None:
            if not self.usage_required:
                return 0, 0, len(self.token_ids)
            if usage is None:
                raise StreamError(
                    StreamFault.NO_USAGE, "the stream carried no usage (stream_options)"
                )
            raise StreamError(StreamFault.NO_USAGE, f"usage without token counts: {usage}")
        prompt, cached, output = counts
        if not self.usage_required:
            output = max(output, len(self.token_ids))
        return prompt, cached, output

    @property
    def first_token_at(self) -> float | None:
        """When the first delta arrived (None: none did)."""
        return self.delta_times[0] if self.delta_times else None


def _usage_counts(usage: dict[str, Any]) -> tuple[int, int, int] | None:
    """Prompt, cached prompt and output tokens of a usage chunk; None without them."""
    try:
        details = usage.get("prompt_tokens_details") or {}
        return (
            int(usage["prompt_tokens"]),
            int(details.get("cached_tokens") or 0),
            int(usage["completion_tokens"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _head(data: bytes | str) -> str:
    """The start of a payload, for a message."""
    text = data if isinstance(data, str) else data.decode("utf-8", errors="replace")
    return repr(text[:80])
