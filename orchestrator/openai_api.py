"""What both clients of OpenAI-compatible servers send and read besides the stream: the
server's base URL, the streaming `/v1/completions` request body and the text of an error
response.

Pure, no I/O: the orchestrator's `backend: openai` (orchestrator.replicas.openai_engine)
and the load generator's OpenAI target (loadtests.openai_http) build their requests and
read servers' errors with it; the streams themselves are folded by
orchestrator.openai_stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlsplit

import orjson

from orchestrator.domain import Sampling


@dataclass(slots=True, frozen=True)
class ServerURL:
    """A server's base URL, http(s)://HOST[:PORT][/PREFIX]: the orchestrator's configured
    endpoints and the load generator's `--host`."""

    host: str
    port: int  # the scheme's (80, 443) when the URL names none
    tls: bool
    prefix: str  # path before /v1, usually ""

    @classmethod
    def parse(cls, url: str) -> Self:
        """Raises ValueError (the message says what is wrong, not which URL). A trailing
        / or /v1 is dropped: the API paths are added to the prefix."""
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected http://HOST:PORT or https://HOST:PORT")
        tls = parts.scheme == "https"
        try:
            port = parts.port or (443 if tls else 80)
        except ValueError as exc:
            raise ValueError(f"bad port: {exc}") from None
        prefix = parts.path.rstrip("/").removesuffix("/v1")
        return cls(parts.hostname, port, tls, prefix)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}{self.prefix}"

    @property
    def name(self) -> str:
        """host:port, plus the prefix when there is one (an orchestrator replica's name)."""
        return f"{self.host}:{self.port}{self.prefix}"

    def path(self, api_path: str) -> str:
        return f"{self.prefix}{api_path}"


def sampling_fields(sampling: Sampling, priority: int | None = None) -> dict[str, Any]:
    """The fields of a streaming request that are not its prompt: sampling, streaming
    with a final usage chunk, and vLLM's extensions when asked for."""
    body: dict[str, Any] = {
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if sampling.ignore_eos:
        body["ignore_eos"] = True  # vLLM / SGLang: exactly max_tokens (synthetic mode)
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    if priority is not None:
        body["priority"] = priority  # vLLM's priority scheduler: lower is served first
    return body


def completions_body(
    model: str, prompt_ids: Sequence[int], sampling: Sampling, priority: int | None = None
) -> dict[str, Any]:
    """A streaming /v1/completions request with a token-id prompt; vLLM returns each
    delta's token ids (`return_token_ids`), so an agent's context grows by exact ids.
    `priority` None: the field is left out (vLLM refuses a nonzero one unless it runs
    its priority scheduler)."""
    return {
        "model": model,
        "prompt": list(prompt_ids),
        "return_token_ids": True,
        **sampling_fields(sampling, priority),
    }


def error_message(body: bytes | str, limit: int) -> str:
    """The server's error text from an error response, at most `limit` characters:
    OpenAI's {"error": {"message": ...}} or {"error": "..."}, vLLM's {"message": ...};
    else the body's first line; "" for an empty body."""
    text = (body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body).strip()
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return (text.splitlines() or [""])[0][:limit]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict) and error.get("message") is not None:
            return str(error["message"])[:limit]
        if isinstance(error, str):
            return error[:limit]
        if isinstance(data.get("message"), str):
            return str(data["message"])[:limit]
    return text[:limit]
